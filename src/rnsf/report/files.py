"""A report's files: the tidy results, the tables of each dataset and their figures."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from rnsf.engine.outputs import atomic_write_text
from rnsf.metrics.intervals import BOOTSTRAP_SEED
from rnsf.report.figures import plot_metrics
from rnsf.report.stats import compare, job_intervals
from rnsf.report.tables import (
    default_metrics,
    paired_markdown,
    paper_table,
    to_latex,
    to_markdown,
    with_reference,
)


def write_report(
    frame: pd.DataFrame,
    out_dir: str | Path,
    reference: list[dict] | None = None,
    metrics: list[str] | None = None,
    figure: str | None = "auto",
    baseline: str | None = None,
    latex_intervals: bool = False,
    bootstrap_seed: int = BOOTSTRAP_SEED,
) -> str:
    """Write `results.csv` (tidy, one row per job, with each mean's interval `*_lo`, `*_hi`),
    and for each dataset `table_<dataset>.md`, `.csv` and `.tex` and `metrics_<dataset>.png`;
    with a `baseline`, `paired_<dataset>.md` and `.csv` (`rnsf.report.stats.compare`'s rows).
    Return the Markdown of all tables."""
    out = Path(out_dir)
    tidy = job_intervals(frame, bootstrap_seed)
    atomic_write_text(out / "results.csv", tidy.to_csv(index=False))
    sections = []
    for dataset, part in frame.groupby("dataset", sort=False, dropna=False):
        shown = metrics or default_metrics(part)
        full = with_reference(part, reference, dataset) if reference else part
        rows = compare(full, baseline, shown, bootstrap_seed) if baseline else None
        table = paper_table(
            full, shown, intervals=True, comparisons=rows, bootstrap_seed=bootstrap_seed
        )
        protocol = ", ".join(sorted(part["metric_protocol"].dropna().unique())) or "?"
        caption = f"{dataset}: {part['model'].iloc[0]} prior, {protocol} protocol"
        md = f"### {caption}\n\n{to_markdown(table)}\n"
        if baseline:
            paired = paired_markdown(table)
            md += f"\nPaired differences from {table.attrs['baseline']} (95 % interval, Holm p):"
            md += f"\n\n{paired}\n"
            atomic_write_text(out / f"paired_{dataset}.md", paired + "\n")
            atomic_write_text(out / f"paired_{dataset}.csv", rows.to_csv(index=False))
        sections.append(md)
        flat = table.copy()
        flat.columns = [f"{t}/{m}".strip("/") for t, m in table.columns]
        atomic_write_text(out / f"table_{dataset}.md", md)
        atomic_write_text(out / f"table_{dataset}.csv", flat.to_csv())
        atomic_write_text(out / f"table_{dataset}.tex", to_latex(table, caption, latex_intervals))
        if figure:
            plot_metrics(part, out / f"metrics_{dataset}.png", x=figure, metrics=shown)
    return "\n".join(sections)
