"""Weights & Biases: offline runs that are named, grouped, tagged, filled and always closed."""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from lightning.pytorch.loggers import CSVLogger

from rnsf.engine.loggers import hydra_identity, resolve_mode, run_name, wandb_logger
from rnsf.engine.wandb_callbacks import WandbJob, read_table, wandb_callbacks
from rnsf.methods.base import StepInfo
from rnsf.utils.errors import UserError

from conftest import ROOT

TINY = ["method.steps=3", "dataset.limit=2", "dataset.batch_size=2"]
BLOCK = 32 * 1024  # the .wandb file is a LevelDB-style log: 32 KiB blocks of framed chunks


def wandb_env(tmp_path: Path) -> dict[str, str]:
    """Offline, quiet, and every W&B folder (artifact staging, cache, settings) under tmp."""
    dirs = {k: tmp_path / k.lower() for k in ("WANDB_DATA_DIR", "WANDB_CACHE_DIR")}
    dirs["WANDB_CONFIG_DIR"] = tmp_path / "wandb_config"
    return {"WANDB_MODE": "offline", "WANDB_SILENT": "true", **{k: str(v) for k, v in dirs.items()}}


def read_records(path: Path) -> list:
    """The protobuf records of an offline run's `run-*.wandb` file."""
    from wandb.proto import wandb_internal_pb2 as pb

    data, records, chunks = path.read_bytes(), [], []
    pos = 7  # ":W&B", magic, version
    while pos + 7 <= len(data):
        if BLOCK - pos % BLOCK < 7:  # a block's tail too short for a header is padding
            pos += BLOCK - pos % BLOCK
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
        if kind == 0:
            break
        chunks.append(data[pos + 7 : pos + 7 + length])
        pos += 7 + length
        if kind in (1, 4):  # a full record, or the last chunk of one
            record = pb.Record()
            record.ParseFromString(b"".join(chunks))
            records.append(record)
            chunks = []
    return records


class OfflineRun:
    """What an offline run recorded: identity, config, logged keys, exit code and files."""

    def __init__(self, job_dir: Path) -> None:
        runs = list((job_dir / "wandb").glob("offline-run-*"))
        assert len(runs) == 1, f"one offline run expected in {job_dir}, found {runs}"
        self.dir = runs[0]
        records = read_records(next(self.dir.glob("run-*.wandb")))
        kinds = [r.WhichOneof("record_type") for r in records]
        run = [r.run for r, k in zip(records, kinds, strict=True) if k == "run"][-1]
        self.name, self.group, self.tags = run.display_name, run.run_group, set(run.tags)
        self.config = {
            item.key: json.loads(item.value_json)
            for r, k in zip(records, kinds, strict=True)
            if k == "config"
            for item in r.config.update
        }
        self.keys = {  # media are logged as nested dicts: keep their top-level key
            item.nested_key[0] if item.nested_key else item.key
            for r, k in zip(records, kinds, strict=True)
            if k == "history"
            for item in r.history.item
        }
        exits = [r.exit for r, k in zip(records, kinds, strict=True) if k == "exit"]
        self.exit_code = exits[-1].exit_code if exits else None

    def media(self, pattern: str) -> list[Path]:
        return sorted((self.dir / "files" / "media").glob(pattern))


def run_app(args: list[str], env: dict[str, str], code: str = "") -> subprocess.CompletedProcess:
    """`python run.py ARGS` in a fresh interpreter, then `code` (e.g. a check of sys.modules)."""
    script = (
        "import runpy, sys\n"
        f"sys.argv = ['run.py', *{args!r}]\n"
        "try:\n"
        f"    runpy.run_path({str(ROOT / 'run.py')!r}, run_name='__main__')\n"
        "except SystemExit as exit:\n"
        "    if exit.code:\n"
        "        raise\n"
        f"{code}\n"
    )
    return subprocess.run(
        [sys.executable, "-c", script],
        cwd=ROOT,
        env={**os.environ, "HYDRA_FULL_ERROR": "0", **env},
        capture_output=True,
        text=True,
        timeout=600,
    )


