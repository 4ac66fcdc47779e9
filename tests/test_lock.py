"""Job folder locks: one job at a time, refusals in one line, stale locks taken over."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from dataclasses import asdict, replace
from pathlib import Path

import pytest

from rnsf.engine import lock
from rnsf.engine.lock import FolderLocked, JobLock, Owner

from conftest import run_py

TINY = ["debug=tiny", "dataset.limit=2", "method.steps=2"]


def write_lock(folder: Path, owner: Owner, age_s: float = 0.0) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / lock.LOCK_FILE
    path.write_text(json.dumps(asdict(owner)) + "\n")
    if age_s:
        stamp = time.time() - age_s
        os.utime(path, (stamp, stamp))
    return path


def dead_pid() -> int:
    """The pid of a process that has exited."""
    proc = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], stdout=-1)
    return int(proc.stdout)


@pytest.fixture
def sleeper():
    """A live process other than this one (its pid holds locks in the tests)."""
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    yield proc
    proc.kill()
    proc.wait()


def owner_of(proc: subprocess.Popen) -> Owner:
    return replace(lock.this_process(), pid=proc.pid, process_start=lock.process_start(proc.pid))


@pytest.fixture(autouse=True)
def no_scheduler(monkeypatch):
    for key in ("SLURM_JOB_ID", "SLURM_ARRAY_JOB_ID", "SLURM_ARRAY_TASK_ID", "SUBMITIT_EXECUTOR"):
        monkeypatch.delenv(key, raising=False)
    for key in lock.RANK_ENV:
        monkeypatch.delenv(key, raising=False)


def test_lock_is_taken_and_released(tmp_path):
    with JobLock(tmp_path / "job") as held:
        owner = Owner(**json.loads((tmp_path / "job" / ".lock").read_text()))
        assert owner == held.owner
        assert owner.pid == os.getpid() and owner.process_start == lock.process_start(os.getpid())
        assert lock.holder(tmp_path / "job") == owner
    assert not (tmp_path / "job" / ".lock").exists()
    assert lock.holder(tmp_path / "job") is None


def test_second_job_is_refused_in_one_line_naming_the_first(tmp_path, sleeper):
    first = owner_of(sleeper)
    path = write_lock(tmp_path, first)
    before = path.read_bytes()
    with pytest.raises(FolderLocked) as err:
        JobLock(tmp_path).acquire()
    message = str(err.value)
    assert "\n" not in message
    assert f"pid {sleeper.pid} on {first.host}, started {first.started}" in message
    assert "hydra.run.dir" in message
    assert path.read_bytes() == before and os.listdir(tmp_path) == [".lock"]


def test_lock_of_a_dead_process_is_taken_over(tmp_path, caplog):
    gone = replace(lock.this_process(), pid=dead_pid())
    write_lock(tmp_path, gone)
    with JobLock(tmp_path) as held:
        assert lock.holder(tmp_path) == held.owner
    assert f"process {gone.pid} is gone" in caplog.text and "taking over" in caplog.text


def test_reused_pid_does_not_keep_a_lock_alive(tmp_path):
    me = lock.this_process()
    assert lock.stale_reason(me, 0.0, me) is None
    earlier = replace(me, process_start=me.process_start - 1)  # another process, same pid
    assert lock.stale_reason(earlier, 0.0, me) == f"its process {me.pid} is gone"


def test_lock_of_another_host_goes_stale_by_heartbeat_or_job_id(tmp_path):
    me = lock.this_process()
    other = replace(me, host="node-17", pid=1)
    assert lock.stale_reason(other, lock.STALE_AFTER_S - 5, me) is None
    assert "heartbeat stopped" in lock.stale_reason(other, lock.STALE_AFTER_S + 5, me)
    # a requeued SLURM job finds its earlier attempt's lock, from another node
    mine = replace(me, job_id="4242_3")
    assert lock.stale_reason(replace(other, job_id="4242_3"), 1.0, mine) is not None
    assert lock.stale_reason(replace(other, job_id="4242_4"), 1.0, mine) is None

    write_lock(tmp_path / "fresh", other)
    with pytest.raises(FolderLocked, match="pid 1 on node-17"):
        JobLock(tmp_path / "fresh").acquire()
    write_lock(tmp_path / "old", other, age_s=lock.STALE_AFTER_S + 5)
    with JobLock(tmp_path / "old") as held:
        assert lock.holder(tmp_path / "old") == held.owner


def test_scheduler_job_id(monkeypatch):
    assert lock.scheduler_job_id() is None
    monkeypatch.setenv("SLURM_JOB_ID", "77")
    assert lock.scheduler_job_id() == "77"
    monkeypatch.setenv("SLURM_ARRAY_JOB_ID", "70")
    monkeypatch.setenv("SLURM_ARRAY_TASK_ID", "7")
    assert lock.scheduler_job_id() == "70_7"


def test_unreadable_lock_is_refused_while_fresh_and_taken_over_when_old(tmp_path):
    (tmp_path / ".lock").write_text('{"pid": 12')  # a lock cut short while being written
    stamp = time.time() - 30
    os.utime(tmp_path / ".lock", (stamp, stamp))
    with JobLock(tmp_path) as held:
        assert lock.holder(tmp_path) == held.owner


def test_one_of_many_simultaneous_jobs_wins(tmp_path):
    """O_EXCL: of eight jobs racing for a free folder, and for one with a stale lock, exactly
    one gets it."""
    for folder, stale in ((tmp_path / "free", False), (tmp_path / "stale", True)):
        if stale:
            write_lock(folder, replace(lock.this_process(), pid=dead_pid()))
        outcomes, start = [], threading.Barrier(8)

        def contend(folder=folder, outcomes=outcomes, start=start):
            start.wait()
            held = JobLock(folder)
            try:
                held.acquire()
                outcomes.append(held)
            except FolderLocked:
                outcomes.append("refused")

        threads = [threading.Thread(target=contend) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        winners = [o for o in outcomes if o != "refused"]
        assert len(outcomes) == 8 and len(winners) == 1, folder
        assert lock.holder(folder) == winners[0].owner
        winners[0].release()
        assert not (folder / lock.BREAK_FILE).exists()


def test_heartbeat_keeps_the_lock_fresh(tmp_path, monkeypatch):
    monkeypatch.setattr(lock, "HEARTBEAT_S", 0.05)
    with JobLock(tmp_path):
        stamp = time.time() - 3600
        os.utime(tmp_path / ".lock", (stamp, stamp))
        time.sleep(0.5)
        assert time.time() - (tmp_path / ".lock").stat().st_mtime < 60


def test_release_leaves_a_lock_taken_over_by_another_job(tmp_path):
    held = JobLock(tmp_path)
    held.acquire()
    write_lock(tmp_path, replace(lock.this_process(), pid=1, host="node-2"))
    held.release()
    assert (tmp_path / ".lock").exists()


def test_extra_ranks_of_a_ddp_job_do_not_lock(tmp_path, monkeypatch, sleeper):
    write_lock(tmp_path, owner_of(sleeper))
    monkeypatch.setenv("LOCAL_RANK", "1")
    with lock.job_lock(tmp_path):
        pass
    lock.refuse_locked_folders([f"hydra.run.dir={tmp_path}"])  # no exit
    monkeypatch.setenv("LOCAL_RANK", "0")
    with pytest.raises(FolderLocked):
        lock.job_lock(tmp_path).acquire()


def test_locked_folders_are_refused_before_hydra_starts(tmp_path, sleeper, capsys):
    job = tmp_path / "sweep" / "1_task=sr8"
    write_lock(job, owner_of(sleeper))
    sweep = ["-m", "task=sr4,sr8", f"hydra.sweep.dir={job.parent}"]
    for argv in ([f"hydra.run.dir='{job}'"], sweep):  # quoted as `=` in a value needs
        with pytest.raises(SystemExit) as exit_:
            lock.refuse_locked_folders(argv)
        assert exit_.value.code == 2
        err = capsys.readouterr().err.splitlines()
        assert len(err) == 1 and err[0].startswith(f"error: {job} is in use by another job")
    lock.refuse_locked_folders([f"hydra.run.dir={tmp_path / 'other'}"])
    lock.refuse_locked_folders(["hydra.run.dir=${oc.env:HOME}/x"])  # left to the job's lock
    write_lock(job, replace(lock.this_process(), pid=dead_pid()))
    lock.refuse_locked_folders([f"hydra.run.dir='{job}'"])  # stale: the job takes it over


# -- end to end ---------------------------------------------------------------------------
@pytest.mark.slow
def test_job_in_a_locked_folder_writes_nothing(tmp_path, sleeper):
    """Refused before Hydra starts when the folder is named on the command line; refused by
    the job itself, before any file or W&B run of its own, when it is not."""
    job = tmp_path / "job"
    write_lock(job, owner_of(sleeper))
    for args, env in (
        ([f"hydra.run.dir={job}"], {}),
        (["hydra.run.dir=${oc.env:JOB_DIR}", "logger=wandb"], {"JOB_DIR": str(job)}),
    ):
        result = run_py([*TINY, *args], **env)
        assert result.returncode == 2, result.stderr[-2000:]
        errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
        assert len(errors) == 1 and f"pid {sleeper.pid} on" in errors[0], result.stderr[-2000:]
        written = sorted(p.name for p in job.iterdir() if p.name not in (".hydra", "run.log"))
        assert written == [".lock"]  # no config.yaml, rows/, images/ or wandb/
        assert not (job / ".hydra").exists() or env  # Hydra's own records: only in the 2nd case


@pytest.mark.slow
def test_job_takes_over_the_lock_of_a_killed_job(tmp_path):
    job = tmp_path / "job"
    write_lock(job, replace(lock.this_process(), pid=dead_pid()))
    result = run_py([*TINY, f"hydra.run.dir={job}"])
    assert result.returncode == 0, result.stderr[-2000:]
    assert "taking over the lock of a job that is gone" in result.stdout + result.stderr
    assert json.loads((job / "metrics.json").read_text())["n_images"] == 2
    assert not (job / ".lock").exists()
