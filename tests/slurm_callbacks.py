"""Callbacks that tests/test_slurm.py adds to jobs on the local SLURM cluster
(`+callbacks.<name>._target_=slurm_callbacks.<Class>`, with tests/ on PYTHONPATH)."""

from __future__ import annotations

import os
import time

from lightning.pytorch.callbacks import Callback

from rnsf.engine import interrupt


def attempt() -> int:
    """How often SLURM has requeued this job (0 on its first run)."""
    return int(os.environ.get("SLURM_RESTART_COUNT") or 0)


class WaitForSignal(Callback):
    """Every attempt prints its `SLURM_RESTART_COUNT=n` into the job's log. On the first attempt,
    once `images` images are done, the job waits (at most `limit_s` seconds) until a stop signal
    arrives, so that a test (or the time limit) interrupts it at a known point; later attempts
    run straight through."""

    def __init__(self, images: int = 1, limit_s: float = 300.0) -> None:
        self.images, self.limit_s, self.seen = images, limit_s, 0

    def setup(self, trainer, pl_module, stage: str) -> None:
        print(f"SLURM_RESTART_COUNT={attempt()}", flush=True)

    def on_test_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0):
        self.seen += len(outputs["name"]) if outputs else 0
        if attempt() > 0 or self.seen < self.images:
            return
        deadline = time.monotonic() + self.limit_s
        while interrupt.requested() is None and time.monotonic() < deadline:
            time.sleep(0.2)


class FailOnImage(Callback):
    """Raises during the restoration of the batch that holds the image named `name`."""

    def __init__(self, name: str) -> None:
        self.name = name

    def on_test_batch_start(self, trainer, pl_module, batch, batch_idx, dataloader_idx=0):
        if self.name in batch["name"]:
            raise RuntimeError(f"restoring {self.name} went wrong (a fault the test injects)")


class SlowSteps(Callback):
    """Every sampler step takes `seconds` longer (a sleep, so the machine's cores stay free), so
    that a batch of tiny steps outlasts an allocation of a minute. Every attempt prints its
    `SLURM_RESTART_COUNT=n`, as WaitForSignal does."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds

    def setup(self, trainer, pl_module, stage: str) -> None:
        print(f"SLURM_RESTART_COUNT={attempt()}", flush=True)

    def on_test_start(self, trainer, pl_module) -> None:
        inner = pl_module.step_callback  # the stop check's, which then follows every sleep

        def step_callback(info) -> None:
            time.sleep(self.seconds)
            if inner is not None:
                inner(info)

        pl_module.step_callback = step_callback
