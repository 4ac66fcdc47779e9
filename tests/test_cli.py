"""End to end through `python run.py`: outputs, sweeps, reproducibility and user errors."""

from __future__ import annotations

import csv
import json
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import ROOT, run_py

pytestmark = pytest.mark.slow
TINY = ["method.steps=3", "dataset.limit=2", "dataset.batch_size=2", "logger=none"]


def run(args: list[str], cwd: Path = ROOT) -> subprocess.CompletedProcess:
    return run_py(args, cwd)


def out_dir(tmp_path: Path, name: str = "job") -> tuple[Path, str]:
    path = tmp_path / name
    return path, f"hydra.run.dir={path}"


def rows(path: Path) -> list[dict]:
    with open(path / "per_image.csv") as f:
        return list(csv.DictReader(f))


def test_default_job_writes_every_output(tmp_path):
    path, arg = out_dir(tmp_path)
    result = run([*TINY, arg, "logger=default"])
    assert result.returncode == 0, result.stderr[-2000:]
    assert f"results in {path}" in result.stdout
    assert "PSNR" in result.stdout and "s/image" in result.stdout
    metrics = json.loads((path / "metrics.json").read_text())
    for key in (
        "method",
        "task",
        "schedule",
        "model",
        "dataset",
        "n_images",
        "nfe",
        "steps",
        "psnr",
        "ssim",
        "consistency",
        "seconds_per_image",
        "seed",
        "git_sha",
    ):
        assert key in metrics, key
    assert metrics["method"] == "rnsf" and metrics["task"] == "sr4" and metrics["schedule"] == "exp"
    assert metrics["n_images"] == 2 and metrics["nfe"] == 3 and metrics["model"] == "tiny"
    table = rows(path)
    assert [r["name"] for r in table] == ["astronaut_0_0", "astronaut_0_1"]
    assert set(table[0]) >= {"name", "psnr", "ssim", "consistency", "seconds"}
    for kind in ("restored", "measurement", "target"):
        images = sorted(p.name for p in (path / "images" / kind).iterdir())
        assert images == ["astronaut_0_0.png", "astronaut_0_1.png"], kind
    assert Image.open(path / "images/restored/astronaut_0_0.png").size == (64, 64)
    assert Image.open(path / "grid.png").size[0] > 3 * 64
    assert (path / "config.yaml").is_file()
    assert list((path / "wandb").glob("offline-run-*")), "W&B offline run missing"


def test_sweep_runs_four_distinct_jobs(tmp_path):
    sweep = tmp_path / "sweep"
    result = run(["-m", "schedule=exp,linear", "task=sr4,sr8", *TINY, f"hydra.sweep.dir={sweep}"])
    assert result.returncode == 0, result.stderr[-2000:]
    jobs = sorted(p.name for p in sweep.iterdir() if p.is_dir() and p.name[0].isdigit())
    suffixes = [
        "schedule=exp,task=sr4",
        "schedule=exp,task=sr8",
        "schedule=linear,task=sr4",
        "schedule=linear,task=sr8",
    ]
    assert len(jobs) == 4
    for i, (job, suffix) in enumerate(zip(jobs, suffixes, strict=True)):
        assert job.startswith(f"{i}_") and job.endswith(suffix), job
    seen = {
        (m["schedule"], m["task"])
        for m in (json.loads((sweep / j / "metrics.json").read_text()) for j in jobs)
    }
    assert seen == {("exp", "sr4"), ("exp", "sr8"), ("linear", "sr4"), ("linear", "sr8")}


