"""A report's files: the tidy results, the tables of each dataset and their figures."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from rnsf.engine.outputs import atomic_write_text
from rnsf.report.figures import plot_metrics
from rnsf.report.tables import default_metrics, paper_table, to_latex, to_markdown, with_reference


def write_report(
    frame: pd.DataFrame,
    out_dir: str | Path,
    reference: list[dict] | None = None,
    metrics: list[str] | None = None,
    figure: str | None = "auto",
) -> str:
    """Write `results.csv` (tidy, one row per job), and for each dataset `table_<dataset>.md`,
    `.csv` and `.tex` and `metrics_<dataset>.png`; return the Markdown of all tables."""
    out = Path(out_dir)
    atomic_write_text(out / "results.csv", frame.to_csv(index=False))
    sections = []
    for dataset, part in frame.groupby("dataset", sort=False, dropna=False):
        shown = metrics or default_metrics(part)
        full = with_reference(part, reference, dataset) if reference else part
        table = paper_table(full, shown)
        protocol = ", ".join(sorted(part["metric_protocol"].dropna().unique())) or "?"
        caption = f"{dataset}: {part['model'].iloc[0]} prior, {protocol} protocol"
        md = f"### {caption}\n\n{to_markdown(table)}\n"
        sections.append(md)
        flat = table.copy()
        flat.columns = [f"{t}/{m}".strip("/") for t, m in table.columns]
        atomic_write_text(out / f"table_{dataset}.md", md)
        atomic_write_text(out / f"table_{dataset}.csv", flat.to_csv())
        atomic_write_text(out / f"table_{dataset}.tex", to_latex(table, caption))
        if figure:
            plot_metrics(part, out / f"metrics_{dataset}.png", x=figure, metrics=shown)
    return "\n".join(sections)
