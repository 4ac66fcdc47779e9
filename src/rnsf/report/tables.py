"""The paper's table layout: rows = method and steps, columns = task × metric."""

from __future__ import annotations

import numpy as np
import pandas as pd

from rnsf.metrics.intervals import BOOTSTRAP_SEED
from rnsf.report.collect import METRICS, method_label
from rnsf.report.stats import ALPHA, cell_stats, compare

#: row order of the paper's tables
METHOD_ORDER = [
    "pinv",
    "dps",
    "ddrm",
    "ddnm",
    "ssd",
    "ssd_plus",
    # the later baselines, in the order of their papers (2023, 2023, 2024, 2025)
    "pigdm",
    "diffpir",
    "reddiff",
    "daps",
    "rnsf",
]
DECIMALS = {"psnr": 2, "ssim": 4, "lpips": 4, "fid": 2, "kid": 4}
HEADERS = {
    "psnr": "PSNR↑",
    "ssim": "SSIM↑",
    "lpips": "LPIPS↓",
    "fid": "FID↓",
    "kid": "KID↓",
    "consistency": "‖Ax̂−y‖↓",
}
PAPER_SUFFIX = " (paper)"
#: the paired comparison's columns in a table (`<metric><suffix>`) and in `compare`'s rows
DIFF_COLUMNS = {"_diff": "diff", "_diff_lo": "lo", "_diff_hi": "hi", "_p": "p", "_p_holm": "p_holm"}


def default_metrics(frame: pd.DataFrame) -> list[str]:
    """The paper's metrics that at least one job computed (consistency only if nothing else)."""
    present = [m for m in ("psnr", "ssim", "lpips", "fid", "kid") if frame[m].notna().any()]
    return present or ["consistency"]


