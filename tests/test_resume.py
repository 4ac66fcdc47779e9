"""Resume: per-image records, the config check, and rerunning killed and finished jobs."""

from __future__ import annotations

import csv
import json
import os
import subprocess
from pathlib import Path

import pytest
import torch
from omegaconf import DictConfig, OmegaConf

from rnsf.data import RestorationDataModule
from rnsf.engine import resume
from rnsf.engine.module import RestorationModule
from rnsf.methods import Pinv
from rnsf.operators import BicubicSR, Task
from rnsf.utils.errors import UserError

from conftest import ROOT, run_py

FIVE = ["debug=tiny", "dataset.limit=5", "dataset.batch_size=1", "method.steps=2"]
TIMING = {"seconds", "seconds_per_image", "wall_seconds"}
ONE_THREAD = {"OMP_NUM_THREADS": "1"}
# a job that kills itself after two images (tests/kill_callback.py, importable through PYTHONPATH)
KILL_AFTER_TWO = [
    "+callbacks.kill._target_=kill_callback.KillAfterImages",
    "+callbacks.kill.images=2",
]
TESTS_PATH = os.pathsep.join(p for p in (str(ROOT / "tests"), os.environ.get("PYTHONPATH")) if p)


def run(args: list[str], **env: str) -> subprocess.CompletedProcess:
    """`python run.py ARGS` with one intra-op thread per process, as each `ddp_cpu` rank has on
    two cores: floating-point results then compare to the byte across process counts."""
    return run_py(args, **{**ONE_THREAD, **env})


def job_files(folder: Path) -> dict[str, Path]:
    """The job's own files by relative path (Hydra's records and log left out)."""
    return {
        str(p.relative_to(folder)): p
        for p in folder.rglob("*")
        if p.is_file() and ".hydra" not in p.parts and p.name != "run.log"
    }


def assert_same_results(a: Path, b: Path, ignore: set[str] = frozenset()) -> None:
    """Every output file of two jobs agrees: images to the byte, tables and records value by
    value except timings, paths, the commit and `ignore`."""
    files_a, files_b = job_files(a), job_files(b)
    assert files_a.keys() == files_b.keys()
    skip = TIMING | {"output_dir", "overrides", "git_sha"} | set(ignore)
    for name, path in files_a.items():
        other = files_b[name]
        if name.endswith(".png"):
            assert path.read_bytes() == other.read_bytes(), name
        elif name.endswith(".json"):
            x, y = json.loads(path.read_text()), json.loads(other.read_text())
            assert {k: v for k, v in x.items() if k not in skip} == {
                k: v for k, v in y.items() if k not in skip
            }, name
        elif name.endswith(".csv"):
            assert _csv(path) == _csv(other), name
    assert _csv(a / "per_image.csv") and len(_csv(a / "per_image.csv")) == len(
        list((a / "rows").glob("*.json"))
    )


def _csv(path: Path) -> list[dict]:
    with open(path) as f:
        return [{k: v for k, v in row.items() if k not in TIMING} for row in csv.DictReader(f)]


# -- records and the config check ---------------------------------------------------------
def test_records_round_trip_and_ignore_partial_writes(tmp_path):
    for index in (10, 2, 0):
        resume.write_record(tmp_path, {"index": index, "name": f"img{index}", "psnr": 20.0 + index})
    (tmp_path / "rows" / ".3.json.tmp").write_text('{"index": 3')  # a write cut short
    assert [r["index"] for r in resume.read_records(tmp_path)] == [0, 2, 10]
    assert resume.finished_indices(tmp_path) == {0, 2, 10}
    assert resume.read_records(tmp_path / "nothing") == []


def _config(output_dir: str, **changes) -> dict:
    cfg = {
        "method": {"steps": 100, "eta": 0.85},
        "dataset": {"limit": None, "num_workers": 0},
        "trainer": {"devices": 1, "precision": "32-true", "default_root_dir": output_dir},
        "logger": {"csv": {"save_dir": output_dir}},
        "paths": {"output_dir": output_dir, "root_dir": "."},
        "note": f"{output_dir}/images",
    }
    for key, value in changes.items():
        node = cfg
        *parents, leaf = key.split(".")
        for parent in parents:
            node = node[parent]
        node[leaf] = value
    return cfg


def test_config_difference_ignores_where_a_job_runs():
    old = _config("/a/job")
    moved = _config("/b/job", **{"trainer.devices": 4, "dataset.num_workers": 8})
    assert resume.config_difference(old, moved) is None
    assert resume.config_difference(old, _config("/a/job", **{"method.steps": 5})) == (
        "method.steps: 100 there, 5 now"
    )
    assert "trainer.precision" in resume.config_difference(
        old, _config("/a/job", **{"trainer.precision": "16-mixed"})
    )


def _job_folder(tmp_path: Path, rows: int, n_images: int | None) -> DictConfig:
    cfg = OmegaConf.create(_config(str(tmp_path)))
    resume.write_config(tmp_path, cfg)
    for index in range(rows):
        resume.write_record(tmp_path, {"index": index, "name": str(index)})
    if n_images is not None:
        (tmp_path / "metrics.json").write_text(json.dumps({"n_images": n_images, "psnr": 21.0}))
    return cfg


def test_finished_job_is_recognised(tmp_path):
    cfg = _job_folder(tmp_path, rows=3, n_images=3)
    assert resume.finished_job(tmp_path, cfg) == {"n_images": 3, "psnr": 21.0}
    assert resume.finished_job(tmp_path / "fresh", cfg) is None


