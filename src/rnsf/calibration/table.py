"""The calibration table (Markdown, CSV) and its figure."""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd

from rnsf.calibration.run import Cell
from rnsf.report.collect import method_label

COLUMNS = {
    "mean_error_range": "mean err. range",
    "mean_error_null": "mean err. null",
    "var_ratio_range": "var. ratio range",
    "var_ratio_null": "var. ratio null",
    "coverage_range": "90 % cov. range",
    "coverage_null": "90 % cov. null",
}


def frame(cells: list[Cell]) -> pd.DataFrame:
    """One row per cell, the statistics as numbers (NaN where undefined or not run)."""
    rows = []
    for cell in cells:
        row = {
            "method": cell.method,
            "task": cell.task,
            "sigma": cell.sigma,
            "steps": cell.steps,
            "nfe": cell.nfe,
            "seconds": cell.seconds,
            "note": f"refused: {cell.refused}" if cell.refused else cell.failed or "",
        }
        row.update({key: cell.stats.get(key, math.nan) for key in COLUMNS})
        rows.append(row)
    return pd.DataFrame(rows)


def _number(key: str, value: float) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    if key.startswith("coverage"):
        return f"{100 * value:.1f} %"
    if key.startswith("var_ratio"):
        return f"{value:.3f}"
    return f"{value:.2e}" if 0 < abs(value) < 1e-3 else f"{value:.4f}"


def markdown(cells: list[Cell], header: str) -> str:
    """`header` (the command and settings), then the table; refused or failed pairs keep their
    row, with the reason in place of the statistics."""
    head = ["method", "task", "σ_y", "steps", "NFE", *COLUMNS.values()]
    lines = [header, "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for cell in cells:
        left = [
            method_label(cell.method),
            cell.task,
            f"{cell.sigma:g}",
            "—" if cell.steps is None else str(cell.steps),
            "—" if cell.nfe is None else str(cell.nfe),
        ]
        if cell.refused or cell.failed:
            note = f"refused: {cell.refused}" if cell.refused else f"failed: {cell.failed}"
            right = [note.replace("|", "/"), *[""] * (len(COLUMNS) - 1)]
        else:
            right = [_number(key, cell.stats[key]) for key in COLUMNS]
        lines.append("| " + " | ".join(left + right) + " |")
    return "\n".join(lines) + "\n"


def figure(cells: list[Cell], path: Path) -> None:
    """Variance ratio (log scale, 1 = exact) and 90 % coverage (0.9 = exact), range and null
    space, one column of panels per (task, σ_y), one pair of bars per method."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    data = frame(cells)
    data = data[data["note"] == ""]
    cases = list(dict.fromkeys(zip(data["task"], data["sigma"], strict=True)))
    methods = list(dict.fromkeys(data["method"]))
    if not cases:
        return
    fig, axes = plt.subplots(
        2, len(cases), figsize=(2.2 + 1.1 * len(methods) * len(cases) / 2, 5.5), squeeze=False
    )
    width = 0.4
    for col, (task, sigma) in enumerate(cases):
        part = data[(data["task"] == task) & (data["sigma"] == sigma)].set_index("method")
        for row, (stat, target) in enumerate((("var_ratio", 1.0), ("coverage", 0.9))):
            ax = axes[row, col]
            for k, (space, shift) in enumerate((("range", -width / 2), ("null", width / 2))):
                values = [part[f"{stat}_{space}"].get(m, math.nan) for m in methods]
                xs = [i + shift for i in range(len(methods))]
                ax.bar(xs, values, width, label=space, color=f"C{k}")
            ax.axhline(target, color="k", lw=0.8, ls="--")
            if stat == "var_ratio":
                ax.set_yscale("symlog", linthresh=1e-2)
            ax.set_xticks(range(len(methods)))
            ax.set_xticklabels([method_label(m) for m in methods], rotation=60, fontsize=7)
            if col == 0:
                ax.set_ylabel("sample var / exact var" if stat == "var_ratio" else "90 % coverage")
            if row == 0:
                ax.set_title(f"{task}, σ_y = {sigma:g}", fontsize=9)
    axes[0, 0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
