"""Tiled restoration end to end through `python run.py` (test and predict modes, mixed sizes)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import run_py

pytestmark = pytest.mark.slow
FAST = ["model=tiny", "method=ddnm", "method.steps=2", "logger=none", "tiling=mask_shift"]


def save(image, path: Path) -> None:
    array = ((image.permute(1, 2, 0).numpy() + 1) * 127.5).round().clip(0, 255).astype(np.uint8)
    Image.fromarray(array).save(path)


@pytest.fixture(scope="module")
def photo(demo_images):
    """A 128x128 mosaic of four demo crops."""
    import torch

    top = torch.cat([demo_images[0], demo_images[5]], dim=-1)
    bottom = torch.cat([demo_images[9], demo_images[13]], dim=-1)
    return torch.cat([top, bottom], dim=-2)


def rows(path: Path) -> list[dict]:
    with open(path / "per_image.csv") as f:
        return list(csv.DictReader(f))


def test_three_by_two_windows_at_sizes_off_the_stride_in_test_mode(photo, tmp_path):
    # 72x120 with windows of 64, stride 32: 2 rows x 3 columns of windows, the last of each
    # aligned to the edge; a 64x96 image (1 x 2 windows) batched apart by size
    root = tmp_path / "photos"
    root.mkdir()
    save(photo[:, :72, :120], root / "a.png")
    save(photo[:, 8:72, 16:112], root / "b.png")
    save(photo[:, 50:122, 4:124], root / "c.png")
    out = tmp_path / "job"
    args = [*FAST, "dataset=folder", f"dataset.root={root}", "dataset.resize=none"]
    args += ["dataset.batch_size=2", "dataset.num_workers=0"]
    result = run_py([*args, f"hydra.run.dir={out}"])
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["n_images"] == 3
    assert metrics["tiling"] == {"tiling": "mask_shift", "window": 64, "stride": 32, "order": "row"}
    # scored on the clamped output, as every job (the unclamped bound is in test_tiling.py)
    assert metrics["consistency"] < 0.02
    for name, size in (("a", (120, 72)), ("b", (96, 64)), ("c", (120, 72))):
        assert Image.open(out / "images" / "restored" / f"{name}.png").size == size
        assert Image.open(out / "images" / "target" / f"{name}.png").size == size
    assert [r["name"] for r in rows(out)] == ["a", "b", "c"]
    assert (out / "grid.png").is_file()


def test_a_real_low_resolution_photo_is_restored_at_factor_times_its_size(photo, tmp_path):
    # predict: the file is y (a 18x30 low-resolution photo); the restoration is 72x120
    import torch

    root = tmp_path / "lowres"
    root.mkdir()
    small = torch.nn.functional.avg_pool2d(photo[None, :, :72, :120], 4)[0]
    save(small, root / "snapshot.png")
    out = tmp_path / "job"
    args = [*FAST, "mode=predict", "dataset=measurements", f"dataset.root={root}"]
    result = run_py([*args, f"hydra.run.dir={out}"])
    assert result.returncode == 0, result.stderr[-3000:]
    assert Image.open(out / "images" / "restored" / "snapshot.png").size == (120, 72)
    assert Image.open(out / "images" / "measurement" / "snapshot.png").size == (120, 72)
    assert json.loads((out / "metrics.json").read_text())["consistency"] < 0.05  # clamped output


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["task=cs2"], "error: tiling needs an operator that acts locally"),
        (["method=ddrm"], "error: method ddrm cannot be tiled"),
        (["tiling.stride=80"], "error: tiling.window=64, tiling.stride=80: the stride must lie"),
        (["task=deblur_gauss"], "use tiling.stride <= 28"),
    ],
    ids=["cs", "ddrm", "stride", "blur-overlap"],
)
def test_each_tiling_error_is_one_line(photo, tmp_path, overrides, message):
    root = tmp_path / "photos"
    root.mkdir()
    save(photo[:, :128, :128], root / "a.png")
    out = tmp_path / "job"
    args = [*FAST, "dataset=folder", f"dataset.root={root}", "dataset.resize=none", *overrides]
    result = run_py([*args, f"hydra.run.dir={out}"])
    assert result.returncode == 2, result.stderr[-2000:]
    lines = [ln for ln in result.stderr.strip().splitlines() if ln.startswith("error:")]
    assert len(lines) == 1 and message in lines[0], result.stderr[-2000:]
    assert not (out / "images").exists()
