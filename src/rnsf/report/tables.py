"""The paper's table layout: rows = method and steps, columns = task × metric."""

from __future__ import annotations

import pandas as pd

from rnsf.report.collect import METRICS, method_label

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


def default_metrics(frame: pd.DataFrame) -> list[str]:
    """The paper's metrics that at least one job computed (consistency only if nothing else)."""
    present = [m for m in ("psnr", "ssim", "lpips", "fid", "kid") if frame[m].notna().any()]
    return present or ["consistency"]


def paper_table(frame: pd.DataFrame, metrics: list[str] | None = None) -> pd.DataFrame:
    """Mean over the jobs of each (label, steps, task) cell — several seeds average — with rows
    (label, steps) in the paper's method order and columns (task, metric). Column `("", "N")`
    holds the number of images per cell when it is the same for every cell of the row, and
    one column per task otherwise."""
    metrics = metrics or default_metrics(frame)
    keys = ["label", "steps", "task"]
    grouped = frame.assign(steps=frame["steps"].fillna(0)).groupby(keys, dropna=False)
    cells = grouped[metrics].mean()
    cells["N"] = grouped["n_images"].mean()
    table = cells.unstack("task")
    table.columns = table.columns.swaplevel(0, 1)
    tasks = list(dict.fromkeys(frame["task"]))
    columns = [(task, m) for task in tasks for m in metrics if (task, m) in table.columns]
    n = table.xs("N", axis=1, level=1)
    table = table[columns]
    if n.nunique(axis=1, dropna=True).le(1).all():
        table[("", "N")] = n.max(axis=1).astype("Int64")
    else:
        for task in tasks:
            table[(task, "N")] = n[task].astype("Int64")
    order = {lab: _row_key(lab, frame) for lab in table.index.get_level_values(0)}
    table = table.iloc[
        sorted(range(len(table)), key=lambda i: (order[table.index[i][0]], table.index[i][1]))
    ]
    table.index = table.index.set_levels(
        table.index.levels[1].astype("Int64").where(table.index.levels[1] > 0), level=1
    )
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


def _format(table: pd.DataFrame, bold: str) -> pd.DataFrame:
    """Numbers as text with each metric's decimals; the best reproduced value of each column
    in bold (`bold` is a format string such as "**{}**"); published rows are never bold."""
    text = pd.DataFrame(index=table.index, columns=table.columns, dtype=object)
    ours = ~table.index.get_level_values(0).str.endswith(PAPER_SUFFIX)
    for col in table.columns:
        metric = col[1]
        values = table[col]
        best = None
        if metric in METRICS and ours.sum() > 1 and values[ours].notna().any():
            best = values[ours].max() if METRICS[metric] == "max" else values[ours].min()
        for idx, value in values.items():
            if pd.isna(value):
                text.loc[idx, col] = "–"
                continue
            if metric == "N":
                text.loc[idx, col] = str(int(value))
                continue
            s = f"{value:.2e}" if metric == "consistency" else f"{value:.{DECIMALS[metric]}f}"
            mine = not idx[0].endswith(PAPER_SUFFIX)
            text.loc[idx, col] = (
                bold.format(s) if mine and best is not None and value == best else s
            )
    return text


def _flat_columns(table: pd.DataFrame) -> list[str]:
    return [f"{task} {HEADERS.get(m, m)}".strip() for task, m in table.columns]


def _row_frame(text: pd.DataFrame, table: pd.DataFrame, labels: list[str]) -> pd.DataFrame:
    """`text` with the (method, steps) index as two leading columns."""
    steps = ["" if pd.isna(s) else str(int(s)) for s in table.index.get_level_values(1)]
    return pd.concat(
        [pd.DataFrame({"method": labels, "steps": steps}, index=text.index), text], axis=1
    ).reset_index(drop=True)


def to_markdown(table: pd.DataFrame) -> str:
    text = _format(table, "**{}**")
    text.columns = _flat_columns(table)
    labels = list(table.index.get_level_values(0))
    return _row_frame(text, table, labels).to_markdown(index=False)


def to_latex(table: pd.DataFrame, caption: str) -> str:
    text = _format(table, r"\textbf{{{}}}")
    labels = [n.replace("A†y", r"$A^\dagger y$") for n in table.index.get_level_values(0)]
    text = _row_frame(text, table, labels)
    text.columns = pd.MultiIndex.from_tuples(
        [("method", ""), ("steps", "")]
        + [(task.replace("_", r"\_"), _latex_header(m)) for task, m in table.columns]
    )
    return text.to_latex(
        index=False,
        escape=False,
        caption=caption,
        multicolumn_format="c",
        column_format="ll" + "c" * len(table.columns),
    )


def _latex_header(metric: str) -> str:
    header = HEADERS.get(metric, metric)
    for sym, tex in (("↑", r"$\uparrow$"), ("↓", r"$\downarrow$"), ("‖Ax̂−y‖", r"$\|A\hat x-y\|$")):
        header = header.replace(sym, tex)
    return header
