"""Signals: Ctrl-C and SIGTERM stop a job between two sampler steps, keep every finished image
and resume to the uninterrupted result; under submitit the preemption signal requeues the job."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import lightning as L
import pytest
import torch
from test_resume import assert_same_results

from rnsf.engine import interrupt, resume
from rnsf.engine.interrupt import JobInterrupted, StopOnSignal
from rnsf.engine.module import RestorationModule
from rnsf.engine.writer import JobWriter
from rnsf.methods.base import Method, StepInfo
from rnsf.operators import BicubicSR, Task

from conftest import ROOT

SIX = ["debug=tiny", "dataset.limit=6", "dataset.batch_size=2", "method.steps=10"]
ENV = {
    **os.environ,
    "OMP_NUM_THREADS": "1",
    "WANDB_MODE": "offline",
    "WANDB_SILENT": "true",
    "HYDRA_FULL_ERROR": "0",
}


# -- in one process -----------------------------------------------------------------------
class Counting(Method):
    """A†y in `steps` steps that calls the callback after each; it sends itself `signum` after
    step `at` = (batch, step), as a user or a scheduler would from outside."""

    name = "counting"
    steps = 6

    def __init__(self, at: tuple[int, int], signum: int = signal.SIGINT) -> None:
        self.at, self.signum, self.batches, self.steps_done = at, signum, 0, []

    @property
    def nfe(self) -> int:
        return self.steps

    def restore(self, y, operator, denoiser, generators, *, sigma_y=0.0, callback=None):
        x = operator.A_pinv(y)
        for i in range(self.steps):
            self.steps_done.append((self.batches, i))
            if callback is not None:
                callback(StepInfo(index=i, t=999 - i, x=x, x0=x, x0_corrected=x))
            if (self.batches, i) == self.at:
                os.kill(os.getpid(), self.signum)
        self.batches += 1
        return x


def _loader(n: int = 6, batch_size: int = 2):
    images = torch.rand(n, 3, 16, 16) * 2 - 1
    items = [{"image": images[i], "index": i, "name": f"img{i}"} for i in range(n)]
    return torch.utils.data.DataLoader(items, batch_size=batch_size)


def _trainer(*callbacks) -> L.Trainer:
    return L.Trainer(
        accelerator="cpu",
        devices=1,
        logger=False,
        callbacks=[StopOnSignal(), *callbacks],
        enable_progress_bar=False,
        enable_model_summary=False,
        inference_mode=False,
    )


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_signal_cuts_the_batch_in_flight_short_and_keeps_finished_images(tmp_path, signum):
    method = Counting(at=(1, 2), signum=signum)
    module = RestorationModule(None, method, Task("sr4", BicubicSR(4)))
    seen = []
    module.step_callback = lambda info: seen.append(info.index)  # a W&B-like user callback
    with interrupt.stop_on_signals(), pytest.raises(JobInterrupted) as stop:
        _trainer(JobWriter(tmp_path)).test(module, dataloaders=_loader())
    assert stop.value.signum == signum and stop.value.exit_code == 128 + signum
    # the second batch stopped right after the step that saw the signal, not at its end
    assert method.steps_done == [(0, i) for i in range(6)] + [(1, 0), (1, 1), (1, 2), (1, 3)]
    assert seen == [0, 1, 2, 3, 4, 5, 0, 1, 2]  # not called once stopped
    assert resume.finished_indices(tmp_path) == {0, 1}  # the first batch's records, kept
    assert sorted(p.name for p in (tmp_path / "images" / "restored").iterdir()) == [
        "img0.png",
        "img1.png",
    ]
    assert not (tmp_path / "metrics.json").exists()
    assert module.step_callback is not None and module.step_callback.__name__ == "<lambda>"


def test_signal_before_the_final_merge_leaves_it_to_the_rerun(tmp_path):
    method = Counting(at=(2, 5))  # the last step of the last batch
    module = RestorationModule(None, method, Task("sr4", BicubicSR(4)))
    with interrupt.stop_on_signals(), pytest.raises(JobInterrupted):
        _trainer(JobWriter(tmp_path)).test(module, dataloaders=_loader())
    assert resume.finished_indices(tmp_path) == {0, 1, 2, 3, 4, 5}
    assert not (tmp_path / "metrics.json").exists()


def test_handlers_are_a_flag_inside_and_restored_after():
    before = signal.getsignal(signal.SIGTERM)
    with interrupt.stop_on_signals():
        interrupt.check()
        os.kill(os.getpid(), signal.SIGTERM)
        os.kill(os.getpid(), signal.SIGINT)  # a second signal changes nothing
        assert interrupt.requested() == signal.SIGTERM
        with pytest.raises(JobInterrupted, match="SIGTERM"):
            interrupt.check()
    assert signal.getsignal(signal.SIGTERM) is before and interrupt.requested() is None
    interrupt.check()  # outside a job: nothing to do


def test_preemption_signal_only_under_submitit(monkeypatch):
    monkeypatch.delenv("SUBMITIT_EXECUTOR", raising=False)
    assert interrupt.stop_signals() == (signal.SIGINT, signal.SIGTERM)
    monkeypatch.setenv("SUBMITIT_EXECUTOR", "slurm")
    assert interrupt.stop_signals() == (signal.SIGINT, signal.SIGTERM, signal.SIGUSR2)
    monkeypatch.setenv("SUBMITIT_PREEMPT_SIGNAL", "USR1")
    assert interrupt.preemption_signal() == signal.SIGUSR1


def test_exit_codes_and_submitit_requeue(monkeypatch):
    with pytest.raises(SystemExit) as exit_:
        interrupt.exit_job(JobInterrupted(signal.SIGINT))
    assert exit_.value.code == 130
    with pytest.raises(SystemExit) as exit_:
        interrupt.exit_job(JobInterrupted(signal.SIGTERM))
    assert exit_.value.code == 143
    monkeypatch.setenv("SUBMITIT_EXECUTOR", "local")
    calls = []

    def submitit_handler(signum, frame):  # submitit's: checkpoint, requeue, exit
        calls.append(signum)
        sys.exit(144)

    previous = signal.signal(signal.SIGUSR2, submitit_handler)
    try:
        with pytest.raises(SystemExit) as exit_:
            interrupt.exit_job(JobInterrupted(signal.SIGUSR2))
        assert exit_.value.code == 144 and calls == [signal.SIGUSR2]
        with pytest.raises(SystemExit) as exit_:  # SIGTERM under submitit: no requeue
            interrupt.exit_job(JobInterrupted(signal.SIGTERM))
        assert exit_.value.code == 143 and calls == [signal.SIGUSR2]
    finally:
        signal.signal(signal.SIGUSR2, previous)


def test_resume_line():
    line = interrupt.resume_line(
        JobInterrupted(signal.SIGINT),
        Path("out/my job"),
        4,
        10,
        ["task=sr8", "method=ddnm"],
        argv=["run.py", "-m", "task=sr8,sr4"],
    )
    assert line.startswith("interrupted by SIGINT: 4 of 10 images are done and kept in out/my job")
    assert line.endswith("python run.py task=sr8 method=ddnm 'hydra.run.dir=out/my job'")


def test_resume_line_names_the_command_the_user_ran(tmp_path, monkeypatch):
    """The installed `rnsf` command, `python -m rnsf`, or the script as the user gave it."""
    script = tmp_path / "bin" / "rnsf"
    script.parent.mkdir()
    script.write_text("#!/bin/sh\n")
    script.chmod(0o755)
    monkeypatch.setenv("PATH", f"{script.parent}{os.pathsep}{os.environ['PATH']}")
    stop, folder = JobInterrupted(signal.SIGTERM), Path("out/a")
    for argv, command in (
        ([str(script), "task=sr8"], "rnsf task=sr8"),
        (["/venv/lib/python3.11/site-packages/rnsf/__main__.py"], "python -m rnsf task=sr8"),
        (["../rnsf/run.py", "task=sr8"], "python ../rnsf/run.py task=sr8"),
        (["/opt/other/rnsf"], "/opt/other/rnsf task=sr8"),  # not the one on the PATH
    ):
        line = interrupt.resume_line(stop, folder, 1, 2, ["task=sr8"], argv=argv)
        assert line.split("in the same folder: ")[1] == f"{command} hydra.run.dir=out/a", argv


# -- end to end ---------------------------------------------------------------------------
def start(args: list[str], **popen) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, str(ROOT / "run.py"), *args],
        cwd=ROOT,
        env=ENV,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        **popen,
    )


def wait_for_records(folder: Path, n: int, proc: subprocess.Popen, timeout: float = 300) -> int:
    """The pid that holds `folder`'s lock once `folder` has `n` records."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.communicate()[1][-2000:]
        if len(resume.finished_indices(folder)) >= n:
            return json.loads((folder / ".lock").read_text())["pid"]
        time.sleep(0.02)
    raise TimeoutError(f"{folder}: fewer than {n} records after {timeout} s")