# -- naming, options and frame selection (no job) ---------------------------------------------
def test_run_name_is_the_overrides_or_method_and_task():
    choices = {"method": "rnsf", "task": "sr4", "schedule": "exp"}
    assert run_name("schedule=linear,task=sr8", choices) == "schedule=linear,task=sr8"
    assert run_name("", choices) == "rnsf_sr4"
    assert hydra_identity() == (None, None)  # outside Hydra: W&B picks


def test_mode_resolution(monkeypatch, tmp_path):
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.netrc
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.delenv("WANDB_MODE", raising=False)
    assert resolve_mode("auto") == "offline"
    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)
    assert resolve_mode("auto") == "online"
    monkeypatch.setenv("WANDB_MODE", "dryrun")  # W&B's old name for offline; the env wins
    assert resolve_mode("online") == "offline"


@pytest.mark.parametrize(
    ("options", "fragment"),
    [
        ({"mode": "cloud"}, "logger.wandb.mode=cloud"),
        ({"log_frames": -1}, "logger.wandb.log_frames=-1"),
        ({"frame_every": 0}, "logger.wandb.frame_every=0"),
    ],
)
def test_bad_options_are_one_line_user_errors(options, fragment, tmp_path):
    with pytest.raises(UserError) as err:
        wandb_logger(save_dir=str(tmp_path), **options)
    assert fragment in str(err.value) and "\n" not in str(err.value)


def test_callback_only_with_a_wandb_logger(tmp_path):
    assert wandb_callbacks([], {}) == []
    assert wandb_callbacks([CSVLogger(tmp_path)], {}) == []
    logger = wandb_logger(save_dir=str(tmp_path), mode="disabled", log_frames=3, frame_every=7)
    (job,) = wandb_callbacks([CSVLogger(tmp_path), logger], {"seed": 0})
    assert isinstance(job, WandbJob) and (job.frames, job.every) == (3, 7)


def test_frames_of_the_first_images_every_m_evaluations_and_the_last():
    job = WandbJob(frames=3, every=4)
    job._every, job._last = 4, 9  # as setup() sets them for 10 evaluations
    for batch in (["a", "b"], ["c", "d"]):
        for i in range(10):
            x0 = torch.full((2, 3, 8, 8), -1.0 + 0.2 * i)
            info = StepInfo(index=i, t=900 - 100 * i, x=x0, x0=x0, x0_corrected=x0)
            info.names = batch
            job.collect(info)
    assert list(job.collected) == ["a", "b", "c"]
    for name in ("a", "c"):  # evaluations 0, 4, 8 and the last, 9
        assert [t for t, _ in job.collected[name]] == [900, 500, 100, 0]
    frame = job.collected["a"][1][1]
    assert frame.dtype == np.uint8 and frame.shape == (8, 8, 3) and frame[0, 0, 0] == 102


def test_table_keeps_names_as_text(tmp_path):
    path = tmp_path / "per_image.csv"
    path.write_text("index,name,psnr,seconds\n0,00001,21.5,0.3\n1,cat,nan,0.4\n")
    columns, rows = read_table(path)
    assert columns == ["index", "name", "psnr", "seconds"]
    assert rows[0] == [0, "00001", 21.5, 0.3] and rows[1][1] == "cat" and np.isnan(rows[1][2])


