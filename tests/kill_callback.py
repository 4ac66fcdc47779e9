"""Callbacks the tests add to a job (`+callbacks.kill._target_=kill_callback.KillAfterImages`,
with tests/ on PYTHONPATH) to interrupt it at a known point: the process kills itself (SIGKILL,
no clean-up of any kind) once the batches it has finished hold `images` images."""

from __future__ import annotations

import os
import signal

from lightning.pytorch.callbacks import Callback


class KillAfterImages(Callback):
    def __init__(self, images: int) -> None:
        self.images, self.seen = images, 0

    def on_test_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0):
        self._count(outputs)

    def on_predict_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0):
        self._count(outputs)

    def _count(self, outputs) -> None:
        self.seen += len(outputs["name"]) if outputs else 0
        if self.seen >= self.images:
            os.kill(os.getpid(), signal.SIGKILL)


class SignalAtStart(Callback):
    """Sends the process `signal` (a name: SIGUSR2) as the loop starts, before its first batch:
    a stop signal that comes before the job has done anything."""

    def __init__(self, signal: str) -> None:
        self.signal = signal

    def on_test_start(self, trainer, pl_module) -> None:
        os.kill(os.getpid(), getattr(signal, self.signal))

    def on_predict_start(self, trainer, pl_module) -> None:
        self.on_test_start(trainer, pl_module)


class SignalAtStep(Callback):
    """Sends the process `signal` during sampler step `step` (0-based) of batch `batch`, as a
    user or a scheduler would from outside."""

    def __init__(self, signal: str, batch: int, step: int) -> None:
        self.signal, self.batch, self.step, self.batches = signal, batch, step, -1

    def on_test_start(self, trainer, pl_module) -> None:
        inner = pl_module.step_callback  # the stop check's, which wraps the user's

        def step(info) -> None:
            if inner is not None:
                inner(info)
            if (self.batches, info.index) == (self.batch, self.step):
                os.kill(os.getpid(), getattr(signal, self.signal))

        pl_module.step_callback = step

    def on_test_batch_start(self, trainer, pl_module, batch, batch_idx, dataloader_idx=0) -> None:
        self.batches += 1
