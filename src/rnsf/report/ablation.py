"""The ablation view of a λ-schedule search (`experiment=lambda_search`).

A search folder holds the Optuna trials (jobs on the validation split, each with its
`metrics.json` and resolved `config.yaml`), the sweeper's `optimization_results.yaml` and, under
`test/<row>/`, the test-split jobs of the tuned schedule and its baselines
(`rnsf.ablation.evaluate`). `write_ablation` turns it into

- `ablation_trials.csv`: one row per trial, its schedule parameters, objective and metrics;
- `ablation_objective.png`: the objective against the trial number, with the best so far;
- `ablation_lambda.png`: λ of the best schedule beside the paper's `exp` (and DDNM's λ ≡ 1);
- `ablation_test.md` / `.csv`: the tuned schedule against exp, DDNM and A†y on the test split.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
from omegaconf import OmegaConf

from rnsf.ablation.evaluate import RESULTS_FILE, TEST_DIR
from rnsf.ablation.objective import Objective
from rnsf.engine.resume import CONFIG_FILE

#: rows of the test-split table, in order, and their labels
TEST_ROWS = {"tuned": "RNSF (tuned)", "exp": "RNSF (exp)", "ddnm": "DDNM", "pinv": "A†y"}
TEST_COLUMNS = ["psnr", "ssim", "lpips", "consistency"]


def is_search(folder: str | Path) -> bool:
    """A folder of an Optuna sweep (the sweeper wrote its results there)."""
    return (Path(folder) / RESULTS_FILE).is_file()


def _job(folder: Path) -> tuple[dict, Objective | None]:
    metrics = json.loads((folder / "metrics.json").read_text())
    config = OmegaConf.load(folder / CONFIG_FILE) if (folder / CONFIG_FILE).is_file() else {}
    spec = config.get("objective") if config else None
    objective = None
    if spec:
        objective = Objective(dict(spec["weights"]), str(spec.get("direction", "maximize")))
    return metrics, objective


def _trial_number(folder: Path) -> int | None:
    hydra = folder / ".hydra" / "hydra.yaml"
    if hydra.is_file():
        return int(OmegaConf.load(hydra).hydra.job.num)
    found = re.search(r"(\d+)", folder.name)
    return int(found.group(1)) if found else None


def trials(folder: str | Path) -> pd.DataFrame:
    """One row per finished trial of the search in `folder`, by trial number."""
    folder = Path(folder)
    rows = []
    for path in sorted(folder.glob("*/metrics.json")):
        job = path.parent
        if job.name == TEST_DIR:
            continue
        metrics, objective = _job(job)
        params = {
            f"schedule.{k}": v
            for k, v in (metrics.get("schedule_params") or {}).items()
            if k != "_target_"
        }
        value = objective(metrics) if objective else None
        rows.append(
            {
                "trial": _trial_number(job),
                "objective": value,
                **{m: metrics.get(m) for m in TEST_COLUMNS},
                "schedule": metrics.get("schedule"),
                **params,
                "split": metrics.get("split"),
                "n_images": metrics.get("n_images"),
                "folder": str(job),
                "_schedule_params": metrics.get("schedule_params"),
                "_direction": objective.direction if objective else "maximize",
            }
        )
    frame = pd.DataFrame(rows)
    return frame.sort_values("trial").reset_index(drop=True) if not frame.empty else frame


def best_trial(frame: pd.DataFrame) -> pd.Series:
    """The trial with the best objective (the first one on ties), as Optuna picks it."""
    values = frame["objective"].astype(float)
    maximize = frame["_direction"].iloc[0] == "maximize"
    return frame.loc[values.idxmax() if maximize else values.idxmin()]


def test_table(folder: str | Path) -> pd.DataFrame:
    """The test-split jobs (tuned, exp, DDNM, A†y) side by side."""
    rows = []
    for name, label in TEST_ROWS.items():
        job = Path(folder) / TEST_DIR / name
        if not (job / "metrics.json").is_file():
            continue
        metrics, objective = _job(job)
        split = metrics.get("split_range")
        rows.append(
            {
                "row": label,
                "objective": objective(metrics) if objective else None,
                **{m: metrics.get(m) for m in TEST_COLUMNS},
                "split": metrics.get("split"),
                "images": f"{split[0]}–{split[1] - 1}" if split else None,
                "n_images": metrics.get("n_images"),
                "steps": metrics.get("steps"),
                "task": metrics.get("task"),
            }
        )
    return pd.DataFrame(rows)


def schedule_curve(params: dict | None, s: np.ndarray) -> np.ndarray:
    """λ(s) of a schedule recorded in metrics.json (`schedule_params`, with its `_target_`)."""
    from hydra.utils import instantiate

    schedule = instantiate(params)
    return np.array([schedule(float(v)) for v in s])


def plot_objective(frame: pd.DataFrame, out: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    values = frame["objective"].astype(float)
    maximize = frame["_direction"].iloc[0] == "maximize"
    best = values.cummax() if maximize else values.cummin()
    fig, ax = plt.subplots(figsize=(6, 3.6))
    ax.plot(frame["trial"], values, "o", label="trial")
    ax.step(frame["trial"], best, where="post", label="best so far")
    ax.set(xlabel="trial", ylabel="objective (validation split)")
    return _save(fig, ax, out)


def plot_lambda(best: dict | None, out: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    s = np.linspace(0.0, 1.0, 401)
    fig, ax = plt.subplots(figsize=(6, 3.6))
    ax.plot(s, schedule_curve(best, s), label="tuned (best trial)", lw=2)
    ax.plot(s, schedule_curve({"_target_": "rnsf.schedules.ExpSchedule"}, s), label="exp")
    ax.plot(s, np.ones_like(s), "--", color="grey", label="DDNM (λ ≡ 1)")
    ax.set(xlabel="s = t / T  (sampling runs from 1 to 0)", ylabel="λ", ylim=(-0.05, 1.05))
    ax.invert_xaxis()
    return _save(fig, ax, out)


def _save(fig, ax, out: Path) -> Path:
    """Grid, legend, and the figure written to `out` (and closed)."""
    import matplotlib.pyplot as plt

    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return out


def _markdown(frame: pd.DataFrame) -> str:
    shown = frame.copy()
    for column in ("objective", "psnr"):
        if column in shown:
            shown[column] = shown[column].map(lambda v: None if pd.isna(v) else f"{v:.2f}")
    for column in ("ssim", "lpips"):
        if column in shown:
            shown[column] = shown[column].map(lambda v: None if pd.isna(v) else f"{v:.4f}")
    if "steps" in shown:
        shown["steps"] = shown["steps"].map(lambda v: "–" if pd.isna(v) else f"{int(v)}")
    if "consistency" in shown:
        shown["consistency"] = shown["consistency"].map(
            lambda v: None if pd.isna(v) else f"{v:.2e}"
        )
    shown = shown.dropna(axis=1, how="all")
    return shown.to_markdown(index=False, disable_numparse=True)


def write_ablation(folder: str | Path, out: str | Path) -> str:
    """Write the ablation view of the search in `folder` into `out`; return its Markdown."""
    folder, out = Path(folder), Path(out)
    out.mkdir(parents=True, exist_ok=True)
    frame = trials(folder)
    if frame.empty:
        return f"### λ search {folder}\n\nno finished trial\n"
    public = frame[[c for c in frame.columns if not c.startswith("_")]]
    public.to_csv(out / "ablation_trials.csv", index=False)
    scored = frame.dropna(subset=["objective"])
    lines = [f"### λ search {folder.name}: {len(frame)} trials"]
    if not scored.empty:
        best = best_trial(scored)
        plot_objective(scored, out / "ablation_objective.png")
        plot_lambda(best["_schedule_params"], out / "ablation_lambda.png")
        params = ", ".join(
            f"{k.removeprefix('schedule.')} {v:.3g}"
            if isinstance(v, float)
            else f"{k.removeprefix('schedule.')} {v}"
            for k, v in best.items()
            if k.startswith("schedule.") and pd.notna(v)
        )
        lines.append(
            f"best: trial {best['trial']}, objective {best['objective']:.4f} on the "
            f"{best['split'] or 'whole'} split ({best['schedule']}: {params})"
        )
    table = test_table(folder)
    if not table.empty:
        table.to_csv(out / "ablation_test.csv", index=False)
        text = _markdown(table)
        (out / "ablation_test.md").write_text(text + "\n")
        lines += ["", "test split:", "", text]
    return "\n".join(lines) + "\n"
