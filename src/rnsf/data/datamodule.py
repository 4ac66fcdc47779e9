"""The LightningDataModule behind the `dataset` config group."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.overrides.distributed import UnrepeatedDistributedSampler
from torch.utils.data import DataLoader, Dataset, Sampler

from rnsf.data.demo import DEMO_DIR
from rnsf.data.folder import ImageFolder


def collate(items: list[dict]) -> dict:
    """Stack a batch; images restored by an earlier run (`RestorationDataModule.skip`) are left
    out, so a batch may hold no image at all."""
    items = [it for it in items if it["image"] is not None]
    if not items:
        return {"image": None, "index": torch.zeros(0, dtype=torch.long), "name": []}
    sizes = {tuple(it["image"].shape) for it in items}
    if len(sizes) > 1:
        from rnsf.utils.errors import UserError

        raise UserError(
            f"images of one batch differ in size {sorted(sizes)}; set dataset.batch_size=1, or "
            "dataset.resize=center_crop (or resize) with dataset.image_size"
        )
    return {
        "image": torch.stack([it["image"] for it in items]),
        "index": torch.tensor([it["index"] for it in items]),
        "name": [it["name"] for it in items],
        "label": torch.tensor([it.get("label", -1) for it in items]),
    }


class SizeBatches(Sampler[list[int]]):
    """Batches of at most `batch_size` images of one size: the images (in the order of `order`,
    e.g. one rank's share) grouped by size, sizes in order of first appearance. Results do not
    depend on batching, so this changes only how many images share a forward pass."""

    def __init__(self, order, sizes: list[tuple[int, int]], batch_size: int) -> None:
        self.order, self.sizes, self.batch_size = order, sizes, batch_size

    def _batches(self) -> list[list[int]]:
        groups: dict[tuple[int, int], list[int]] = {}
        for i in self.order:
            groups.setdefault(self.sizes[i], []).append(i)
        n = self.batch_size
        return [g[k : k + n] for g in groups.values() for k in range(0, len(g), n)]

    def __iter__(self):
        return iter(self._batches())

    def __len__(self) -> int:
        return len(self._batches())


class _Remaining(Dataset):
    """`dataset` with the images in `done` left unread (their items hold no image)."""

    def __init__(self, dataset: Dataset, done: set[int]) -> None:
        self.dataset, self.done = dataset, done

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, i: int) -> dict:
        if i in self.done:
            return {"image": None, "index": i, "name": self.dataset.names[i]}  # dropped
        return self.dataset[i]


class RestorationDataModule(L.LightningDataModule):
    """Images for `test` (clean, to be degraded) or `predict` (measurements y, no ground truth).

    `skip(indices)` leaves out images restored by an earlier run in the job's folder: every
    process still sees its whole share of batches (a batch may come out empty), so that the
    sharing and the end-of-loop merge are those of a fresh run.

    `root: null` means the built-in demo folder. `list_file` is a path or the name of a list
    that ships with rnsf; `split` (`val` | `test`, with `val_images`) keeps one of two disjoint
    index ranges; `num_images`, `expected` and `source` describe a benchmark set;
    `labels_file` gives the images' classes (see `ImageFolder`). `batch_size="auto"` is resolved
    by the job from the device (`rnsf.denoisers.memory`) before the first batch. With
    `resize: none` and
    `batch_size` > 1, images of different sizes are batched by size (`SizeBatches`).
    """

    def __init__(
        self,
        name: str = "folder",
        root: str | None = None,
        image_size: int | None = 256,
        resize: str = "center_crop",
        interpolation: str = "bilinear",
        list_file: str | None = None,
        limit: int | None = None,
        batch_size: int | str = 1,
        num_workers: int = 0,
        measurements: bool = False,
        num_images: int | None = None,
        expected: str | None = None,
        source: str | None = None,
        alpha: str = "white",
        split: str | None = None,
        val_images: int | None = None,
        labels_file: str | None = None,
    ) -> None:
        super().__init__()
        self.name = name
        self.batch_size, self.num_workers = batch_size, num_workers
        self.measurements = measurements
        self.dataset = ImageFolder(
            Path(root) if root else DEMO_DIR,
            image_size=image_size,
            resize=resize,
            interpolation=interpolation,
            list_file=list_file,
            limit=limit,
            num_images=num_images,
            expected=expected,
            source=source,
            alpha=alpha,
            split=split,
            val_images=val_images,
            labels_file=labels_file,
        )
        if batch_size != "auto" and (not isinstance(batch_size, int) or batch_size < 1):
            from rnsf.utils.errors import UserError

            raise UserError(f"dataset.batch_size must be auto or >= 1, got {batch_size!r}")
        self.done: set[int] = set()

    def skip(self, indices: set[int]) -> None:
        """Leave out the images at these positions of the dataset (restored by an earlier
        run)."""
        self.done = set(indices)

    #: images of different sizes go in different batches (`SizeBatches`)
    batches_by_size = True

    def _loader(self) -> DataLoader:
        data = _Remaining(self.dataset, self.done) if self.done else self.dataset
        if self.dataset.resize == "none" and self.batch_size > 1:
            sampler = self._sampler()
            order = list(sampler) if sampler is not None else range(len(self.dataset))
            sizes = self.dataset.sizes()
            if len(set(sizes)) > 1:
                return DataLoader(
                    data,
                    batch_sampler=SizeBatches(order, sizes, self.batch_size),
                    num_workers=self.num_workers,
                    collate_fn=collate,
                    persistent_workers=self.num_workers > 0,
                )
        return DataLoader(
            data,
            batch_size=self.batch_size,
            shuffle=False,
            sampler=self._sampler(),
            num_workers=self.num_workers,
            collate_fn=collate,
            persistent_workers=self.num_workers > 0,
        )

    def _sampler(self) -> UnrepeatedDistributedSampler | None:
        """Under DDP, rank r takes images r, r + world_size, …: each image exactly once (Lightning's
        own sampler for `test` pads the last round with repeats)."""
        trainer = self.trainer
        if trainer is None or trainer.world_size < 2:
            return None
        return UnrepeatedDistributedSampler(
            self.dataset, num_replicas=trainer.world_size, rank=trainer.global_rank, shuffle=False
        )

    def test_dataloader(self) -> DataLoader:
        return self._loader()

    def predict_dataloader(self) -> DataLoader:
        return self._loader()

    def describe(self) -> dict:
        ds = self.dataset
        return {
            "dataset": self.name,
            "root": str(ds.root),
            "image_size": ds.image_size,
            "resize": ds.resize,
            "interpolation": ds.interpolation,
            "alpha": ds.alpha,
            "list_file": ds.list_file,
            "labels_file": ds.labels_file,
            "num_images": ds.num_images,
            "limit": ds.limit,
            "split": ds.split,
            "split_range": list(ds.split_range) if ds.split_range else None,
        }
