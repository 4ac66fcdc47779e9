"""An endless stream of random multi-scale crops of the training photos."""

from __future__ import annotations

import numpy as np
import torch
from torch.nn import functional as F
from torch.utils.data import IterableDataset, get_worker_info

from rnsf.data.photos import TRAIN_PHOTOS, load_photo


class RandomPhotoCrops(IterableDataset):
    """Random crops in [-1, 1]: a photo chosen with probability proportional to its area, a
    region of `crop_size / scale` pixels with `scale ~ U(min_scale, max_scale)`, resized to
    `crop_size` (antialiased bilinear), then a random flip and 90° rotation."""

    def __init__(
        self,
        crop_size: int = 32,
        min_scale: float = 0.25,
        max_scale: float = 1.0,
        photos: tuple[str, ...] = TRAIN_PHOTOS,
        seed: int = 0,
    ) -> None:
        self.crop_size, self.min_scale, self.max_scale, self.seed = (
            crop_size,
            min_scale,
            max_scale,
            seed,
        )
        self.images = [torch.from_numpy(load_photo(p).copy()).permute(2, 0, 1) for p in photos]
        areas = np.array([im.shape[1] * im.shape[2] for im in self.images], dtype=np.float64)
        self.weights = areas / areas.sum()

    def sample(self, rng: np.random.Generator) -> torch.Tensor:
        image = self.images[rng.choice(len(self.images), p=self.weights)]
        h, w = image.shape[1:]
        scale = rng.uniform(self.min_scale, self.max_scale)
        side = min(round(self.crop_size / scale), h, w)
        top, left = rng.integers(0, h - side + 1), rng.integers(0, w - side + 1)
        patch = image[:, top : top + side, left : left + side].float()[None] / 127.5 - 1.0
        if side != self.crop_size:
            patch = F.interpolate(
                patch, size=self.crop_size, mode="bilinear", antialias=True, align_corners=False
            )
        patch = patch[0]
        if rng.random() < 0.5:
            patch = patch.flip(-1)
        return torch.rot90(patch, int(rng.integers(0, 4)), dims=(1, 2)).clamp(-1, 1).contiguous()

    def __iter__(self):
        info = get_worker_info()
        rng = np.random.default_rng([self.seed, info.id if info else 0])
        while True:
            yield self.sample(rng)