def test_interrupted_job_is_not_finished(tmp_path):
    cfg = _job_folder(tmp_path, rows=3, n_images=2)  # metrics.json of fewer rows than recorded
    assert resume.finished_job(tmp_path, cfg) is None
    (tmp_path / "metrics.json").unlink()
    assert resume.finished_job(tmp_path, cfg) is None


def test_folder_of_another_config_is_a_user_error(tmp_path):
    _job_folder(tmp_path, rows=1, n_images=None)
    other = OmegaConf.create(_config(str(tmp_path), **{"method.eta": 0.5}))
    with pytest.raises(UserError) as err:
        resume.finished_job(tmp_path, other)
    message = str(err.value)
    assert "\n" not in message
    assert "method.eta: 0.85 there, 0.5 now" in message and "hydra.run.dir" in message


def test_data_leaves_out_recorded_images_and_checks_their_names(tmp_path):
    data = RestorationDataModule(root=None, image_size=None, resize="none", limit=3, batch_size=3)
    names = data.dataset.names
    for index in (0, 2, 7):  # 7: beyond this dataset (a record of a larger run)
        resume.write_record(tmp_path, {"index": index, "name": names[index] if index < 3 else "x"})
    done = resume.done_images(tmp_path, names)
    assert done == {0, 2}
    data.skip(done)
    (batch,) = data.test_dataloader()
    assert batch["index"].tolist() == [1] and batch["name"] == [names[1]]
    assert torch.equal(batch["image"], data.dataset[1]["image"][None])
    data.skip({0, 1, 2})  # a batch of only done images comes out empty, the step skips it
    (batch,) = data.test_dataloader()
    assert batch["name"] == [] and batch["index"].numel() == 0
    module = RestorationModule(None, Pinv(), Task("sr4", BicubicSR(4)))
    assert module.test_step(batch, 0) is None and module.predict_step(batch, 0) is None
    resume.write_record(tmp_path, {"index": 1, "name": "photo"})  # the dataset changed
    with pytest.raises(UserError, match=rf"is for image photo, but image 1 is now {names[1]}"):
        resume.done_images(tmp_path, names)


# -- end to end ---------------------------------------------------------------------------
@pytest.fixture(scope="module")
def jobs(tmp_path_factory) -> dict[str, Path]:
    """The same job run straight through, and killed after two images then rerun."""
    base = tmp_path_factory.mktemp("resume")
    straight, resumed = base / "straight", base / "resumed"
    assert run([*FIVE, f"hydra.run.dir={straight}"]).returncode == 0
    killed = run([*FIVE, *KILL_AFTER_TWO, f"hydra.run.dir={resumed}"], PYTHONPATH=TESTS_PATH)
    assert killed.returncode == -9, killed.stderr[-2000:]
    first = {p.name: p.read_bytes() for p in (resumed / "rows").iterdir()}
    assert sorted(first) == ["0.json", "1.json"]
    assert not (resumed / "metrics.json").exists() and not (resumed / "per_image.csv").exists()
    rerun = run([*FIVE, f"hydra.run.dir={resumed}"])
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    assert "2 images done by an earlier run are skipped" in rerun.stdout + rerun.stderr
    # the images restored before the kill were not restored again
    assert all((resumed / "rows" / name).read_bytes() == data for name, data in first.items())
    return {"straight": straight, "resumed": resumed}


@pytest.mark.slow
def test_killed_job_resumes_to_the_uninterrupted_result(jobs):
    assert_same_results(jobs["straight"], jobs["resumed"])
    metrics = json.loads((jobs["resumed"] / "metrics.json").read_text())
    assert metrics["n_images"] == 5
    assert [r["index"] for r in _csv(jobs["resumed"] / "per_image.csv")] == list("01234")


@pytest.mark.slow
def test_finished_job_is_skipped_and_another_config_refused(jobs):
    folder = jobs["straight"]
    before = {name: path.stat().st_mtime_ns for name, path in job_files(folder).items()}
    again = run([*FIVE, f"hydra.run.dir={folder}"])
    assert again.returncode == 0, again.stderr[-2000:]
    assert "finished: skipped" in again.stdout and "5 images" in again.stdout
    assert {name: path.stat().st_mtime_ns for name, path in job_files(folder).items()} == before
    other = run([*FIVE, "method.steps=3", f"hydra.run.dir={folder}"])
    assert other.returncode == 2
    errors = [line for line in other.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "method.steps: 2 there, 3 now" in errors[0], other.stderr[-2000:]


@pytest.mark.slow
def test_rerun_of_a_sweep_skips_finished_jobs(tmp_path):
    sweep = tmp_path / "sweep"
    args = [
        "-m",
        "task=sr4,colorization",
        "debug=tiny",
        "method.steps=2",
        f"hydra.sweep.dir={sweep}",
    ]
    assert run(args).returncode == 0
    done, cut = sorted(p for p in sweep.iterdir() if p.is_dir() and p.name[0].isdigit())
    stamp = (done / "metrics.json").stat().st_mtime_ns
    # the second job as if it had been interrupted after its first image
    (cut / "metrics.json").unlink()
    (cut / "rows" / "1.json").unlink()
    again = run(args)
    assert again.returncode == 0, again.stderr[-2000:]
    assert again.stdout.count("finished: skipped") == 1
    assert (done / "metrics.json").stat().st_mtime_ns == stamp
    metrics = json.loads((cut / "metrics.json").read_text())
    assert metrics["n_images"] == 2 and metrics["task"] == "colorization"
    assert len(_csv(cut / "per_image.csv")) == 2
