"""Stopping a job cleanly on a signal: Ctrl-C (SIGINT), SIGTERM and, under submitit, its
preemption / time-limit signal (SIGUSR2 unless SUBMITIT_PREEMPT_SIGNAL says otherwise).

While a job runs, these signals only raise a flag. The flag is read between two sampler steps
(through the method's step callback, which every sampler calls), before each batch and before
the job's final merge; there `JobInterrupted` cuts the batch in flight short. Every image
finished before it already has its files and record (`rows/<index>.json`), so nothing finished is
lost and a rerun in the same folder continues from there. The job then closes its W&B run as
interrupted, prints one line on how to resume and exits with 128 + the signal's number (130 for
SIGINT, 143 for SIGTERM). Under submitit the preemption / time-limit signal instead requeues the
job through submitit (its `checkpoint` resubmits the same job into the same folder), and the
requeued job resumes from the records.

A resumable method's batch in flight is saved at the step where it stopped and continues there
(`rnsf.engine.inflight`). A requeued attempt that a time limit stops again before it finished an
image or saved a step would loop until submitit gives up: such a job ends with `NoProgress`
instead, in one line that says what to raise.

Repeated signals change nothing: the stop is at most one sampler step away. The extra processes
of a DDP job that the job started itself receive every signal the first process receives.
"""

from __future__ import annotations

import logging
import os
import shlex
import shutil
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import ClassVar

import lightning as L
from lightning.pytorch.callbacks import Callback

log = logging.getLogger(__name__)

CHILD_WAIT_S = 60.0  #: how long the first process waits for the other ranks to stop


class JobInterrupted(BaseException):
    """The job stopped on signal `signum` (a BaseException, like KeyboardInterrupt: no error)."""

    def __init__(self, signum: int) -> None:
        super().__init__(f"interrupted by {signal_name(signum)}")
        self.signum = signum

    @property
    def exit_code(self) -> int:
        return 128 + self.signum


def signal_name(signum: int) -> str:
    return signal.Signals(signum).name


def preemption_signal() -> int | None:
    """submitit's preemption / time-limit signal inside a submitit job, else None."""
    if not os.environ.get("SUBMITIT_EXECUTOR"):
        return None
    return getattr(signal, "SIG" + os.environ.get("SUBMITIT_PREEMPT_SIGNAL", "USR2"), None)


def stop_signals() -> tuple[int, ...]:
    preempt = preemption_signal()
    return (signal.SIGINT, signal.SIGTERM, *([preempt] if preempt else []))


class NoProgress(RuntimeError):
    """A time limit stopped the job before it finished an image or saved a step: not requeued."""


class _State:
    active = False
    received: int | None = None
    children: Sequence[subprocess.Popen] = ()
    previous: ClassVar[dict] = {}  # the handlers the block replaced (submitit's among them)


def _on_signal(signum: int, frame) -> None:
    if _State.received is not None:
        return
    _State.received = signum
    log.warning(
        f"{signal_name(signum)} received: stopping after the current sampler step; "
        "finished images are kept"
    )
    for child in _State.children:
        if child.poll() is None:
            child.send_signal(signum)