def paper_table(
    frame: pd.DataFrame,
    metrics: list[str] | None = None,
    intervals: bool = False,
    baseline: str | None = None,
    bootstrap_seed: int = BOOTSTRAP_SEED,
    comparisons: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """The paper's layout: rows (label, steps) in the paper's method order, columns (task,
    metric). A cell is the mean over seeds of the per-seed means of its jobs (`rnsf.report.stats`).
    Column `("", "N")` holds the number of images per cell when it is the same for every cell of
    the row, and one column per task otherwise; `("", "seeds")` the number of seeds when some
    cell ran several (each then has `<metric>_sd`, the between-seed standard deviation).

    `intervals`: `<metric>_lo` and `<metric>_hi`, the ends of each mean's 95 % bootstrap
    interval (seeded by `bootstrap_seed`). `baseline` (a row label or method): for every other
    row `<metric>_diff`, `_diff_lo`, `_diff_hi`, `_p` and `_p_holm`, the paired comparison with
    the baseline on the same images (`rnsf.report.stats.compare`); `table.attrs` names the
    baseline and the number of comparisons Holm's correction covered."""
    metrics = metrics or default_metrics(frame)
    cells = cell_stats(frame, metrics, intervals, bootstrap_seed)
    if baseline and comparisons is None:
        comparisons = compare(frame, baseline, metrics, bootstrap_seed)
    if comparisons is not None:
        for name, column in DIFF_COLUMNS.items():
            wide = comparisons.pivot_table(
                index=["label", "steps", "task"], columns="metric", values=column, dropna=False
            )
            for metric in wide.columns:
                cells[f"{metric}{name}"] = wide[metric]
    table = cells.unstack("task")
    table.columns = table.columns.swaplevel(0, 1)
    tasks = list(dict.fromkeys(frame["task"]))
    suffixes = ["", "_lo", "_hi", "_sd", *DIFF_COLUMNS]
    several = cells["seeds"].max() > 1
    columns = [
        (task, m + suffix)
        for task in tasks
        for m in metrics
        for suffix in suffixes
        if (task, m + suffix) in table.columns
        and (suffix != "_sd" or several)
        and (suffix not in DIFF_COLUMNS or table[(task, m + suffix)].notna().any())
    ]
    n = table.xs("N", axis=1, level=1)
    seeds = table.xs("seeds", axis=1, level=1)
    table = table[columns]
    if n.nunique(axis=1, dropna=True).le(1).all():
        table[("", "N")] = n.max(axis=1).astype("Int64")
    else:
        for task in tasks:
            table[(task, "N")] = n[task].astype("Int64")
    if several:
        table[("", "seeds")] = seeds.max(axis=1).astype("Int64")
    order = {lab: _row_key(lab, frame) for lab in table.index.get_level_values(0)}
    table = table.iloc[
        sorted(range(len(table)), key=lambda i: (order[table.index[i][0]], table.index[i][1]))
    ]
    table.index = table.index.set_levels(
        table.index.levels[1].astype("Int64").where(table.index.levels[1] > 0), level=1
    )
    table.attrs["intervals"] = intervals
    table.attrs["bootstrap_seed"] = bootstrap_seed
    if comparisons is not None:
        table.attrs["baseline"] = comparisons.attrs["baseline"]
        table.attrs["comparisons"] = int(comparisons["p"].notna().sum())
    return table


def _row_key(label: str, frame: pd.DataFrame) -> tuple:
    base = label.removesuffix(PAPER_SUFFIX)
    methods = frame.loc[frame["label"] == base, "method"]
    method = methods.iloc[0] if len(methods) else base.split(" ")[0].lower()
    rank = METHOD_ORDER.index(method) if method in METHOD_ORDER else len(METHOD_ORDER)
    return rank, label.endswith(PAPER_SUFFIX), label


def reference_frame(rows: list[dict], dataset: str | None) -> pd.DataFrame:
    """Published numbers as a tidy frame with the same columns as `collect`'s."""
    ref = pd.DataFrame(rows)
    if dataset is not None:
        ref = ref[ref["dataset"] == dataset]
    return ref.assign(
        label=[method_label(m) + PAPER_SUFFIX for m in ref["method"]],
        n_images=pd.NA,
        kid=ref["kid"] if "kid" in ref else float("nan"),
        consistency=float("nan"),
    )


def with_reference(frame: pd.DataFrame, rows: list[dict], dataset: str | None) -> pd.DataFrame:
    """`frame` plus the published rows of the same dataset, tasks and step counts, so that
    `paper_table` prints each published row under the reproduced one."""
    ref = reference_frame(rows, dataset)
    ref = ref[ref["task"].isin(frame["task"].unique())]
    for col in frame.columns:
        if col not in ref:
            ref[col] = None
    return pd.concat([frame, ref[frame.columns]], ignore_index=True)


def _number(metric: str, value: float, signed: bool = False) -> str:
    sign = "+" if signed else ""
    if metric == "consistency":
        return f"{value:{sign}.2e}"
    return f"{value:{sign}.{DECIMALS[metric]}f}"


def _format(
    table: pd.DataFrame, bold: str, intervals: bool = True, pm: str = "±", star: str = "*"
) -> pd.DataFrame:
    """Numbers as text with each metric's decimals; the best reproduced value of each column
    in bold (`bold` is a format string such as "**{}**"); published rows are never bold. With
    `intervals` a mean reads `25.86 ± 0.41` (half the width of its interval; KID: ± its subset
    std; FID `± n/a`), with `(sd 0.12)` between seeds; a difference from the baseline that is
    significant after Holm's correction gets `star`. N reads `16 × 3` for 16 images × 3 seeds."""
    shown = [c for c in table.columns if c[1] in METRICS or c[1] == "N"]
    text = pd.DataFrame(index=table.index, columns=pd.MultiIndex.from_tuples(shown), dtype=object)
    ours = ~table.index.get_level_values(0).str.endswith(PAPER_SUFFIX)
    seeds = table.get(("", "seeds"))
    for col in shown:
        task, metric = col
        values = table[col]
        best = None
        if metric in METRICS and ours.sum() > 1 and values[ours].notna().any():
            best = values[ours].max() if METRICS[metric] == "max" else values[ours].min()
        for idx, value in values.items():
            if pd.isna(value):
                text.loc[idx, col] = "–"
                continue
            if metric == "N":
                s = seeds[idx] if seeds is not None and pd.notna(seeds[idx]) else 1
                text.loc[idx, col] = f"{int(value)} × {int(s)}" if s > 1 else str(int(value))
                continue
            s = _number(metric, value)
            mine = not idx[0].endswith(PAPER_SUFFIX)
            s = bold.format(s) if mine and best is not None and value == best else s
            companion = {
                k: table[(task, metric + k)][idx] if (task, metric + k) in table else np.nan
                for k in ("_lo", "_hi", "_sd", "_p_holm")
            }
            if intervals and mine:
                lo, hi = companion["_lo"], companion["_hi"]
                if metric == "fid":
                    s += f" {pm} n/a"
                elif pd.notna(lo) and pd.notna(hi):
                    half = hi - value if metric == "kid" else (hi - lo) / 2
                    s += f" {pm} {_number(metric, half)}"
            if pd.notna(companion["_sd"]):
                s += f" (sd {_number(metric, companion['_sd'])})"
            if pd.notna(companion["_p_holm"]) and companion["_p_holm"] < ALPHA:
                s += star
            text.loc[idx, col] = s
    return text


def footnotes(table: pd.DataFrame, intervals: bool = True, star: str = "*") -> list[str]:
    """What the marks of a formatted table mean, one sentence each."""
    metrics = {m for _, m in table.columns}
    notes = []
    if intervals and any(m + "_lo" in metrics for m in METRICS):
        notes.append(
            "± half the width of the 95 % percentile-bootstrap interval of the mean over images "
            "(over seeds and images where several seeds ran; bootstrap seed "
            f"{table.attrs.get('bootstrap_seed', BOOTSTRAP_SEED)}); the CSV table and "
            "results.csv hold its ends (`*_lo`, `*_hi`)."
        )
        if "kid" in metrics:
            notes.append("KID ± torch-fidelity's standard deviation over its subsets.")
        if "fid" in metrics:
            notes.append("FID is one number for the whole image set: no interval (n/a).")
    if ("", "seeds") in table:
        notes.append("N images × seeds; sd: standard deviation of the per-seed means.")
    if table.attrs.get("baseline"):
        notes.append(
            f"{star}: differs from {table.attrs['baseline']} on the same images (paired "
            "sign-flip permutation test, p < 0.05 after Holm's correction over the table's "
            f"{table.attrs['comparisons']} paired comparisons)."
        )
    return notes


def paired_markdown(table: pd.DataFrame) -> str:
    """The paired comparisons of a `paper_table(..., baseline=...)`: per row and metric the
    difference from the baseline, its 95 % interval and Holm-adjusted p-value."""
    cols = [c for c in table.columns if c[1].endswith("_diff")]
    rows = table[table[cols].notna().any(axis=1)]
    text = pd.DataFrame(index=rows.index, columns=pd.MultiIndex.from_tuples(cols), dtype=object)
    for task, name in cols:
        metric = name.removesuffix("_diff")
        for idx in rows.index:
            diff = rows.loc[idx, (task, name)]
            if pd.isna(diff):
                text.loc[idx, (task, name)] = "–"
                continue
            lo, hi = rows.loc[idx, (task, f"{metric}_diff_lo")], rows.loc[idx, (task, f"{name}_hi")]
            p = rows.loc[idx, (task, f"{metric}_p_holm")]
            text.loc[idx, (task, name)] = (
                f"{_number(metric, diff, True)} [{_number(metric, lo, True)}, "
                f"{_number(metric, hi, True)}] p={p:.2g}{'*' if p < ALPHA else ''}"
            )
    text.columns = [f"{t} Δ{HEADERS.get(n.removesuffix('_diff'), n)}" for t, n in cols]
    labels = list(rows.index.get_level_values(0))
    return _row_frame(text, rows, labels).to_markdown(index=False)


def _flat_columns(columns: list[tuple]) -> list[str]:
    return [f"{task} {HEADERS.get(m, m)}".strip() for task, m in columns]


def _row_frame(text: pd.DataFrame, table: pd.DataFrame, labels: list[str]) -> pd.DataFrame:
    """`text` with the (method, steps) index as two leading columns."""
    steps = ["" if pd.isna(s) else str(int(s)) for s in table.index.get_level_values(1)]
    return pd.concat(
        [pd.DataFrame({"method": labels, "steps": steps}, index=text.index), text], axis=1
    ).reset_index(drop=True)


def to_markdown(table: pd.DataFrame, intervals: bool = True) -> str:
    """The table as Markdown, intervals and marks included, with its footnotes below."""
    text = _format(table, "**{}**", intervals)
    text.columns = _flat_columns(list(text.columns))
    labels = list(table.index.get_level_values(0))
    notes = "\n".join(footnotes(table, intervals))
    markdown = _row_frame(text, table, labels).to_markdown(index=False)
    return f"{markdown}\n\n{notes}" if notes else markdown


def to_latex(table: pd.DataFrame, caption: str, intervals: bool = False) -> str:
    r"""The table as LaTeX (booktabs); `intervals`: `25.86 $\pm$ 0.41`. The footnotes follow
    the caption."""
    text = _format(table, r"\textbf{{{}}}", intervals, pm=r"$\pm$", star=r"$^{*}$")
    columns = list(text.columns)
    labels = [n.replace("A†y", r"$A^\dagger y$") for n in table.index.get_level_values(0)]
    text = _row_frame(text, table, labels)
    text.columns = pd.MultiIndex.from_tuples(
        [("method", ""), ("steps", "")]
        + [(task.replace("_", r"\_"), _latex_header(m)) for task, m in columns]
    )
    notes = footnotes(table, intervals, star=r"$^{*}$")
    if notes:
        caption = " ".join([caption + ".", *notes])
        for sym, tex in LATEX_TEXT:
            caption = caption.replace(sym, tex)
    return text.to_latex(
        index=False,
        escape=False,
        caption=caption,
        multicolumn_format="c",
        column_format="ll" + "c" * len(columns),
    )


#: what the footnotes' text needs in a LaTeX caption
LATEX_TEXT = (("%", r"\%"), ("_", r"\_"), ("`", ""), ("±", r"$\pm$"), ("×", r"$\times$"))


def _latex_header(metric: str) -> str:
    header = HEADERS.get(metric, metric)
    for sym, tex in (("↑", r"$\uparrow$"), ("↓", r"$\downarrow$"), ("‖Ax̂−y‖", r"$\|A\hat x-y\|$")):
        header = header.replace(sym, tex)
    return header
