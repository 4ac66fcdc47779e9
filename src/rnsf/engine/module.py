"""RestorationModule: a frozen denoiser, a method and a task in Lightning's test/predict loops."""

from __future__ import annotations

import time
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.utilities import rank_zero_info

from rnsf.data.images import save_png
from rnsf.denoisers.base import Denoiser
from rnsf.engine import outputs, resume
from rnsf.methods.base import Callback, Method
from rnsf.metrics.image import consistency
from rnsf.metrics.suite import MetricSuite
from rnsf.operators.task import Task
from rnsf.utils.random import image_generators

PER_IMAGE_COLUMNS = ["index", "name", "psnr", "ssim", "lpips", "consistency", "seconds"]


class RestorationModule(L.LightningModule):
    """`test_step`: clean image → y = A x + n → restore → scores → files.
    `predict_step`: measurement y (no ground truth) → restore → files.

    Every image gets its own generator seeded from (seed, image index), for the measurement
    noise, random masks and the sampler alike, so results do not depend on batching.
    `step_callback` (if set) receives the sampler's intermediate x̂₀ (`rnsf.methods.StepInfo`)
    together with the batch's image names. `metrics` (default: PSNR and SSIM, protocol float)
    scores each image and, at the end, the whole set.

    Each finished image leaves a record (`rows/<index>.json`, `rnsf.engine.resume`); images
    recorded by an earlier run in the same folder are skipped, and the job's files are merged
    from all records by rank 0, so the module works unchanged on one or many processes.
    """

    def __init__(
        self,
        denoiser: Denoiser | None,
        method: Method,
        task: Task,
        output_dir: str | Path,
        seed: int = 0,
        metrics: MetricSuite | None = None,
        save_images: bool = True,
        grid_images: int = 8,
        run_info: dict | None = None,
        first_index: int = 0,
    ) -> None:
        super().__init__()
        self.denoiser = denoiser.eval().requires_grad_(False) if denoiser is not None else None
        self.method, self.task = method, task
        self.output_dir = Path(output_dir)
        self.seed = seed
        self.metrics = (metrics or MetricSuite()).eval().requires_grad_(False)
        self.save_images, self.grid_images = save_images, grid_images
        self.first_index = first_index  # of the job's images (a test split starts later)
        self.run_info = dict(run_info or {})
        self.step_callback: Callback | None = None
        self.rows: list[dict] = []  # the images this process restored
        self.done: dict[int, str] = {}  # index: name of the images an earlier run restored
        self.summary: dict = {}

    # -- the restoration ----------------------------------------------------------------
    def _restore(self, y, operator, generators, names):
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
            y, operator, self.denoiser, generators, sigma_y=self.task.sigma_model, callback=callback
        )
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        return x_hat, (time.perf_counter() - start) / y.shape[0]

    def on_test_start(self) -> None:
        self._load_done()

    def on_predict_start(self) -> None:
        self._load_done()

    def _load_done(self) -> None:
        self.done = {row["index"]: row["name"] for row in resume.read_records(self.output_dir)}
        if self.done:
            rank_zero_info(f"{len(self.done)} images done by an earlier run are skipped")

    def _unfinished(self, batch: dict) -> dict | None:
        """The images of `batch` not done yet (None when there are none)."""
        indices = batch["index"].tolist()
        for index, name in zip(indices, batch["name"], strict=True):
            if index in self.done:
                resume.check_same_image(self.output_dir, index, self.done[index], name)
        keep = [b for b, i in enumerate(indices) if i not in self.done]
        if len(keep) == len(batch["name"]):
            return batch
        if not keep:
            return None
        return {
            key: value[keep] if torch.is_tensor(value) else [value[b] for b in keep]
            for key, value in batch.items()
        }

    def test_step(self, batch: dict, batch_idx: int) -> None:
        batch = self._unfinished(batch)
        if batch is None:
            return
        x, names = batch["image"], batch["name"]
        generators = image_generators(self.seed, batch["index"].tolist(), self.device)
        operator, y = self.task.measure(x, generators)
        x_hat, seconds = self._restore(y, operator, generators, names)
        x_hat = x_hat.clamp(-1, 1)
        scores = {
            **self.metrics.per_image(x_hat, x),
            "consistency": consistency(x_hat, y, operator),
        }
        for key, value in scores.items():
            self.log(f"test/{key}", value.mean(), batch_size=x.shape[0])
        values = {k: v.tolist() for k, v in scores.items()}
        view = operator.to_image(y)
        for b, name in enumerate(names):
            row = {"index": int(batch["index"][b]), "name": name, "seconds": seconds}
            row.update({k: v[b] for k, v in values.items()})
            self._write_images(
                row["index"], name, restored=x_hat[b], measurement=view[b], target=x[b]
            )
            self._record(row)

    def predict_step(self, batch: dict, batch_idx: int) -> None:
        batch = self._unfinished(batch)
        if batch is None:
            return
        image, names = batch["image"], batch["name"]
        generators = image_generators(self.seed, batch["index"].tolist(), self.device)
        x_shape = self.task.operator.x_shape(
            self.task.operator.measurement_from_image(image[:1]).shape
        )
        operator = self.task.operator.bind((image.shape[0], *x_shape[1:]), generators)
        y = operator.measurement_from_image(image)
        x_hat, seconds = self._restore(y, operator, generators, names)
        x_hat = x_hat.clamp(-1, 1)
        residual = consistency(x_hat, y, operator).tolist()
        view = operator.to_image(y)
        for b, name in enumerate(names):
            row = {
                "index": int(batch["index"][b]),
                "name": name,
                "consistency": residual[b],
                "seconds": seconds,
            }
            self._write_images(row["index"], name, restored=x_hat[b], measurement=view[b])
            self._record(row)

    def _write_images(self, index: int, name: str, **images: torch.Tensor) -> None:
        """The image's PNGs; with `save_images` off only those grid.png shows."""
        if self.save_images or index - self.first_index < self.grid_images:
            for kind, image in images.items():
                save_png(image, self.output_dir / "images" / kind / f"{name}.png")

    def _record(self, row: dict) -> None:
        """Keep the finished image's row and persist it: from now on a rerun skips it."""
        self.rows.append(row)
        resume.write_record(self.output_dir, row)
        resume.kill_hook(len(self.rows))

    # -- the job's files ----------------------------------------------------------------
    def on_test_epoch_end(self) -> None:
        self._finish([*self.metrics.per_image_keys, "consistency"])

    def on_predict_epoch_end(self) -> None:
        self._finish(["consistency"])

    def _finish(self, metrics: list[str]) -> None:
        """Merge every rank's records (and an earlier run's) into the job's files, on rank 0
        once all ranks are done. metrics.json comes last: it marks the job as finished."""
        self.trainer.strategy.barrier("finish")
        if not self.trainer.is_global_zero:
            return
        rows = resume.read_records(self.output_dir)
        columns = [c for c in PER_IMAGE_COLUMNS if c in ("index", "name", "seconds", *metrics)]
        outputs.write_rows(self.output_dir / "per_image.csv", rows, columns)
        summary = dict(self.run_info)
        if self.denoiser is not None:  # the compile time is known once the job has run
            summary.update(self.denoiser.describe(self.device))
        summary["n_images"] = len(rows)
        for key in ("psnr", "ssim", "lpips", "consistency"):
            summary[key] = outputs.mean(rows, key) if key in metrics else None
        summary["seconds_per_image"] = outputs.mean(rows, "seconds")
        # FID/KID read the PNGs written in test_step: this runs once, on rank 0, after every
        # image of the job is done (in predict mode it only records why they are null)
        summary.update(
            self.metrics.summary(self.output_dir, [r["name"] for r in rows], self.device)
        )
        self.summary = summary
        names = [r["name"] for r in rows[: self.grid_images]]
        if names:
            outputs.grid_from_files(self.output_dir / "images", names, self.output_dir / "grid.png")
        outputs.write_json(self.output_dir / "metrics.json", summary)
