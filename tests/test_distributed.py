"""Many processes: DDP ranks started from Hydra jobs, unrepeated sharding, launcher presets.

The end-to-end runs compare a `trainer=ddp_cpu` job with a one-process job at one thread per
process: on the CPU, floating-point results depend on the intra-op thread count, and each DDP
rank gets cores / ranks threads.
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import fields
from pathlib import Path
from types import SimpleNamespace

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from omegaconf import open_dict
from test_resume import _csv, assert_same_results, job_files, run

from rnsf.data import RestorationDataModule
from rnsf.engine import distributed
from rnsf.utils.errors import UserError

from conftest import ROOT

FIVE = ["debug=tiny", "dataset.limit=5", "method.steps=2"]


def job_dirs(sweep: Path) -> list[Path]:
    return sorted(p for p in sweep.iterdir() if p.is_dir() and p.name[0].isdigit())


# -- pieces -------------------------------------------------------------------------------
@pytest.mark.parametrize("rank, expected", [(0, [0, 2, 4]), (1, [1, 3])])
def test_ranks_share_out_an_odd_number_of_images_without_repeats(rank, expected):
    data = RestorationDataModule(root=None, image_size=None, resize="none", limit=5, batch_size=2)
    data.trainer = SimpleNamespace(world_size=2, global_rank=rank)
    indices = [i for batch in data.test_dataloader() for i in batch["index"].tolist()]
    assert indices == expected
    assert [i for b in data.predict_dataloader() for i in b["index"].tolist()] == expected


def test_more_processes_than_images_is_a_user_error():
    distributed.check_world_size(5, 5)
    with pytest.raises(UserError, match=r"trainer\.devices=2 or fewer"):
        distributed.check_world_size(2, 4)


@pytest.fixture
def sweep_job(tmp_path):
    """HydraConfig as inside job 1 of `python run.py -m task=sr4,sr8 method.steps=2`."""
    with initialize_config_dir(str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("config", overrides=["task=sr8", "method.steps=2"], return_hydra_config=True)
    folder = tmp_path / "1_method.steps=2,task=sr8"
    with open_dict(cfg):
        cfg.hydra.runtime.output_dir = str(folder)
        cfg.hydra.runtime.cwd = str(tmp_path)
        cfg.hydra.job.name = "run"
    HydraConfig.instance().set_config(cfg)
    yield folder
    HydraConfig.instance().cfg = None


def test_worker_reruns_the_job_in_its_folder(sweep_job):
    command, cwd = distributed.worker_command()
    assert command[:3] == [sys.executable, "-m", "rnsf"]  # the package's entry, installed or not
    assert command[3:5] == ["--config-name", "config"]
    assert "task=sr8" in command and "method.steps=2" in command and "-m" not in command[3:]
    assert f"hydra.run.dir='{sweep_job}'" in command
    assert "hydra.output_subdir=null" in command and "hydra/job_logging=stdout" in command
    assert cwd == str(sweep_job.parent)


def test_private_lightning_launcher_is_as_checked(sweep_job):
    """rnsf.engine.launcher subclasses Lightning's private `_SubprocessScriptLauncher`: this
    fails on a Lightning release it was not checked against, and when the pieces it relies on
    change, so that an upgrade is looked at before it breaks multi-process jobs."""
    import inspect

    import lightning
    from lightning.pytorch.strategies.launchers import subprocess_script

    from rnsf.engine import launcher

    release = ".".join(lightning.__version__.split(".")[:2])
    assert release in launcher.TESTED_LIGHTNING, (
        f"lightning {lightning.__version__} is new to rnsf.engine.launcher: check that "
        "_SubprocessScriptLauncher still starts ranks in _call_children_scripts, then add it"
    )
    base = subprocess_script._SubprocessScriptLauncher
    assert list(inspect.signature(base.__init__).parameters) == [
        "self",
        "cluster_environment",
        "num_processes",
        "num_nodes",
    ]
    for name in ("_call_children_scripts", "_check_can_spawn_children", "launch"):
        assert callable(getattr(base, name)), name
    from lightning.fabric.plugins.environments import LightningEnvironment

    strategy = launcher.JobDDPStrategy(
        cluster_environment=LightningEnvironment(), process_group_backend="gloo"
    )
    strategy._configure_launcher()  # what the Trainer calls; the DDP launcher becomes ours
    assert isinstance(strategy.launcher, launcher.JobLauncher)
    assert strategy.launcher.procs == []


def test_slurm_preset_composes_into_sbatch_options(tmp_path, monkeypatch):
    from hydra_plugins.hydra_submitit_launcher.config import BaseQueueConf, SlurmQueueConf

    overrides = [
        "hydra/launcher=submitit_slurm",
        "hydra.launcher.partition=gpu",
        "hydra.launcher.gpus_per_node=4",
        "hydra.launcher.timeout_min=30",
        "hydra.launcher.array_parallelism=3",
    ]
    with initialize_config_dir(str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("config", overrides=overrides, return_hydra_config=True)
    preset = cfg.hydra.launcher
    assert set(preset) == {f.name for f in fields(SlurmQueueConf)}  # every field of the plugin
    assert preset.tasks_per_node == 4  # one process per GPU
    launcher = instantiate(preset)
    # the plugin's launcher, which ends a sweep with a summary (rnsf.engine.sweep); imported
    # after Hydra's plugin scan, which executes the plugin modules again
    from hydra_plugins.rnsf_launchers import SlurmLauncher

    assert isinstance(launcher, SlurmLauncher)
    plugin = "hydra_plugins.hydra_submitit_launcher.submitit_launcher.SlurmLauncher"
    assert plugin in {f"{c.__module__}.{c.__qualname__}" for c in type(launcher).__mro__}
    # submitit's SLURM executor, as the launcher builds it (it needs an `srun` on PATH)
    import submitit

    (tmp_path / "srun").write_text("#!/bin/sh\n")
    (tmp_path / "srun").chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    params = dict(launcher.params)
    folder, timeouts = params.pop("submitit_folder"), params.pop("max_num_timeout")
    executor = submitit.AutoExecutor(
        cluster="slurm", folder=tmp_path / "log", slurm_max_num_timeout=timeouts
    )
    base = {f.name for f in fields(BaseQueueConf)}  # the others take the "slurm_" prefix
    executor.update_parameters(**{k if k in base else f"slurm_{k}": v for k, v in params.items()})
    sbatch = executor._executor._make_submission_file_text("python run.py", "0")
    for option in ("partition=gpu", "gpus-per-node=4", "ntasks-per-node=4", "time=30"):
        assert f"#SBATCH --{option}\n" in sbatch, option
    assert executor._executor.parameters["array_parallelism"] == 3
    assert folder.endswith(".submitit/%j") and timeouts == 3


# -- end to end ---------------------------------------------------------------------------
@pytest.fixture(scope="module")
def single(tmp_path_factory) -> Path:
    """Five images (an odd number), one process, batch size 1."""
    folder = tmp_path_factory.mktemp("single") / "job"
    result = run([*FIVE, "dataset.batch_size=1", f"hydra.run.dir={folder}"])
    assert result.returncode == 0, result.stderr[-2000:]
    return folder


@pytest.mark.slow
def test_ddp_run_equals_one_process_to_the_byte(single, tmp_path):
    result = run([*FIVE, "dataset.batch_size=1", "trainer=ddp_cpu"], RNSF_ROOT=str(tmp_path))
    assert result.returncode == 0, result.stderr[-2000:]
    # both ranks wrote into rank 0's time-stamped folder, which holds nothing extra
    assert [p.name for p in (tmp_path / "outputs").iterdir()] == ["runs"]
    (job,) = (tmp_path / "outputs" / "runs").iterdir()
    assert result.stdout.count("results in") == 1
    assert_same_results(single, job, ignore={"world_size"})
    metrics = json.loads((job / "metrics.json").read_text())
    assert metrics["world_size"] == 2 and metrics["n_images"] == 5
    assert metrics["seconds_per_image"] > 0
    assert [r["index"] for r in _csv(job / "per_image.csv")] == list("01234")


@pytest.mark.slow
def test_ddp_jobs_of_a_sweep_each_write_their_own_folder(single, tmp_path):
    sweep = tmp_path / "sweep"
    args = ["-m", *FIVE, "trainer=ddp_cpu", "dataset.batch_size=1,2", f"hydra.sweep.dir={sweep}"]
    result = run(args)
    assert result.returncode == 0, result.stderr[-2000:]
    jobs = job_dirs(sweep)
    assert [j.name[:2] for j in jobs] == ["0_", "1_"]
    assert sorted(p.name for p in sweep.iterdir()) == sorted(
        [*(j.name for j in jobs), "multirun.yaml"]
    )
    assert_same_results(single, jobs[0], ignore={"world_size"})
    # batch size 2 differs from 1 only by floating-point rounding
    assert job_files(jobs[1]).keys() == job_files(single).keys()
    one, two = _csv(single / "per_image.csv"), _csv(jobs[1] / "per_image.csv")
    assert [r["index"] for r in two] == list("01234")
    for a, b in zip(one, two, strict=True):
        assert abs(float(a["psnr"]) - float(b["psnr"])) < 1e-3


@pytest.mark.slow
def test_submitit_local_runs_a_sweep_one_job_with_ddp(single, tmp_path):
    sweep = tmp_path / "sweep"
    args = ["-m", "hydra/launcher=submitit_local", *FIVE, "dataset.batch_size=1"]
    result = run([*args, "trainer=default,ddp_cpu", f"hydra.sweep.dir={sweep}"])
    assert result.returncode == 0, result.stderr[-2000:]
    jobs = job_dirs(sweep)
    assert [j.name.split("trainer=")[-1] for j in jobs] == ["default", "ddp_cpu"]
    assert list((sweep / ".submitit").iterdir())  # submitit's job records and logs
    for job in jobs:
        assert_same_results(single, job, ignore={"world_size"})
    sizes = [json.loads((j / "metrics.json").read_text())["world_size"] for j in jobs]
    assert sizes == [1, 2]