@contextmanager
def stop_on_signals() -> Iterator[None]:
    """Within the block, the stop signals raise the flag instead of their usual effect; the
    previous handlers are back afterwards. Only the main thread can install handlers: elsewhere
    the block changes nothing."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {s: signal.getsignal(s) for s in stop_signals()}
    _State.active, _State.received, _State.children = True, None, ()
    _State.previous = previous
    for s in previous:
        signal.signal(s, _on_signal)
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler if handler is not None else signal.SIG_DFL)
        _State.active, _State.received, _State.children = False, None, ()
        _State.previous = {}


def requested() -> int | None:
    """The stop signal received so far, or None."""
    return _State.received


def check() -> None:
    """Raise `JobInterrupted` if a stop signal has been received."""
    if _State.received is not None:
        raise JobInterrupted(_State.received)


def reinstall() -> None:
    """Take the stop signals back (Lightning installs its own SIGTERM handler at the start of
    test/predict; Lightning restores ours when it ends)."""
    if _State.active and threading.current_thread() is threading.main_thread():
        for s in stop_signals():
            signal.signal(s, _on_signal)


class StopOnSignal(Callback):
    """Checks the flag before each batch, between sampler steps and before the final merge;
    forwards the signal to the ranks the job started and waits for them when it stops."""

    def __init__(self) -> None:
        self._user_callback = None

    def _start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        reinstall()
        _State.children = list(getattr(trainer.strategy.launcher, "procs", None) or ())
        user = self._user_callback = pl_module.step_callback

        def step_callback(info) -> None:
            check()
            if user is not None:
                user(info)

        pl_module.step_callback = step_callback

    def on_test_start(self, trainer, pl_module) -> None:
        self._start(trainer, pl_module)

    def on_predict_start(self, trainer, pl_module) -> None:
        self._start(trainer, pl_module)

    def on_test_batch_start(self, trainer, pl_module, batch, batch_idx, dataloader_idx=0) -> None:
        check()

    def on_predict_batch_start(
        self, trainer, pl_module, batch, batch_idx, dataloader_idx=0
    ) -> None:
        check()

    def on_test_epoch_end(self, trainer, pl_module) -> None:
        check()

    def on_predict_epoch_end(self, trainer, pl_module) -> None:
        check()

    def teardown(self, trainer, pl_module, stage: str) -> None:
        pl_module.step_callback = self._user_callback

    def on_exception(self, trainer, pl_module, exception: BaseException) -> None:
        pl_module.step_callback = self._user_callback
        if isinstance(exception, JobInterrupted):
            for child in _State.children:
                try:
                    child.wait(timeout=CHILD_WAIT_S)
                except subprocess.TimeoutExpired:
                    log.warning(f"rank process {child.pid} did not stop in {CHILD_WAIT_S:.0f} s")


def invoked_command(argv: Sequence[str] | None = None) -> list[str]:
    """The program the user ran, as they would type it again: `rnsf` (the installed command),
    `python -m rnsf` or `python run.py` (the script's path as given)."""
    program = (sys.argv if argv is None else argv)[0] or "run.py"
    path = Path(program)
    if path.name == "__main__.py":
        return ["python", "-m", path.parent.name]
    if path.suffix == ".py":
        return ["python", program]
    found = shutil.which(path.name)
    if found and Path(found).resolve() == path.resolve():
        return [path.name]  # on the PATH: the name the user typed
    return [program]


def resume_line(
    stop: JobInterrupted,
    folder: Path,
    done: int,
    total: int,
    overrides: Sequence[str],
    argv: Sequence[str] | None = None,
) -> str:
    """One line: what stopped the job, what is kept, and the command that resumes it (the
    program of `argv`, default `sys.argv`, with this job's overrides)."""
    command = shlex.join([*invoked_command(argv), *overrides, f"hydra.run.dir={folder}"])
    return (
        f"interrupted by {signal_name(stop.signum)}: {done} of {total} images are done and kept "
        f"in {folder}; resume with the same command in the same folder: {command}"
    )


def at_time_limit(stop: JobInterrupted) -> bool:
    """Whether `stop` is submitit's signal at the job's time limit. submitit sends the same
    signal on a preemption and tells the two apart by the time the job has run (its handler's
    `has_timed_out`); without that handler, the signal counts as the time limit."""
    if stop.signum != preemption_signal():
        return False
    handler = _State.previous.get(stop.signum) or signal.getsignal(stop.signum)
    has_timed_out = getattr(getattr(handler, "__self__", None), "has_timed_out", None)
    return bool(has_timed_out()) if callable(has_timed_out) else True


def no_progress_line(
    folder: Path, done: int, total: int, batch_size, steps: int, steps_done: int, seconds: float
) -> str:
    """One line: the time limit stopped the job before it made progress, the batch's steps and
    their time, and what to raise."""
    if steps == 0:
        took = f"it stopped after {seconds:.0f} s, before its first batch began"
    elif steps_done:
        took = f"{steps} steps per batch of {batch_size}, {seconds / steps_done:.2f} s per step"
    else:
        took = f"{steps} steps per batch of {batch_size}, its first step took over {seconds:.0f} s"
    return (
        f"no progress: the time limit stopped the job in {folder} before it finished an image "
        f"or saved a sampler step ({done} of {total} images done; {took}), so it is not "
        "requeued again: raise hydra.launcher.timeout_min, or lower dataset.batch_size"
    )


def exit_job(stop: JobInterrupted) -> None:
    """Leave the process after `stop`: requeue through submitit on its preemption signal
    (submitit then exits), else exit with 128 + the signal's number."""
    if stop.signum == preemption_signal():
        handler = signal.getsignal(stop.signum)  # submitit's, back in place
        if callable(handler):
            handler(stop.signum, None)  # checkpoint (the same job), requeue, exit
    raise SystemExit(stop.exit_code)
