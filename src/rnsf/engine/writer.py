"""The job's files, written by a callback as the loops run (Lightning's prediction-writer pattern).

`JobWriter` receives each batch's output of `RestorationModule` (test or predict) and writes the
images' PNGs and then their records (`rows/<index>.json`, `rnsf.engine.resume`); at the end of
the loop, rank 0 merges every rank's records, and an earlier run's, into per_image.csv, grid.png
and, last, metrics.json. The same callback therefore works on one or many processes, and for a
job resumed in its folder.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import BasePredictionWriter

from rnsf.data.images import save_png
from rnsf.engine import outputs, resume
from rnsf.engine.inflight import Inflight
from rnsf.metrics.intervals import mean_interval

PER_IMAGE_COLUMNS = ["index", "name", "psnr", "ssim", "lpips", "consistency", "seconds"]
SCORES = ("psnr", "ssim", "lpips", "consistency")


class JobWriter(BasePredictionWriter):
    """Writes a restoration job's files into `output_dir`.

    `run_info` describes the job (it heads metrics.json; the engine may add to it until the
    loop starts). With `save_images` off only the images that grid.png shows (the first
    `grid_images` from `first_index`, the index of the job's first image) are saved. After
    the loop, `summary` holds metrics.json's content.
    """

    def __init__(
        self,
        output_dir: str | Path,
        run_info: dict | None = None,
        save_images: bool = True,
        grid_images: int = 8,
        first_index: int = 0,
        inflight: Inflight | None = None,
    ) -> None:
        super().__init__(write_interval="batch")
        self.inflight = inflight  # a stopped batch's sampler state, gone once it is written
        self.first_index = first_index  # of the job's images (a test split starts later)
        self.output_dir = Path(output_dir)
        self.run_info = run_info if run_info is not None else {}
        self.save_images, self.grid_images = save_images, grid_images
        self.summary: dict = {}

    # -- each batch ---------------------------------------------------------------------
    def write_on_batch_end(
        self, trainer, pl_module, prediction, batch_indices, batch, batch_idx, dataloader_idx
    ) -> None:
        if prediction is not None:
            self.write(prediction)

    def on_test_batch_end(
        self, trainer, pl_module, outputs: Any, batch: Any, batch_idx: int, dataloader_idx: int = 0
    ) -> None:
        if outputs is not None:
            self.write(outputs)

    def write(self, output: dict) -> None:
        """Each image's PNGs, then its record: from then on a rerun skips it. Then the
        batch's saved sampler state, if a stopped run left one, goes."""
        images = output["images"]
        for b, (index, name) in enumerate(zip(output["index"], output["name"], strict=True)):
            if self.save_images or index - self.first_index < self.grid_images:
                for kind, batch in images.items():
                    save_png(batch[b], self.output_dir / "images" / kind / f"{name}.png")
            row = {"index": int(index), "name": name, "seconds": output["seconds"]}
            row.update({key: values[b] for key, values in output["scores"].items()})
            resume.write_record(self.output_dir, row)
        if self.inflight is not None:
            self.inflight.discard(output["index"][0])

    # -- the end of the loop ------------------------------------------------------------
    def on_test_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.merge(trainer, pl_module, pl_module.score_keys(ground_truth=True))

    def on_predict_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.merge(trainer, pl_module, pl_module.score_keys(ground_truth=False))

    def merge(self, trainer: L.Trainer, pl_module: L.LightningModule, scores: list[str]) -> None:
        """Merge every rank's records (and an earlier run's) into the job's files, on rank 0
        once all ranks are done. metrics.json comes last: it marks the job as finished."""
        trainer.strategy.barrier("merge")
        if not trainer.is_global_zero:
            return
        out = self.output_dir
        rows = resume.read_records(out)
        columns = [c for c in PER_IMAGE_COLUMNS if c in ("index", "name", "seconds", *scores)]
        outputs.write_rows(out / "per_image.csv", rows, columns)
        summary = dict(self.run_info)
        if pl_module.denoiser is not None:  # the compile time is known once the job has run
            summary.update(pl_module.denoiser.describe(pl_module.device))
        summary["n_images"] = len(rows)
        for key in SCORES:
            summary[key] = outputs.mean(rows, key) if key in scores else None
        for key in SCORES:  # the 95 % bootstrap interval of each mean (rnsf.report's)
            values = [r[key] for r in rows if key in scores and r.get(key) is not None]
            summary[f"{key}_lo"], summary[f"{key}_hi"] = (
                mean_interval(values) if len(values) > 1 else (None, None)
            )
        summary["seconds_per_image"] = outputs.mean(rows, "seconds")
        # FID/KID read the PNGs written above: this runs once, on rank 0, after every image of
        # the job is done (in predict mode it only records why they are null)
        names = [r["name"] for r in rows]
        summary.update(pl_module.metrics.summary(out, names, pl_module.device))
        self.summary = summary
        if names[: self.grid_images]:
            grid = names[: self.grid_images]
            outputs.grid_from_files(out / "images", grid, out / "grid.png")
        if self.inflight is not None:  # every image is done: no batch is in flight
            self.inflight.clear()
        outputs.write_json(out / "metrics.json", summary)
