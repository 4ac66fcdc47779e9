"""The number a job returns to a sweeper: one metric, or a weighted sum of metrics.

`objective: {weights: {psnr: 1.0}, direction: maximize}` (config group `objective`). Each
metric has the direction in which it gets better (PSNR and SSIM up, the others down); a weight
must push the objective that way, so a sweeper that maximizes never rewards a worse LPIPS.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

from rnsf.utils.errors import UserError

#: the direction in which each metric of metrics.json gets better
METRIC_DIRECTIONS = {
    "psnr": "maximize",
    "ssim": "maximize",
    "lpips": "minimize",
    "consistency": "minimize",
    "fid": "minimize",
    "kid": "minimize",
}
DIRECTIONS = ("maximize", "minimize")


@dataclass(frozen=True)
class Objective:
    weights: dict[str, float]
    direction: str = "maximize"

    def __post_init__(self) -> None:
        if self.direction not in DIRECTIONS:
            raise UserError(
                f"objective.direction={self.direction!r} is unknown; use maximize or minimize"
            )
        if not self.weights:
            raise UserError("objective.weights is empty; name a metric, e.g. {psnr: 1.0}")
        for metric, weight in self.weights.items():
            if metric not in METRIC_DIRECTIONS:
                raise UserError(
                    f"objective.weights names {metric!r}, which is not a metric; use "
                    f"{', '.join(METRIC_DIRECTIONS)}"
                )
            if not isinstance(weight, int | float) or not math.isfinite(weight) or weight == 0:
                raise UserError(f"objective.weights.{metric}={weight!r} must be a non-zero number")
            better = METRIC_DIRECTIONS[metric]
            if (weight > 0) != (better == self.direction):
                sign = "positive" if better == self.direction else "negative"
                raise UserError(
                    f"objective.weights.{metric}={weight} with direction {self.direction} "
                    f"rewards a worse {metric} (it is better {better[:3]}imized); give it a "
                    f"{sign} weight or flip objective.direction"
                )

    @classmethod
    def from_config(cls, cfg: Mapping) -> Objective | None:
        """The job's objective, or None when the config has none; checked against the job's
        metric settings before the job writes anything."""
        spec = cfg.get("objective")
        if not spec:
            return None
        objective = cls(
            weights={str(k): v for k, v in dict(spec.get("weights") or {}).items()},
            direction=str(spec.get("direction", "maximize")),
        )
        objective.check_computed(cfg)
        return objective

    def check_computed(self, cfg: Mapping) -> None:
        """Fail when a metric of the objective is one the job will not compute."""
        metrics = cfg.get("metrics") or {}
        for metric in self.weights:
            if cfg.get("mode") == "predict" and metric != "consistency":
                raise UserError(
                    f"the objective needs {metric}, which mode=predict cannot compute (no "
                    "ground truth); use objective=consistency or mode=test"
                )
            if metric in ("lpips", "fid", "kid"):
                settings = metrics.get(metric) or {}
                if not (settings.get("enabled", False) and settings.get("required", False)):
                    raise UserError(
                        f"the objective needs {metric}: set metrics.{metric}.enabled=true "
                        f"metrics.{metric}.required=true, so that a missing weight file stops "
                        "the job at start-up instead of leaving the objective without a value"
                    )

    def __call__(self, summary: Mapping) -> float:
        """Σ weight × metric over the job's metrics.json."""
        missing = [m for m in self.weights if summary.get(m) is None]
        if missing:
            notes = summary.get("metric_notes") or {}
            why = "; ".join(f"{m}: {notes[m]}" for m in missing if m in notes)
            raise UserError(
                f"the job computed no {', '.join(missing)}, which the objective needs"
                + (f" ({why})" if why else "")
                + "; pick an objective of metrics this job computes"
            )
        return float(sum(w * float(summary[m]) for m, w in self.weights.items()))

    def describe(self) -> str:
        terms = " + ".join(f"{w:g}·{m}" for m, w in self.weights.items())
        return f"{self.direction} {terms}"
