"""RestorationModule: a frozen denoiser, a method and a task in Lightning's test/predict loops."""

from __future__ import annotations

import logging
import time

import lightning as L
import torch

from rnsf.denoisers.base import Denoiser
from rnsf.engine import interrupt
from rnsf.engine.inflight import Inflight
from rnsf.methods.base import Callback, Method
from rnsf.methods.state import SamplerState
from rnsf.metrics.image import consistency
from rnsf.metrics.suite import MetricSuite
from rnsf.operators.base import LinearOperator
from rnsf.operators.task import Task
from rnsf.utils.random import image_generators

log = logging.getLogger(__name__)


class RestorationModule(L.LightningModule):
    """Restores and scores; the job's files are written by callbacks (`rnsf.engine.writer`).

    `test_step`: clean image → y = A x + n → restore → scores.
    `predict_step`: measurement y (no ground truth) → restore → data consistency.
    Both return the batch's `Restored` output (None for a batch whose images an earlier run
    already restored), which `on_{test,predict}_batch_end` callbacks receive.

    Every image gets its own generator seeded from (seed, image index), for the measurement
    noise, random masks and the sampler alike, so results do not depend on batching.
    `step_callback` (if set) receives the sampler's intermediate x̂₀ (`rnsf.methods.StepInfo`)
    together with the batch's image names. `metrics` (default: PSNR and SSIM, protocol float)
    scores each image and, through the writer, the whole set.

    With `inflight` set, a resumable method stopped by a signal (`rnsf.engine.interrupt`) has
    its batch saved at the last step, and a batch saved so is continued from there
    (`rnsf.engine.inflight`); any other method's batch restarts.
    """

    def __init__(
        self,
        denoiser: Denoiser | None,
        method: Method,
        task: Task,
        seed: int = 0,
        metrics: MetricSuite | None = None,
    ) -> None:
        super().__init__()
        self.denoiser = denoiser.eval().requires_grad_(False) if denoiser is not None else None
        self.method, self.task = method, task
        self.seed = seed
        self.metrics = (metrics or MetricSuite()).eval().requires_grad_(False)
        self.step_callback: Callback | None = None
        #: where a stopped batch's sampler state is saved and found again (the engine sets it)
        self.inflight: Inflight | None = None
        self.progress = BatchProgress()

    def score_keys(self, ground_truth: bool) -> list[str]:
        """The per-image scores of a step's output: with ground truth (test) or without."""
        return [*self.metrics.per_image_keys, "consistency"] if ground_truth else ["consistency"]

    def test_step(self, batch: dict, batch_idx: int) -> dict | None:
        return self._restore_batch(batch, ground_truth=True)

    def predict_step(self, batch: dict, batch_idx: int) -> dict | None:
        return self._restore_batch(batch, ground_truth=False)

    def _restore_batch(self, batch: dict, ground_truth: bool) -> dict | None:
        """The step both loops share. Returns the batch's output: `index`, `name`, `seconds`
        (per image), `scores` (name: per-image list) and `images` (kind: (B, C, H, W) in
        [-1, 1]: restored, measurement and, with ground truth, target)."""
        names = batch["name"]
        if not names:  # every image of the batch was restored by an earlier run
            return None
        indices = batch["index"].tolist()
        generators = image_generators(self.seed, indices, self.device)
        if ground_truth:
            x = batch["image"]
            operator, y = self.task.measure(x, generators)
        else:
            operator, y = self._measurement(batch["image"], generators)
        x_hat, seconds = self._restore(y, operator, generators, indices, names, batch.get("label"))
        x_hat = x_hat.clamp(-1, 1)
        scores = self.metrics.per_image(x_hat, x) if ground_truth else {}
        scores["consistency"] = consistency(x_hat, y, operator)
        if ground_truth:
            for key, value in scores.items():
                self.log(f"test/{key}", value.mean(), batch_size=len(names))
        images = {"restored": x_hat, "measurement": operator.to_image(y)}
        if ground_truth:
            images["target"] = x
        return {
            "index": indices,
            "name": list(names),
            "seconds": seconds,
            "scores": {key: value.tolist() for key, value in scores.items()},
            "images": images,
        }

    def _measurement(self, image: torch.Tensor, generators) -> tuple[LinearOperator, torch.Tensor]:
        """The batch's operator and y, from measurements given as images (predict mode)."""
        operator = self.task.operator
        x_shape = operator.x_shape(operator.measurement_from_image(image[:1]).shape)
        bound = operator.bind((image.shape[0], *x_shape[1:]), generators)
        return bound, bound.measurement_from_image(image)

    def _restore(self, y, operator, generators, indices, names, labels=None):
        # the batch's classes go with every call; the denoiser itself holds no batch state
        denoiser = self.denoiser.conditioned(labels) if self.denoiser is not None else None
        user, progress = self.step_callback, self.progress
        progress.start(self.method.nfe)
        state, resumed = self._resumed_state(indices, generators)

        def callback(info):
            # network evaluations done in this run (a DAPS callback comes once per level)
            progress.steps = info.index + 1 - resumed["step"]
            if user is not None:
                info.names = names
                user(info)

        extra = {"state": state} if state is not None else {}
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        start = time.perf_counter()
        try:
            x_hat = self.method.restore(
                y,
                operator,
                denoiser,
                generators,
                sigma_y=self.task.sigma_model,
                callback=callback if user is not None else None,
                **extra,
            )
            if self.device.type == "cuda":
                torch.cuda.synchronize(self.device)
        except interrupt.JobInterrupted:
            progress.seconds = time.perf_counter() - start
            if state is not None and state.step > resumed["step"]:
                self._save_state(indices, state, generators, resumed["seconds"] + progress.seconds)
            raise
        seconds = resumed["seconds"] + time.perf_counter() - start
        return x_hat, seconds / y.shape[0]

    def _resumed_state(self, indices, generators) -> tuple[SamplerState | None, dict]:
        """A resumable method's state for this batch: the one a stopped run saved (with the
        generators set back to that step), else a fresh one; None for other methods."""
        if not getattr(self.method, "resumable", False):
            return None, {"step": 0, "seconds": 0.0}
        saved = self.inflight.load(indices, self.device) if self.inflight is not None else None
        if saved is None:
            return SamplerState(), {"step": 0, "seconds": 0.0}
        for generator, generator_state in zip(generators, saved["generators"], strict=True):
            generator.set_state(generator_state)
        state = saved["state"]
        log.info(
            f"images {indices[0]}-{indices[-1]} continue from sampler step {state.step}, "
            "where a stopped run saved them"
        )
        return state, {"step": state.step, "seconds": saved["seconds"]}

    def _save_state(self, indices, state, generators, seconds: float) -> None:
        if self.inflight is None:
            return
        start = time.perf_counter()
        path = self.inflight.save(indices, state, generators, seconds, self.method.nfe)
        log.info(
            f"images {indices[0]}-{indices[-1]} saved at sampler step {state.step} to {path} "
            f"in {time.perf_counter() - start:.2f} s"
        )


class BatchProgress:
    """The batch in flight: its steps, those done in this run, and the seconds they took (what
    a job that a time limit stops without progress reports)."""

    def __init__(self) -> None:
        self.total, self.steps, self.seconds = 0, 0, 0.0

    def start(self, total: int) -> None:
        self.total, self.steps, self.seconds = total, 0, 0.0