# -- whole jobs -----------------------------------------------------------------------------
@pytest.mark.slow
def test_sweep_jobs_each_log_a_named_grouped_finished_run(tmp_path):
    sweep = tmp_path / "my_sweep"
    args = ["-m", "method=rnsf,ddnm", *TINY, "logger=wandb", "logger.wandb.log_frames=1"]
    result = run_app([*args, f"hydra.sweep.dir={sweep}"], wandb_env(tmp_path))
    assert result.returncode == 0, result.stderr[-3000:]
    jobs = sorted(p for p in sweep.iterdir() if p.is_dir() and p.name[0].isdigit())
    assert len(jobs) == 2
    for job, method in zip(jobs, ("rnsf", "ddnm"), strict=True):
        run = OfflineRun(job)
        assert run.exit_code == 0
        overrides = (
            f"dataset.batch_size=2,dataset.limit=2,logger.wandb.log_frames=1,logger=wandb,"
            f"method.steps=3,method={method}"
        )
        assert run.name == overrides and job.name == f"{jobs.index(job)}_{overrides}"
        assert run.group == "my_sweep"
        tags = {"rnsf", "sr4", "exp", "tiny"} if method == "rnsf" else {"ddnm", "sr4", "tiny"}
        assert run.tags == tags  # the schedule only for RNSF
        assert run.config["method"]["steps"] == 3 and run.config["job"]["nfe"] == 3
        assert run.config["job"]["method"] == method and run.config["seed"] == 0
        assert {"per_image", "grid", "frames/astronaut_0_0", "summary/psnr"} <= run.keys
        assert {"summary/psnr_lo", "summary/psnr_hi"} <= run.keys  # the mean's 95 % interval
        assert "frames/astronaut_0_1" not in run.keys  # log_frames=1: the first image only
        assert ("lambda_schedule" in run.keys) == (method == "rnsf")
        (table,) = run.media("table/per_image_*.table.json")
        content = json.loads(table.read_text())
        assert content["columns"][:2] == ["index", "name"] and "psnr" in content["columns"]
        assert [row[1] for row in content["data"]] == ["astronaut_0_0", "astronaut_0_1"]
        assert len(run.media("images/grid_*.png")) == 1
        assert len(run.media("images/frames/astronaut_0_0_*.png")) == 3  # every evaluation of 3
        assert len(run.media("images/lambda_schedule_*.png")) == (method == "rnsf")


@pytest.mark.slow
def test_failing_job_closes_its_run_with_exit_code_1(tmp_path, monkeypatch):
    from hydra import compose, initialize_config_dir
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import open_dict

    from rnsf.engine.run import run
    from rnsf.methods.ddnm import RNSF

    for key, value in wandb_env(tmp_path).items():
        monkeypatch.setenv(key, value)
    restore = RNSF.restore

    def diverging(self, *args, callback=None, **kwargs):
        def step(info):
            if callback is not None:
                callback(info)
            if info.index == 1:
                raise RuntimeError("the sampler diverged")

        return restore(self, *args, callback=step, **kwargs)

    monkeypatch.setattr(RNSF, "restore", diverging)
    job = tmp_path / "job"
    with initialize_config_dir(str(ROOT / "conf"), version_base="1.3"):
        cfg = compose(
            "config",
            overrides=[*TINY, "logger=wandb", f"paths.output_dir={job}"],
            return_hydra_config=True,
        )
    monkeypatch.setattr(HydraConfig.instance(), "cfg", None)  # undone after the test
    HydraConfig.instance().set_config(cfg)
    with open_dict(cfg):
        del cfg.hydra  # a job's config, as Hydra hands it to run()
    with pytest.raises(RuntimeError, match="the sampler diverged"):
        run(cfg)

    import wandb

    assert wandb.run is None, "the failed job left its W&B run open"
    wandb.teardown()  # the service writes the run's log to disk before it stops
    failed = OfflineRun(job)
    assert failed.exit_code == 1
    overrides = (
        f"dataset.batch_size=2,dataset.limit=2,logger=wandb,method.steps=3,paths.output_dir={job}"
    )
    assert failed.name == overrides and failed.group == ""
    assert failed.tags == {"rnsf", "sr4", "exp", "tiny"}
    assert "per_image" not in failed.keys  # it ended before the results


@pytest.mark.slow
def test_csv_and_none_loggers_never_import_wandb(tmp_path):
    sweep = tmp_path / "sweep"
    check = "print('wandb imported:', 'wandb' in sys.modules)"
    args = ["-m", "logger=csv,none", *TINY, f"hydra.sweep.dir={sweep}"]
    result = run_app(args, {"WANDB_MODE": "offline"}, check)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "wandb imported: False" in result.stdout
    csv_job, none_job = sorted(p for p in sweep.iterdir() if p.is_dir() and p.name[0].isdigit())
    assert (csv_job / "csv" / "metrics.csv").is_file() and (none_job / "metrics.json").is_file()
    assert not (csv_job / "wandb").exists() and not (none_job / "wandb").exists()
