"""Gather the `metrics.json` of finished jobs into one tidy table (one row per job)."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable
from pathlib import Path

import pandas as pd

log = logging.getLogger(__name__)

#: metrics a table can show, with the direction that is better
METRICS = {
    "psnr": "max",
    "ssim": "max",
    "lpips": "min",
    "fid": "min",
    "kid": "min",
    "consistency": "min",
}
#: the columns of the tidy table, in order (missing fields become NaN/None)
COLUMNS = [
    "label",
    "method",
    "schedule",
    "reverse",
    "task",
    "sigma",
    "dataset",
    "split",
    "model",
    "steps",
    "nfe",
    "n_images",
    *METRICS,
    "kid_std",
    "seconds_per_image",
    "metric_protocol",
    "seed",
    "git_sha",
    "output_dir",
]
DISPLAY_NAMES = {
    "pinv": "A†y",
    "ddnm": "DDNM",
    "rnsf": "RNSF",
    "ddrm": "DDRM",
    "dps": "DPS",
    "ssd": "SSD",
    "ssd_plus": "SSD+",
    "pigdm": "ΠGDM",
    "diffpir": "DiffPIR",
    "reddiff": "RED-diff",
    "daps": "DAPS-1K",
}


#: column order of the paper's tables; other tasks follow alphabetically
TASK_ORDER = ["sr4", "sr8", "deblur_gauss", "colorization"]


def task_rank(task: str) -> int:
    """Position of a task's columns: the paper's order, variants (`deblur_gauss_ssd`) with their
    base task, anything else after them."""
    for i, name in enumerate(TASK_ORDER):
        if task == name or task.startswith(name + "_"):
            return i
    return len(TASK_ORDER)


def method_label(method: str, schedule: str | None = None, reverse: bool = False) -> str:
    """The row name of a method: `RNSF (exp)`, `RNSF (exp, reversed)`, `DDNM`, `A†y`, …"""
    name = DISPLAY_NAMES.get(method, method)
    if method == "rnsf" and schedule:
        return f"{name} ({schedule}{', reversed' if reverse else ''})"
    return name


def find_metrics(paths: Iterable[str | Path]) -> tuple[list[Path], list[Path]]:
    """`metrics.json` files under `paths` (files or folders, searched recursively), and the job
    folders (those holding a `config.yaml`) that have none yet."""
    found, unfinished = [], []
    for root in map(Path, paths):
        if not root.exists():
            raise FileNotFoundError(f"{root} does not exist; pass run or sweep folders")
        if root.is_file():
            found.append(root)
            continue
        found += sorted(root.rglob("metrics.json"))
        unfinished += sorted(
            cfg.parent
            for cfg in root.rglob("config.yaml")
            if cfg.parent.name != ".hydra" and not (cfg.parent / "metrics.json").exists()
        )
    return found, unfinished


def record(metrics: dict, folder: Path | None = None) -> dict:
    """One tidy row from a job's metrics.json; `output_dir` is the folder it was found in."""
    params = metrics.get("schedule_params") or {}
    reverse = bool(params.get("reverse", False))
    row = {col: metrics.get(col) for col in COLUMNS}
    row["reverse"] = reverse if metrics.get("schedule") else None
    row["label"] = method_label(metrics.get("method", "?"), metrics.get("schedule"), reverse)
    if folder is not None:  # where its per_image.csv is now, should the sweep have moved
        row["output_dir"] = str(folder)
    return row


def collect(paths: Iterable[str | Path]) -> pd.DataFrame:
    """Every finished job under `paths` as one row; jobs without metrics.json are reported in
    the log and skipped. The frame is sorted by dataset, task, method and steps."""
    files, unfinished = find_metrics(paths)
    if unfinished:
        log.warning(
            "%d job folder(s) have no metrics.json yet, skipped: %s",
            len(unfinished),
            ", ".join(str(p) for p in unfinished[:3]),
        )
    rows = []
    for path in files:
        try:
            rows.append(record(json.loads(path.read_text()), path.parent))
        except (json.JSONDecodeError, OSError) as err:
            log.warning("skipped unreadable %s (%s)", path, err)
    frame = pd.DataFrame(rows, columns=COLUMNS)
    if frame.empty:
        return frame
    for col in ("steps", "nfe", "n_images"):
        frame[col] = frame[col].astype("Int64")
    frame["task_rank"] = [task_rank(t) for t in frame["task"]]
    frame = frame.sort_values(
        ["dataset", "task_rank", "task", "method", "label", "steps"],
        na_position="first",
        kind="stable",
    ).drop(columns="task_rank")
    return frame.reset_index(drop=True)
