"""Figures of a sweep: a metric against the number of steps, or across λ schedules."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from rnsf.report.tables import HEADERS, METHOD_ORDER

FIGURE_AXES = ("auto", "steps", "schedule", "method")


def _order(cell: pd.Series) -> tuple:
    method = cell["method"]
    rank = METHOD_ORDER.index(method) if method in METHOD_ORDER else len(METHOD_ORDER)
    return rank, cell["label"], cell["steps"] if pd.notna(cell["steps"]) else 0


def choose_axis(frame: pd.DataFrame) -> str:
    """`steps` when some method ran with several step counts, else `schedule` when RNSF ran with
    several schedules, else one bar per method."""
    if frame.dropna(subset=["steps"]).groupby("label")["steps"].nunique().gt(1).any():
        return "steps"
    if frame.loc[frame["method"] == "rnsf", "label"].nunique() > 1:
        return "schedule"
    return "method"


def plot_metrics(
    frame: pd.DataFrame, out: str | Path, x: str = "auto", metrics: list[str] | None = None
) -> Path:
    """One panel per (task, metric). `x="steps"`: a line per method over its step counts;
    `x="schedule"`: one bar per RNSF schedule, with the other methods as horizontal lines;
    `x="method"`: one bar per method."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if x not in FIGURE_AXES:
        raise ValueError(f"unknown figure axis {x!r}; choose one of {', '.join(FIGURE_AXES)}")
    x = choose_axis(frame) if x == "auto" else x
    metrics = [m for m in (metrics or ["psnr", "fid", "lpips"]) if frame[m].notna().any()]
    metrics = metrics or ["consistency"]
    tasks = list(dict.fromkeys(frame["task"]))
    fig, axes = plt.subplots(
        len(tasks), len(metrics), squeeze=False, figsize=(4.2 * len(metrics), 3.2 * len(tasks))
    )
    for row, task in enumerate(tasks):
        part = frame[frame["task"] == task]
        for col, metric in enumerate(metrics):
            ax = axes[row][col]
            cells = part.groupby(["label", "method", "steps"], dropna=False)[metric].mean()
            cells = cells.dropna().reset_index()
            cells = cells.iloc[sorted(range(len(cells)), key=lambda i: _order(cells.iloc[i]))]
            if x == "steps":
                for label, line in cells.groupby("label", sort=False):
                    line = line.sort_values("steps")
                    ax.plot(line["steps"].astype(float), line[metric], marker="o", label=label)
                ax.set_xlabel("steps")
            else:
                bars = cells[cells["method"] == "rnsf"] if x == "schedule" else cells
                names = [
                    f"{lab} ({s})" if pd.notna(s) and cells["steps"].nunique() > 1 else lab
                    for lab, s in zip(bars["label"], bars["steps"], strict=True)
                ]
                ax.bar(range(len(bars)), bars[metric], color="tab:blue")
                ax.set_xticks(range(len(bars)), names, rotation=30, ha="right", fontsize=8)
                if x == "schedule":
                    others = cells[cells["method"] != "rnsf"]
                    for i, (label, value) in enumerate(
                        zip(others["label"], others[metric], strict=True)
                    ):
                        ax.axhline(value, ls="--", color=f"C{i + 1}", label=label)
                lo, hi = bars[metric].min(), bars[metric].max()
                if pd.notna(lo) and metric not in ("consistency",):
                    pad = 0.15 * max(hi - lo, 1e-6 + abs(hi) * 0.02)
                    ax.set_ylim(lo - 3 * pad, hi + pad)
            ax.set_title(f"{task}: {HEADERS.get(metric, metric)}")
            ax.grid(alpha=0.3)
            if metric == "consistency":
                ax.set_yscale("log")
            if ax.get_legend_handles_labels()[0]:
                ax.legend(fontsize=7)
    fig.tight_layout()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return out
