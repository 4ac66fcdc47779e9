"""Result tables and figures from job folders:  python -m rnsf.report <folders…>.

`collect` reads every `metrics.json` under the given folders into one tidy frame (one row per
job); `paper_table` pivots it into the paper's layout (rows = method and steps, columns =
task × metric; `intervals=True` adds each mean's 95 % interval, `baseline=` the paired comparison
with one row); `compare` gives those comparisons as a tidy frame and `job_intervals` each job's
interval; `write_report` writes Markdown, CSV and LaTeX tables and a figure.
"""

from rnsf.report.collect import collect, method_label
from rnsf.report.figures import plot_metrics
from rnsf.report.files import write_report
from rnsf.report.stats import compare, job_intervals
from rnsf.report.tables import paper_table, with_reference

__all__ = [
    "collect",
    "compare",
    "job_intervals",
    "method_label",
    "paper_table",
    "plot_metrics",
    "with_reference",
    "write_report",
]
