"""RestorationModule: a frozen denoiser, a method and a task in Lightning's test/predict loops."""

from __future__ import annotations

import time

import lightning as L
import torch

from rnsf.denoisers.base import Denoiser
from rnsf.methods.base import Callback, Method
from rnsf.metrics.image import consistency
from rnsf.metrics.suite import MetricSuite
from rnsf.operators.base import LinearOperator
from rnsf.operators.task import Task
from rnsf.utils.random import image_generators


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
        x_hat, seconds = self._restore(y, operator, generators, names, batch.get("label"))
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

    def _restore(self, y, operator, generators, names, labels=None):
        # the batch's classes go with every call; the denoiser itself holds no batch state
        denoiser = self.denoiser.conditioned(labels) if self.denoiser is not None else None
        callback = None
        if self.step_callback is not None:
            user = self.step_callback

            def callback(info):
                info.names = names
                user(info)

        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        start = time.perf_counter()
        x_hat = self.method.restore(
            y, operator, denoiser, generators, sigma_y=self.task.sigma_model, callback=callback
        )
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        return x_hat, (time.perf_counter() - start) / y.shape[0]