def test_result_does_not_depend_on_batch_size(tmp_path):
    results = {}
    for batch in (1, 4):
        path, arg = out_dir(tmp_path, f"b{batch}")
        args = [
            "method.steps=3",
            "dataset.limit=4",
            f"dataset.batch_size={batch}",
            "logger=none",
            "task.sigma=0.05",
            arg,
        ]
        assert run(args).returncode == 0
        results[batch] = path
    r1, r4 = rows(results[1]), rows(results[4])
    for a, b in zip(r1, r4, strict=True):
        assert a["name"] == b["name"]
        assert abs(float(a["psnr"]) - float(b["psnr"])) < 1e-3
    for name in ("astronaut_0_1", "astronaut_1_1"):
        a = np.asarray(Image.open(results[1] / f"images/restored/{name}.png"), dtype=int)
        b = np.asarray(Image.open(results[4] / f"images/restored/{name}.png"), dtype=int)
        assert np.abs(a - b).max() <= 1


def test_predict_restores_measurements(tmp_path):
    lowres = tmp_path / "lowres"
    lowres.mkdir()
    for i in range(2):
        Image.fromarray(np.full((16, 16, 3), 60 * i + 40, np.uint8)).save(lowres / f"photo{i}.png")
    path, arg = out_dir(tmp_path)
    result = run(
        [
            "mode=predict",
            "dataset=measurements",
            f"dataset.root={lowres}",
            "method.steps=3",
            "logger=none",
            arg,
        ]
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert Image.open(path / "images/restored/photo1.png").size == (64, 64)
    metrics = json.loads((path / "metrics.json").read_text())
    assert metrics["n_images"] == 2 and metrics["psnr"] is None and metrics["mode"] == "predict"


def _assert_one_line_error(result, *fragments):
    assert result.returncode != 0
    lines = [ln for ln in result.stderr.strip().splitlines() if ln.strip()]
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    error = [ln for ln in lines if ln.startswith("error:")]
    assert len(error) == 1, result.stderr[-3000:]
    for fragment in fragments:
        assert fragment in error[0], error[0]


def test_unknown_group_option(tmp_path):
    _assert_one_line_error(run(["method=foo"]), "unknown method 'foo'", "rnsf")
    _assert_one_line_error(run(["-m", "task=sr4,sr5"]), "unknown task 'sr5'", "sr4")


def test_unknown_key(tmp_path):
    _assert_one_line_error(run(["method.stepz=3"]), "stepz")


def test_missing_and_empty_dataset_folder(tmp_path):
    _assert_one_line_error(
        run(["dataset=folder", f"dataset.root={tmp_path / 'nope'}", *TINY]),
        "does not exist",
        "dataset.root",
    )
    (tmp_path / "empty").mkdir()
    _assert_one_line_error(
        run(["dataset=folder", f"dataset.root={tmp_path / 'empty'}", *TINY]), "holds no images"
    )
    _assert_one_line_error(run(["dataset=folder", *TINY]), "dataset.root is required")


def test_corrupt_image(tmp_path):
    folder = tmp_path / "imgs"
    folder.mkdir()
    Image.fromarray(np.zeros((64, 64, 3), np.uint8)).save(folder / "good.png")
    (folder / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    _assert_one_line_error(
        run(["dataset=folder", f"dataset.root={folder}", "dataset.image_size=64", *TINY]),
        "bad.png",
    )


def test_sizes_the_operator_or_model_cannot_take(tmp_path):
    _assert_one_line_error(
        run(["dataset.image_size=66", "dataset.resize=resize", *TINY]),
        "66x66",
        "not divisible by the SR factor 4",
    )
    _assert_one_line_error(
        run(["task=denoise", "dataset.image_size=36", "dataset.resize=resize", *TINY]),
        "36x36",
        "multiple of 8",
    )


def test_errors_leave_earlier_outputs_intact(tmp_path):
    path, arg = out_dir(tmp_path)
    assert run([*TINY, arg]).returncode == 0
    before = {p: p.read_bytes() for p in path.rglob("*") if p.is_file() and ".hydra" not in p.parts}
    result = run([*TINY, arg, "dataset.image_size=60", "dataset.resize=resize"])
    assert result.returncode != 0
    after = {p: p.read_bytes() for p in path.rglob("*") if p.is_file() and ".hydra" not in p.parts}
    assert after.keys() >= before.keys()
    assert all(after[p] == before[p] for p in before)