@pytest.fixture(scope="module")
def straight(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("straight") / "job"
    proc = start([*SIX, f"hydra.run.dir={folder}"])
    _, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err[-2000:]
    return folder


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_signal_stops_the_job_and_the_rerun_completes_it(straight, tmp_path, signum):
    folder = tmp_path / "job"
    args = [*SIX, f"hydra.run.dir={folder}"]
    # Ctrl-C reaches every process of the terminal's process group; SIGTERM only the job's
    proc = start(args, start_new_session=True)
    pid = wait_for_records(folder, 2, proc)
    if signum == signal.SIGINT:
        os.killpg(proc.pid, signal.SIGINT)
    else:
        os.kill(pid, signal.SIGTERM)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 128 + signum, err[-2000:]
    done = resume.finished_indices(folder)
    assert 2 <= len(done) < 6 and len(done) % 2 == 0, done  # whole batches of two
    lines = [line for line in out.splitlines() if line.startswith("interrupted by")]
    assert len(lines) == 1 and "Traceback" not in err, err[-2000:]
    name = signal.Signals(signum).name
    assert lines[0].startswith(f"interrupted by {name}: {len(done)} of 6 images are done")
    assert lines[0].endswith(f"hydra.run.dir={folder}")
    assert not (folder / "metrics.json").exists() and not (folder / ".lock").exists()

    rerun = subprocess.run(
        [sys.executable, str(ROOT / "run.py"), *args], cwd=ROOT, env=ENV, capture_output=True
    )
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    assert_same_results(straight, folder)


@pytest.mark.slow
def test_submitit_requeues_a_preempted_job_that_resumes(straight, tmp_path):
    """submitit_local, as submitit_slurm on a time limit or a preemption: the job gets the
    preemption signal (SIGUSR2), stops between two steps, is requeued by submitit into the same
    folder, and the new attempt restores only the missing images."""
    sweep = tmp_path / "sweep"
    proc = start(["-m", "hydra/launcher=submitit_local", *SIX, f"hydra.sweep.dir={sweep}"])
    deadline = time.monotonic() + 300
    while not [p for p in sweep.glob("0_*") if (p / "rows").is_dir()]:
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()[1][-2000:]
        time.sleep(0.05)
    (folder,) = sweep.glob("0_*")
    pid = wait_for_records(folder, 2, proc)
    os.kill(pid, signal.SIGUSR2)
    _, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err[-3000:]
    logs = "\n".join(p.read_text() for p in (sweep / ".submitit").rglob("*_log.*"))
    assert "interrupted by SIGUSR2" in logs and "Requeued job" in logs, logs[-3000:]
    assert "images done by an earlier run are skipped" in logs
    assert json.loads((folder / "metrics.json").read_text())["n_images"] == 6
    assert_same_results(straight, folder)


@pytest.mark.slow
def test_stopped_job_closes_its_wandb_run_as_interrupted(tmp_path, monkeypatch, capsys):
    from hydra import compose, initialize_config_dir
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import open_dict
    from test_wandb import OfflineRun, read_records, wandb_env

    from rnsf.engine.run import run
    from rnsf.methods.ddnm import RNSF

    for key, value in wandb_env(tmp_path).items():
        monkeypatch.setenv(key, value)
    restore = RNSF.restore

    def ctrl_c_at_step_one(self, *args, callback=None, **kwargs):
        def step(info):
            callback(info)
            if info.index == 1:
                os.kill(os.getpid(), signal.SIGINT)

        return restore(self, *args, callback=step, **kwargs)

    monkeypatch.setattr(RNSF, "restore", ctrl_c_at_step_one)
    job = tmp_path / "job"
    overrides = ["method.steps=3", "dataset.limit=2", "logger=wandb", f"paths.output_dir={job}"]
    with initialize_config_dir(str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("config", overrides=overrides, return_hydra_config=True)
    monkeypatch.setattr(HydraConfig.instance(), "cfg", None)  # undone after the test
    HydraConfig.instance().set_config(cfg)
    with open_dict(cfg):
        del cfg.hydra
    with pytest.raises(SystemExit) as exit_:
        run(cfg)
    assert exit_.value.code == 130
    (line,) = [s for s in capsys.readouterr().out.splitlines() if s.startswith("interrupted")]
    assert line.startswith("interrupted by SIGINT: 0 of 2 images are done and kept in")
    assert not (job / ".lock").exists() and not (job / "rows").exists()

    import wandb

    assert wandb.run is None
    wandb.teardown()
    stopped = OfflineRun(job)
    assert stopped.exit_code == 130 and "interrupted" in stopped.tags
    records = read_records(next(stopped.dir.glob("run-*.wandb")))
    summary = {
        item.key: json.loads(item.value_json)
        for r in records
        if r.WhichOneof("record_type") == "summary"
        for item in r.summary.update
    }
    assert summary["interrupted"] == "SIGINT"


def child_pids(pid: int) -> list[int]:
    children = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            children.append(int(stat.parent.name))
    return children


@pytest.mark.slow
def test_sigterm_stops_every_rank_of_a_ddp_job(tmp_path):
    from rnsf.engine.lock import pid_alive

    folder = tmp_path / "job"
    args = [*SIX, "trainer=ddp_cpu", f"hydra.run.dir={folder}"]
    proc = start(args)
    pid = wait_for_records(folder, 2, proc)
    ranks = child_pids(pid)  # the rank the job started (rank 1)
    assert ranks
    os.kill(pid, signal.SIGTERM)  # to the first process only
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 143, err[-3000:]
    assert not any(pid_alive(rank) for rank in ranks)
    assert 2 <= len(resume.finished_indices(folder)) < 6
    assert sum(line.startswith("interrupted by SIGTERM") for line in out.splitlines()) == 1
    assert not (folder / ".lock").exists() and not (folder / "metrics.json").exists()
    rerun = subprocess.run(
        [sys.executable, str(ROOT / "run.py"), *args], cwd=ROOT, env=ENV, capture_output=True
    )
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    assert json.loads((folder / "metrics.json").read_text())["n_images"] == 6
