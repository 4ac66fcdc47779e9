"""Files every job writes: per-image rows, the metrics summary, the comparison grid.

All writes are atomic (temp file + rename), so an interrupted job never leaves a
half-written file behind.
"""

from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path

import torch

#: the image folders of a job, in the column order of grid.png
IMAGE_KINDS = ("measurement", "restored", "target")


def atomic_write_text(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    tmp.replace(path)


def write_json(path: Path, data: dict) -> None:
    atomic_write_text(path, json.dumps(data, indent=2, default=str) + "\n")


def write_rows(path: Path, rows: list[dict], columns: list[str]) -> None:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, extrasaction="ignore")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: _fmt(row.get(k)) for k in columns})
    atomic_write_text(path, buffer.getvalue())


def _fmt(value):
    if isinstance(value, float):
        return "nan" if math.isnan(value) else f"{value:.6g}"
    return value


def mean(rows: list[dict], key: str) -> float | None:
    values = [r[key] for r in rows if r.get(key) is not None]
    return float(sum(values) / len(values)) if values else None


def comparison_grid(columns: list[list[torch.Tensor]], path: Path) -> None:
    """One row per image, one column per kind (measurement | restored | target), [-1, 1].
    Images of different sizes (`dataset.resize=none`) sit top-left in cells of the largest
    size, padded with white."""
    from torchvision.utils import make_grid

    from rnsf.data.images import save_png

    tiles = [img.expand(3, -1, -1) for row in zip(*columns, strict=True) for img in row]
    height, width = max(t.shape[-2] for t in tiles), max(t.shape[-1] for t in tiles)
    tiles = [
        torch.nn.functional.pad(t, (0, width - t.shape[-1], 0, height - t.shape[-2]), value=1.0)
        for t in tiles
    ]
    grid = make_grid(torch.stack(tiles), nrow=len(columns), padding=2, pad_value=1.0)
    save_png(grid, path)


def grid_from_files(images_dir: Path, names: list[str], path: Path) -> None:
    """`comparison_grid` of the saved PNGs of `names` (the kinds there are), whichever process
    or run wrote them."""
    from rnsf.data.images import open_rgb, pil_to_tensor

    kinds = [k for k in IMAGE_KINDS if (images_dir / k).is_dir()]
    columns = [[pil_to_tensor(open_rgb(images_dir / k / f"{n}.png")) for n in names] for k in kinds]
    comparison_grid(columns, path)
