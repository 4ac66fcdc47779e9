"""One job at a time in a job folder: the lock file `<job folder>/.lock`.

A job takes the lock before it writes anything of its own and removes it when it ends, however
it ends (a user error, a crash, Ctrl-C). The file is created atomically (`O_CREAT | O_EXCL`) and
holds the owner: pid, host, start time, the process's start time in the kernel (so that a pid
reused by an unrelated process is not taken for the job) and the scheduler's job id when there is
one. A second job in the folder stops with one line naming the owner.

A lock whose owner is gone (`kill -9`, a node that died) is taken over, with a warning, when:
- the owner ran on this host and its process no longer exists (pid gone, or reused by another
  process), or
- the owner ran on another host and carries this job's scheduler id (SLURM / submitit): the
  scheduler runs one attempt of a job at a time, so it is an earlier attempt of this requeued
  job, or
- the owner ran on another host and its heartbeat stopped: a live owner touches the file every
  `HEARTBEAT_S` seconds, and one untouched for `STALE_AFTER_S` seconds is taken for dead (this
  assumes clocks agree to well within that, as NTP keeps them on a cluster).

Only the first process of a job locks its folder: the other DDP ranks (started by the job
itself, or SLURM's tasks of the same job) share the job's folder and lock.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

from rnsf.utils.errors import UserError

log = logging.getLogger(__name__)

LOCK_FILE = ".lock"
HEARTBEAT_S = 60.0  #: a live owner touches its lock this often
STALE_AFTER_S = 600.0  #: a lock of another host untouched this long is taken over
BREAK_FILE = ".lock.break"  #: held while a stale lock is removed (one breaker at a time)
RANK_ENV = ("RANK", "LOCAL_RANK", "NODE_RANK", "SLURM_PROCID", "SUBMITIT_LOCAL_GLOBALID")


@dataclass(frozen=True)
class Owner:
    """Who holds a job folder's lock."""

    pid: int
    host: str
    started: str  #: when the lock was taken, UTC
    process_start: int | None = None  #: /proc/<pid>/stat start time (clock ticks after boot)
    job_id: str | None = None  #: the scheduler's job id (the same across requeues)

    def describe(self) -> str:
        job = f", job {self.job_id}" if self.job_id else ""
        return f"pid {self.pid} on {self.host}, started {self.started}{job}"


def this_process() -> Owner:
    pid = os.getpid()
    return Owner(
        pid=pid,
        host=socket.gethostname(),
        started=datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S UTC"),
        process_start=process_start(pid),
        job_id=scheduler_job_id(),
    )


def process_start(pid: int) -> int | None:
    """The start time of process `pid` in clock ticks after boot (Linux), None if unknown."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # the command name (field 2) may hold spaces; the fields after it are plain numbers
    return int(stat.rsplit(")", 1)[1].split()[19])


def pid_alive(pid: int, started: int | None = None) -> bool:
    """Whether process `pid` exists on this host and, when `started` is known, is the same
    process (not a later one that reuses the pid)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # it exists, owned by another user
    if started is None:
        return True
    now = process_start(pid)
    return now is None or now == started


def scheduler_job_id() -> str | None:
    """The job id of SLURM or submitit (the same across requeues), None outside a scheduler."""
    if os.environ.get("SUBMITIT_EXECUTOR") == "local" and os.environ.get("SUBMITIT_LOCAL_JOB_ID"):
        return f"local-{os.environ['SUBMITIT_LOCAL_JOB_ID']}"
    array, task = os.environ.get("SLURM_ARRAY_JOB_ID"), os.environ.get("SLURM_ARRAY_TASK_ID")
    if array and task:
        return f"{array}_{task}"
    return os.environ.get("SLURM_JOB_ID")


def is_first_rank() -> bool:
    """False in the extra processes of a DDP job (they share the first process's folder)."""
    return all(os.environ.get(key, "0") in ("", "0") for key in RANK_ENV)


def stale_reason(owner: Owner, age_s: float, me: Owner | None = None) -> str | None:
    """Why the lock of `owner`, last touched `age_s` seconds ago, is left over from a job that
    is gone; None while that job may be running (the rules are in the module's docstring)."""
    me = me or this_process()
    if owner.host == me.host:
        if pid_alive(owner.pid, owner.process_start):
            return None
        return f"its process {owner.pid} is gone"
    if owner.job_id is not None and owner.job_id == me.job_id:
        return f"it is an earlier attempt of this job ({owner.job_id})"
    if age_s > STALE_AFTER_S:
        return f"its heartbeat stopped {age_s:.0f} s ago"
    return None


class FolderLocked(UserError):
    """The job folder is in use by another job."""


