"""The matrix of bad inputs and awkward files through `python run.py`: every user error is one
line and exit status 2 with nothing written; every odd but valid file is restored correctly.

Each awkward input and what pins it (the job-folder lock and the signals are in
test_lock.py / test_interrupt.py):
- 16-bit grey PNG, RGBA PNG, EXIF orientation: test_16_bit_alpha_and_exif_files_reach_the_job_…
  here, and one test per case in test_images.py (16-bit RGB, palette, LA, CMYK, float too);
- truncated JPEG among good ones: test_truncated_jpeg_is_refused_before_anything_is_written, and
  test_images.py's full-decode and cache tests;
- method.steps=abc / 0: test_bad_values_are_one_line (and every knob in test_schema.py), a bad
  value inside a sweep: test_a_bad_value_in_a_sweep_stops_it_before_the_first_job;
- DataLoader worker errors: test_dataloader_worker_errors_reach_the_user_as_their_own_line;
- unwritable output folder: test_unwritable_output_folder_is_named;
- different sizes with resize=none (batch 1 and larger): test_images_of_different_sizes_…;
- odd size with resize=none: test_odd_size_advice_follows_the_resize_policy;
- a path override in a sweep: test_sweep_folders_stay_flat_with_path_overrides;
- debug=tiny method=dps: test_debug_tiny_runs_dps_respaced_and_says_so (test_dps_respaced.py);
- the built-in prior on your own images: test_builtin_prior_note_only_for_own_images_….
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from rnsf.utils.cli import exit_on_user_error, user_message
from rnsf.utils.errors import UserError

from conftest import run_py

TINY = ["method=pinv", "logger=none", "dataset.num_workers=0"]


def run(args: list[str], tmp_path: Path) -> subprocess.CompletedProcess:
    return run_py(args, RNSF_CACHE_DIR=str(tmp_path / "cache"))


def assert_user_error(result: subprocess.CompletedProcess, job: Path | None, *fragments: str):
    """Exit 2, one `error:` line on stderr holding `fragments`, no traceback, and (when `job`
    is given) no job folder: no config.yaml, no .hydra/, no W&B run."""
    assert result.returncode == 2, (result.returncode, result.stderr[-3000:])
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    lines = [ln for ln in result.stderr.strip().splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr[-3000:]
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    if job is not None:
        assert not job.exists(), sorted(p.name for p in job.rglob("*"))
    return lines[0]


def folder_of(tmp_path: Path, sizes: list[tuple[int, int]], name: str = "imgs") -> Path:
    folder = tmp_path / name
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i, (h, w) in enumerate(sizes):
        array = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        Image.fromarray(array).save(folder / f"im{i}.png")
    return folder


# -- odd but valid files are restored from the right pixels -----------------------------------
@pytest.mark.slow
def test_16_bit_alpha_and_exif_files_reach_the_job_as_displayed(tmp_path):
    folder = tmp_path / "imgs"
    folder.mkdir()
    ramp = np.linspace(0, 65535, 64 * 64).round().astype(np.uint16).reshape(64, 64)
    Image.fromarray(ramp).save(folder / "a_grey16.png")
    rgba = np.zeros((64, 64, 4), np.uint8)
    rgba[..., 3] = 0  # fully transparent black
    Image.fromarray(rgba, "RGBA").save(folder / "b_rgba.png")
    stored = np.zeros((32, 64, 3), np.uint8)
    stored[:, :32, 0] = 255
    exif = Image.Exif()
    exif[0x0112] = 8  # rotate 90° counter-clockwise to display
    Image.fromarray(stored).save(folder / "c_phone.png", exif=exif)
    job = tmp_path / "job"
    args = ["dataset=folder", f"dataset.root={folder}", "dataset.resize=none", *TINY]
    result = run([*args, "dataset.batch_size=1", "task=denoise", f"hydra.run.dir={job}"], tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    target = {p.stem: np.asarray(Image.open(p)) for p in (job / "images/target").glob("*.png")}
    expected = np.round(ramp * (255 / 65535)).astype(np.uint8)
    np.testing.assert_array_equal(target["a_grey16"][..., 1], expected)
    assert (target["b_rgba"] == 255).all()  # composited on white, as metrics.json states
    assert target["c_phone"].shape == (64, 32, 3)  # upright
    assert target["c_phone"][32:, :, 0].min() == 255 and target["c_phone"][:32, :, 0].max() == 0
    metrics = json.loads((job / "metrics.json").read_text())
    assert metrics["alpha"] == "white" and metrics["n_images"] == 3
    assert (job / "grid.png").is_file()


# -- user errors: one line, exit 2, nothing written -------------------------------------------
@pytest.mark.slow
def test_truncated_jpeg_is_refused_before_anything_is_written(tmp_path):
    folder = tmp_path / "imgs"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(3):
        Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(folder / f"{i}.jpg")
    data = (folder / "1.jpg").read_bytes()
    (folder / "1.jpg").write_bytes(data[: len(data) // 2])
    job = tmp_path / "job"
    args = ["dataset=folder", f"dataset.root={folder}", "dataset.image_size=64"]
    result = run([*args, "method=pinv", "dataset.num_workers=2", f"hydra.run.dir={job}"], tmp_path)
    assert_user_error(result, job, "1.jpg", "truncated")


@pytest.mark.slow
@pytest.mark.parametrize(
    ("override", "fragment"),
    [
        ("method.steps=abc", "method.steps must be an integer in [1, 1000], got 'abc'"),
        ("method.steps=0", "method.steps must be an integer in [1, 1000], got 0"),
    ],
)
def test_bad_values_are_one_line(tmp_path, override, fragment):
    job = tmp_path / "job"
    result = run([override, "logger=none", f"hydra.run.dir={job}"], tmp_path)
    assert_user_error(result, job, fragment)


@pytest.mark.slow
def test_a_bad_value_in_a_sweep_stops_it_before_the_first_job(tmp_path):
    sweep = tmp_path / "sweep"
    result = run(["-m", "method.steps=2,0", *TINY, f"hydra.sweep.dir={sweep}"], tmp_path)
    assert_user_error(result, sweep, "method.steps", "got 0")


@pytest.mark.slow
def test_unwritable_output_folder_is_named(tmp_path):
    (tmp_path / "a_file").write_text("")
    job = tmp_path / "a_file" / "job"
    result = run([*TINY, f"hydra.run.dir={job}"], tmp_path)
    assert_user_error(result, None, f"cannot write the output folder {job}", "is a file")
    if os.geteuid() != 0:  # root writes into read-only folders
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o555)
        result = run([*TINY, f"hydra.run.dir={locked / 'job'}"], tmp_path)
        assert_user_error(result, locked / "job", "cannot write the output folder")


@pytest.mark.slow
def test_images_of_different_sizes_with_resize_none(tmp_path):
    folder = folder_of(tmp_path, [(64, 64), (48, 80), (64, 64)])
    args = ["dataset=folder", f"dataset.root={folder}", "dataset.resize=none", *TINY]
    job = tmp_path / "job"
    result = run([*args, "dataset.batch_size=1", f"hydra.run.dir={job}"], tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads((job / "metrics.json").read_text())
    assert metrics["n_images"] == 3
    grid = Image.open(job / "grid.png")
    assert grid.size == (2 + 3 * (80 + 2), 2 + 3 * (64 + 2))  # cells of the largest size
    # several per batch: the data module batches by size, and the results do not change
    job2 = tmp_path / "job2"
    result = run([*args, "dataset.batch_size=2", f"hydra.run.dir={job2}"], tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert json.loads((job2 / "metrics.json").read_text())["psnr"] == metrics["psnr"]


@pytest.mark.slow
def test_odd_size_advice_follows_the_resize_policy(tmp_path):
    folder = folder_of(tmp_path, [(66, 66)])
    args = ["dataset=folder", f"dataset.root={folder}", *TINY, "method=ddnm"]
    job = tmp_path / "job"
    result = run([*args, "dataset.resize=none", f"hydra.run.dir={job}"], tmp_path)
    line = assert_user_error(
        result,
        job,
        "66x66 is not divisible by the SR factor 4",
        "dataset.resize=none ignores dataset.image_size",
        "set dataset.resize=center_crop dataset.image_size=64",
    )
    assert "use dataset.image_size divisible" not in line
    result = run([*args, "dataset.resize=resize", "dataset.image_size=66"], tmp_path)
    assert_user_error(result, None, "66x66", "use dataset.image_size divisible by 4")


@pytest.mark.slow
def test_sweep_folders_stay_flat_with_path_overrides(tmp_path):
    folder = folder_of(tmp_path / "deep" / "er", [(64, 64)], name="photos")
    sweep = tmp_path / "sweep"
    args = ["-m", "dataset=folder", f"dataset.root={folder}/", "dataset.resize=none", *TINY]
    result = run([*args, "task=sr4,sr8", f"hydra.sweep.dir={sweep}"], tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    jobs = sorted(p for p in sweep.iterdir() if p.is_dir() and p.name[0].isdigit())
    assert [p.name for p in jobs] == [
        f"{n}_dataset.num_workers=0,dataset.resize=none,dataset.root=photos,dataset=folder,"
        f"logger=none,method=pinv,task={task}"
        for n, task in enumerate(["sr4", "sr8"])
    ]
    metrics = json.loads((jobs[0] / "metrics.json").read_text())
    assert f"dataset.root={folder}/" in metrics["overrides"]
    assert metrics["root"] == f"{folder}/".rstrip("/") or metrics["root"] == f"{folder}/"


class _Broken(torch.utils.data.Dataset):
    def __len__(self) -> int:
        return 2

    def __getitem__(self, i: int):
        raise UserError(f"cannot read image /data/im{i}.png (OSError: image file is truncated)")


def test_dataloader_worker_errors_reach_the_user_as_their_own_line(capsys):
    loader = torch.utils.data.DataLoader(_Broken(), num_workers=1)
    with pytest.raises(UserError) as err:
        next(iter(loader))
    assert "Traceback" in str(err.value)  # what torch re-raises: the worker's whole traceback
    assert user_message(err.value) == (
        "cannot read image /data/im0.png (OSError: image file is truncated)"
    )

    @exit_on_user_error
    def job():
        next(iter(torch.utils.data.DataLoader(_Broken(), num_workers=1)))

    with pytest.raises(SystemExit) as stop:
        job()
    assert stop.value.code == 2
    assert capsys.readouterr().err == (
        "error: cannot read image /data/im0.png (OSError: image file is truncated)\n"
    )


def test_builtin_prior_note_only_for_own_images_with_the_builtin_prior(capsys):
    from rnsf.engine.run import print_summary

    summary = {"method": "ddnm", "task": "sr4", "dataset": "folder", "n_images": 3, "nfe": 100}
    print_summary(Path("/x"), {**summary, "model": "tiny"})
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 3 and lines[2].startswith("note: the built-in prior")
    assert "method=pinv" in lines[2] and "Pretrained models" in lines[2]
    for other in (
        {"model": "tiny", "dataset": "demo"},  # the demo set is what it is for
        {"model": "adm_imagenet256"},  # a real prior
        {"model": "tiny", "method": "pinv", "nfe": 0},  # no prior used
    ):
        print_summary(Path("/x"), {**summary, "model": "tiny", **other})
        assert "note:" not in capsys.readouterr().out, other


@pytest.mark.slow
def test_debug_tiny_runs_dps_respaced_and_says_so(tmp_path):
    job = tmp_path / "job"
    result = run(["debug=tiny", "method=dps", "dataset.limit=1", f"hydra.run.dir={job}"], tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads((job / "metrics.json").read_text())
    assert metrics["steps"] == 5 and metrics["nfe"] == 5
    assert metrics["method_params"]["protocol"].startswith("non-paper: 5 of 1000 steps")


def test_size_advice_for_a_native_size_model_with_resize_none(tmp_path):
    from omegaconf import OmegaConf

    from rnsf.data import RestorationDataModule
    from rnsf.engine.checks import check_sizes
    from rnsf.operators import BicubicSR, Task

    class Native:  # a 256x256 network, as the ADM and DDPM presets
        native_size = 256

        def check_size(self, height, width):
            pass

    folder = folder_of(tmp_path, [(64, 96)])
    data = RestorationDataModule(root=str(folder), image_size=None, resize="none")
    cfg = OmegaConf.create({"mode": "test", "model": {"name": "adm_imagenet256"}})
    with pytest.raises(UserError) as err:
        check_sizes(cfg, data, Task("sr4", BicubicSR(4)), Native())
    assert str(err.value) == (
        "model adm_imagenet256 takes 256x256 images, the dataset gives 64x96; the files are used "
        "as they are (dataset.resize=none ignores dataset.image_size): crop or resize them, or "
        "set dataset.resize=center_crop dataset.image_size=256, or tiling=mask_shift to restore "
        "them at their size"
    )
