"""What a restoration job logs to W&B beyond Lightning's metrics: the config and the job's tags,
x̂₀ frames of the first images during sampling, and at the end the per-image table, the
comparison grid, the frames and, for RNSF, the λ schedule plot. Only rank 0 logs."""

from __future__ import annotations

import csv
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.loggers import Logger, WandbLogger
from lightning.pytorch.utilities import rank_zero_only

from rnsf.methods.base import StepInfo
from rnsf.schedules.lambdas import LambdaSchedule

FRAMES_PER_IMAGE = 10  #: frames per image when `frame_every` is None
TAG_KEYS = ("method", "task", "schedule", "model")
GRID_KINDS = ("measurement", "restored", "target")  #: grid.png's columns, when present


def to_uint8(image: torch.Tensor) -> np.ndarray:
    """(C, H, W) in [-1, 1] → (H, W, C) uint8 on the CPU."""
    image = image.detach().float().clamp(-1, 1).add(1).mul(127.5).round().to(torch.uint8)
    return image.permute(1, 2, 0).cpu().numpy()


class WandbJob(Callback):
    """Logs a restoration job to the trainer's W&B logger.

    `config` (the resolved job config) and `run_info` (the job's description, as metrics.json
    heads it; under `job`) become the run's config, and method, task, schedule (RNSF only) and
    model its tags. During sampling the module's `step_callback` keeps x̂₀ of the first `frames`
    images every `every` network evaluations, and the last (`every` None: about ten per image),
    as small uint8 CPU copies.
    At the end of test/predict it logs `per_image` (the job's per_image.csv as a table), `grid`,
    `frames/<image name>` (captioned with t) and `lambda_schedule`.
    """

    def __init__(
        self,
        frames: int = 4,
        every: int | None = None,
        config: dict[str, Any] | None = None,
        output_dir: str | Path = ".",
        run_info: dict[str, Any] | None = None,
    ) -> None:
        self.frames, self.every, self.config = frames, every, config or {}
        self.output_dir = Path(output_dir)
        self.run_info = run_info if run_info is not None else {}
        self.collected: dict[str, list[tuple[int, np.ndarray]]] = {}
        self._every, self._last = 1, 0

    @staticmethod
    def logger(trainer: L.Trainer) -> WandbLogger | None:
        return next((lg for lg in trainer.loggers if isinstance(lg, WandbLogger)), None)

    # -- start: config, tags and the sampler hook ---------------------------------------------
    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        logger = self.logger(trainer)
        if logger is None:
            return
        self._describe_run(logger, self.run_info)
        if trainer.is_global_zero and self.frames > 0:
            nfe = max(int(pl_module.method.nfe), 1)
            self._every = self.every or max(nfe // FRAMES_PER_IMAGE, 1)
            self._last = nfe - 1
            pl_module.step_callback = self.collect

    @rank_zero_only
    def _describe_run(self, logger: WandbLogger, run_info: dict[str, Any]) -> None:
        logger.log_hyperparams({**self.config, "job": run_info})
        run = logger.experiment
        tags = [str(run_info[k]) for k in TAG_KEYS if run_info.get(k) is not None]
        run.tags = tuple(dict.fromkeys([*(run.tags or ()), *tags]))

    def collect(self, info: StepInfo) -> None:
        """The sampler callback: keep x̂₀ of the first images at the chosen evaluations."""
        if info.index % self._every and info.index != self._last:
            return
        for b, name in enumerate(getattr(info, "names", None) or []):
            if name not in self.collected and len(self.collected) >= self.frames:
                continue
            self.collected.setdefault(name, []).append((int(info.t), to_uint8(info.x0[b])))

    # -- end: table, grid, frames and λ -------------------------------------------------------
    def on_test_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._log_results(trainer, pl_module)

    def on_predict_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._log_results(trainer, pl_module)

    def teardown(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if pl_module.step_callback == self.collect:
            pl_module.step_callback = None
        self.collected = {}

    def _log_results(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        logger = self.logger(trainer)
        if logger is not None:
            self._log_media(logger, pl_module)

    @rank_zero_only
    def _log_media(self, logger: WandbLogger, pl_module: L.LightningModule) -> None:
        out = self.output_dir
        table = out / "per_image.csv"
        if table.is_file():
            columns, data = read_table(table)
            logger.log_table("per_image", columns=columns, data=data)
        if (out / "grid.png").is_file():
            kinds = [k for k in GRID_KINDS if (out / "images" / k).is_dir()]
            logger.log_image("grid", [str(out / "grid.png")], caption=[" | ".join(kinds)])
        for name, frames in self.collected.items():
            captions = [f"t={t}" for t, _ in frames]
            logger.log_image(f"frames/{name}", [f for _, f in frames], caption=captions)
        schedule = getattr(pl_module.method, "schedule", None)
        if isinstance(schedule, LambdaSchedule):
            label = self.run_info.get("schedule") or schedule.name
            log_schedule_plot(logger, schedule, label)


def read_table(path: Path) -> tuple[list[str], list[list[Any]]]:
    """Columns and rows of a job's per_image.csv (all ranks' images); scores as numbers,
    `name` as text."""
    with open(path, newline="") as f:
        reader = csv.reader(f)
        columns = next(reader, [])
        rows = [
            [v if c == "name" else _number(v) for c, v in zip(columns, row, strict=True)]
            for row in reader
        ]
    return columns, rows


def _number(value: str) -> int | float | str | None:
    for kind in (int, float):
        try:
            return kind(value)
        except ValueError:
            pass
    return value or None


def log_schedule_plot(logger: WandbLogger, schedule: LambdaSchedule, label: str) -> None:
    """λ against t/T for the job's schedule, as the image `lambda_schedule`."""
    from rnsf.schedules.plot import plot_schedules

    with tempfile.TemporaryDirectory() as tmp:
        path = plot_schedules({label: schedule}, Path(tmp) / "lambda.png", reversed_too=False)
        caption = f"{label} (reverse: {str(schedule.reverse).lower()})"
        logger.log_image("lambda_schedule", [str(path)], caption=[caption])


def wandb_callbacks(
    loggers: Sequence[Logger],
    config: dict[str, Any],
    output_dir: str | Path = ".",
    run_info: dict[str, Any] | None = None,
) -> list[Callback]:
    """A `WandbJob` when the job logs to W&B, set from its logger's options; else nothing."""
    logger = next((lg for lg in loggers if isinstance(lg, WandbLogger)), None)
    if logger is None:
        return []
    return [
        WandbJob(
            frames=getattr(logger, "log_frames", 4),
            every=getattr(logger, "frame_every", None),
            config=config,
            output_dir=output_dir,
            run_info=run_info,
        )
    ]