class JobLock:
    """The lock of job folder `folder`: `with JobLock(folder): ...` runs a job in it."""

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)
        self.path = self.folder / LOCK_FILE
        self.owner: Owner | None = None
        self._content: bytes = b""
        self._stop = threading.Event()
        self._heartbeat: threading.Thread | None = None

    def __enter__(self) -> JobLock:
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()

    def acquire(self) -> None:
        """Take the lock, or raise `FolderLocked` naming the job that holds it."""
        self.folder.mkdir(parents=True, exist_ok=True)
        me = this_process()
        content = (json.dumps(asdict(me)) + "\n").encode()
        for _ in range(20):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                self._take_over_if_stale(me)
                continue
            try:
                os.write(fd, content)
                os.fsync(fd)
            finally:
                os.close(fd)
            self.owner, self._content = me, content
            self._stop.clear()
            self._heartbeat = threading.Thread(
                target=self._beat, name="rnsf-lock-heartbeat", daemon=True
            )
            self._heartbeat.start()
            return
        raise FolderLocked(f"{self.folder}: could not take the job folder's lock {self.path}")

    def _take_over_if_stale(self, me: Owner) -> None:
        seen, age, owner = read(self.path)
        if seen is None:
            return  # removed meanwhile: try again
        if owner is None:  # being written, or garbage
            if age < 10.0:
                time.sleep(0.05)
                return
            reason = "it is unreadable"
        else:
            reason = stale_reason(owner, age, me)
            if reason is None:
                raise FolderLocked(locked_message(self.folder, owner))
        who = owner.describe() if owner else "unknown"
        log.warning(f"{self.folder}: taking over the lock of a job that is gone ({who}): {reason}")
        breaker = self.folder / BREAK_FILE
        try:
            fd = os.open(breaker, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            _, breaker_age, _ = read(breaker)
            if breaker_age > 60.0:  # a breaker that died while breaking
                breaker.unlink(missing_ok=True)
            time.sleep(0.05)
            return
        try:  # remove the lock only if it is still the one judged stale
            if self.path.read_bytes() == seen:
                self.path.unlink()
        except FileNotFoundError:
            pass
        finally:
            os.close(fd)
            breaker.unlink(missing_ok=True)

    def _beat(self) -> None:
        while not self._stop.wait(HEARTBEAT_S):
            with contextlib.suppress(OSError):
                os.utime(self.path)

    def release(self) -> None:
        """Remove the lock if this job still holds it."""
        if self.owner is None:
            return
        self._stop.set()
        if self._heartbeat is not None:
            self._heartbeat.join(timeout=5)
        try:
            if self.path.read_bytes() == self._content:
                self.path.unlink()
        except FileNotFoundError:
            pass
        self.owner = None


def locked_message(folder: Path, owner: Owner) -> str:
    return (
        f"{folder} is in use by another job ({owner.describe()}); wait for it to end or pass "
        "another folder (hydra.run.dir=…, hydra.sweep.dir=… for a sweep); if that job is gone, "
        f"delete {Path(folder) / LOCK_FILE}"
    )


def read(path: Path) -> tuple[bytes | None, float, Owner | None]:
    """(content, age in seconds, owner) of a lock file; content None when there is none."""
    try:
        content = path.read_bytes()
        age = time.time() - path.stat().st_mtime
    except FileNotFoundError:
        return None, 0.0, None
    try:
        owner = Owner(**json.loads(content))
    except (ValueError, TypeError):
        owner = None
    return content, age, owner


def holder(folder: str | Path) -> Owner | None:
    """The live owner of `folder`'s lock; None when it is free or its owner is gone."""
    content, age, owner = read(Path(folder) / LOCK_FILE)
    if content is None or owner is None or stale_reason(owner, age) is not None:
        return None
    return owner


def job_lock(folder: str | Path) -> JobLock | _NoLock:
    """The lock to hold while a job runs in `folder` (none in a DDP job's extra processes)."""
    return JobLock(folder) if is_first_rank() else _NoLock()


class _NoLock:
    def __enter__(self) -> _NoLock:
        return self

    def __exit__(self, *exc) -> None:
        pass


def refuse_locked_folders(argv: Sequence[str]) -> None:
    """Before Hydra writes anything: stop with one line (exit 2) when the command line names a
    job folder (`hydra.run.dir=…`) or a sweep folder (`hydra.sweep.dir=…`, any job folder in
    it) that a running job holds. Folders named by the default patterns are new every time."""
    if not is_first_rank():
        return
    multirun = any(a in ("-m", "--multirun") for a in argv)
    key = "hydra.sweep.dir" if multirun else "hydra.run.dir"
    folder = _override_value(argv, key)
    if folder is None:
        return
    folders = [Path(folder)]
    if multirun and folders[0].is_dir():
        folders = sorted(p for p in folders[0].iterdir() if (p / LOCK_FILE).is_file())
    for candidate in folders:
        owner = holder(candidate)
        if owner is not None:
            print(f"error: {locked_message(candidate, owner)}", file=sys.stderr)
            sys.exit(2)


def _override_value(argv: Sequence[str], key: str) -> str | None:
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException

    value = None
    for arg in argv:
        if arg.startswith(f"{key}="):
            try:
                value = str(OverridesParser.create().parse_override(arg).value())
            except HydraException:
                return None  # Hydra names the problem itself
    return None if value is None or "${" in value else value
