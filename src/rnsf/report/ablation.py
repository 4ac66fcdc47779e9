"""The ablation view of a λ-schedule search (`experiment=lambda_search`).

A search folder holds the Optuna trials (jobs on the validation split, each with its
`metrics.json` and resolved `config.yaml`), the sweeper's `optimization_results.yaml` and, under
`test/<row>/`, the test-split jobs of the tuned schedule and its baselines
(`rnsf.ablation.evaluate`). `write_ablation` turns it into

- `ablation_trials.csv`: one row per trial, its schedule parameters, objective and metrics;
- `ablation_objective.png`: the objective against the trial number, with the best so far;
- `ablation_lambda.png`: λ of the best schedule beside the paper's `exp` (and DDNM's λ ≡ 1);
- `ablation_test.md` / `.csv`: the tuned schedule against exp, DDNM and A†y on the test split,
  each mean with its 95 % bootstrap interval over the images, and the paired differences tuned −
  DDNM, exp − DDNM and tuned − exp on the same images (95 % paired-bootstrap interval, sign-flip
  p-value, Holm-adjusted over the view's comparisons).
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
from rnsf.metrics.intervals import BOOTSTRAP_SEED, holm
from rnsf.report.stats import ALPHA, image_scores, job_intervals, paired

#: rows of the test-split table, in order, and their labels
TEST_ROWS = {"tuned": "RNSF (tuned)", "exp": "RNSF (exp)", "ddnm": "DDNM", "pinv": "A†y"}
TEST_COLUMNS = ["psnr", "ssim", "lpips", "consistency"]
#: the paired differences of the test-split view (row − row)
TEST_PAIRS = [("tuned", "ddnm"), ("exp", "ddnm"), ("tuned", "exp")]


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


def test_table(folder: str | Path, bootstrap_seed: int = BOOTSTRAP_SEED) -> pd.DataFrame:
    """The test-split jobs (tuned, exp, DDNM, A†y) side by side, each metric with the ends of
    its 95 % bootstrap interval over the images (`<metric>_lo`, `_hi`)."""
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
                "dataset": metrics.get("dataset"),
                "seed": metrics.get("seed"),
                "output_dir": str(job),
            }
        )
    frame = pd.DataFrame(rows)
    if frame.empty:
        return frame
    bounds = job_intervals(frame.reindex(columns=[*frame.columns, "kid", "fid"]), bootstrap_seed)
    for m in TEST_COLUMNS:
        frame.insert(frame.columns.get_loc(m) + 1, f"{m}_lo", bounds[f"{m}_lo"])
        frame.insert(frame.columns.get_loc(m) + 2, f"{m}_hi", bounds[f"{m}_hi"])
    return frame.drop(columns=["dataset", "seed", "output_dir"])


def paired_test_table(folder: str | Path, bootstrap_seed: int = BOOTSTRAP_SEED) -> pd.DataFrame:
    """Tuned − DDNM, exp − DDNM and tuned − exp on the same test images: per metric the mean
    difference, its 95 % paired-bootstrap interval, the sign-flip p-value and its Holm
    adjustment over every comparison of the view; `n` pairs."""
    jobs = {}
    for name in TEST_ROWS:
        job = Path(folder) / TEST_DIR / name
        if (job / "metrics.json").is_file():
            metrics = json.loads((job / "metrics.json").read_text())
            row = {k: metrics.get(k) for k in ("dataset", "split", "seed")}
            jobs[name] = image_scores(pd.DataFrame([{**row, "output_dir": str(job)}]))
    rows = []
    for a, b in TEST_PAIRS:
        if a not in jobs or b not in jobs:
            continue
        found = paired(jobs[a], jobs[b], TEST_COLUMNS, bootstrap_seed)
        row = {"comparison": f"{TEST_ROWS[a]} − {TEST_ROWS[b]}", "n": 0}
        for metric, result in found.items():
            row["n"] = max(row["n"], result["n"])
            row.update({f"{metric}_{k}": v for k, v in result.items() if k != "n"})
        rows.append(row)
    frame = pd.DataFrame(rows)
    ps = [c for c in frame.columns if c.endswith("_p")]
    if ps:
        adjusted = holm(frame[ps].to_numpy(float).ravel()).reshape(len(frame), len(ps))
        for i, column in enumerate(ps):
            frame.insert(frame.columns.get_loc(column) + 1, f"{column}_holm", adjusted[:, i])
    return frame


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


DECIMALS = {"objective": ".2f", "psnr": ".2f", "ssim": ".4f", "lpips": ".4f", "consistency": ".2e"}


def _markdown(frame: pd.DataFrame) -> str:
    """The test-split table: `27.47 ± 0.50` (half the width of the 95 % interval)."""
    shown = frame[[c for c in frame.columns if not c.endswith(("_lo", "_hi"))]].copy()
    for column, fmt in DECIMALS.items():
        if column not in shown:
            continue
        text = shown[column].map(lambda v, f=fmt: None if pd.isna(v) else f"{v:{f}}")
        if f"{column}_lo" in frame:
            half = (frame[f"{column}_hi"] - frame[f"{column}_lo"]) / 2
            pm = half.map(lambda v, f=fmt: "" if pd.isna(v) else f" ± {v:{f}}")
            text = text.where(text.isna(), text + pm)
        shown[column] = text
    if "steps" in shown:
        shown["steps"] = shown["steps"].map(lambda v: "–" if pd.isna(v) else f"{int(v)}")
    shown = shown.dropna(axis=1, how="all")
    return shown.to_markdown(index=False, disable_numparse=True)


def _paired_markdown(frame: pd.DataFrame) -> str:
    """`+0.05 [−0.02, +0.12] p=0.31` per comparison and metric (p: Holm-adjusted)."""
    shown = frame[["comparison", "n"]].copy()
    for metric in TEST_COLUMNS:
        if f"{metric}_diff" not in frame or frame[f"{metric}_diff"].isna().all():
            continue
        f = DECIMALS[metric].replace(".", "+.")
        shown[f"Δ{metric}"] = [
            "–"
            if pd.isna(r[f"{metric}_diff"])
            else f"{r[f'{metric}_diff']:{f}} [{r[f'{metric}_lo']:{f}}, {r[f'{metric}_hi']:{f}}] "
            f"p={r[f'{metric}_p_holm']:.2g}{'*' if r[f'{metric}_p_holm'] < ALPHA else ''}"
            for _, r in frame.iterrows()
        ]
    return shown.to_markdown(index=False, disable_numparse=True)


def write_ablation(
    folder: str | Path, out: str | Path, bootstrap_seed: int = BOOTSTRAP_SEED
) -> str:
    """Write the ablation view of the search in `folder` into `out`; return its Markdown."""
    folder, out = Path(folder), Path(out)
    out.mkdir(parents=True, exist_ok=True)
    frame = trials(folder)
    lines = [f"### λ search {folder.name}: {len(frame) or 'no finished'} trials"]
    if not frame.empty:
        public = frame[[c for c in frame.columns if not c.startswith("_")]]
        public.to_csv(out / "ablation_trials.csv", index=False)
    scored = frame.dropna(subset=["objective"]) if not frame.empty else frame
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
    table = test_table(folder, bootstrap_seed)
    if not table.empty:
        table.to_csv(out / "ablation_test.csv", index=False)
        text = _markdown(table)
        lines += ["", "test split (± half the width of the 95 % bootstrap interval):", "", text]
        pairs = paired_test_table(folder, bootstrap_seed)
        if not pairs.empty:
            pairs.to_csv(out / "ablation_paired.csv", index=False)
            lines += [
                "",
                "paired differences on the same test images (95 % paired-bootstrap interval; "
                "sign-flip p, Holm-adjusted over the table; *: p < 0.05):",
                "",
                _paired_markdown(pairs),
            ]
        (out / "ablation_test.md").write_text("\n".join(lines[lines.index("") + 1 :]) + "\n")
    return "\n".join(lines) + "\n"
