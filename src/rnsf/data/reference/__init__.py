"""The RNSF paper's published numbers (Tables 1-2), for printing beside reproduced tables.

`paper_tables.csv` (this folder; `reference/` at the repository root documents it) has one row per
printed cell: `table, dataset, method, task, steps, psnr, ssim, fid, lpips, note`, with this
project's config names for dataset, method and task and an empty cell where the paper prints
nothing.
"""

from __future__ import annotations

import csv
from pathlib import Path

from rnsf.utils.errors import UserError

#: the transcription of the paper's Tables 1-2 that ships with rnsf
PAPER_TABLES = Path(__file__).with_name("paper_tables.csv")
COLUMNS = ("table", "dataset", "method", "task", "steps", "psnr", "ssim", "fid", "lpips", "note")
INTEGER_COLUMNS = ("table", "steps")
FLOAT_COLUMNS = ("psnr", "ssim", "fid", "lpips")


def load_reference(path: str | Path | None = None) -> list[dict]:
    """Rows of a reference CSV (default: the paper's tables) as dicts: `table` and `steps` as int,
    the metrics as float, empty cells as None."""
    path = Path(path) if path is not None else PAPER_TABLES
    if not path.is_file():
        raise UserError(f"reference table {path} does not exist; pass a CSV with {COLUMNS}")
    with path.open(newline="") as f:
        reader = csv.DictReader(f)
        missing = [c for c in COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise UserError(f"reference table {path} lacks the columns {missing}; add them")
        return [_parse(row, path, n) for n, row in enumerate(reader, start=2)]


def _parse(row: dict, path: Path, line: int) -> dict:
    out: dict = {}
    for key, text in row.items():
        text = (text or "").strip()
        if not text:
            out[key] = None
            continue
        try:
            if key in INTEGER_COLUMNS:
                out[key] = int(text)
            elif key in FLOAT_COLUMNS:
                out[key] = float(text)
            else:
                out[key] = text
        except ValueError:
            raise UserError(
                f"reference table {path} line {line}: {key}={text!r} is not a number; fix the cell"
            ) from None
    return out
