"""Inpainting: A keeps the pixels where the mask is 1 (all channels of a pixel together).

y has x's shape with zeros at missing pixels, so A = Aᵀ = A† = diag(mask) and the SVD is
V = I, U = diag(mask), singulars = mask.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from rnsf.operators.base import LinearOperator, SVDOperator
from rnsf.utils.errors import UserError
from rnsf.utils.random import rand


class Inpainting(SVDOperator):
    """Inpainting with a fixed mask of shape (1 or B, 1, H, W), 1 = kept."""

    def __init__(self, mask: torch.Tensor) -> None:
        self.mask = mask

    def _mask(self, like: torch.Tensor) -> torch.Tensor:
        if self.mask.shape[-2:] != like.shape[-2:]:
            raise ValueError(
                f"mask of size {tuple(self.mask.shape[-2:])} does not match the image size "
                f"{tuple(like.shape[-2:])}"
            )
        return self.mask.to(device=like.device, dtype=like.dtype)

    def A(self, x: torch.Tensor) -> torch.Tensor:
        return self._mask(x) * x

    A_adjoint = A_pinv = U = Ut = A

    def V(self, z: torch.Tensor) -> torch.Tensor:
        return z

    Vt = V

    def singulars(self, like: torch.Tensor) -> torch.Tensor:
        return self._mask(like)

    def add_noise(self, y: torch.Tensor, sigma: float, noise: torch.Tensor) -> torch.Tensor:
        return super().add_noise(y, sigma, self._mask(y) * noise)

    def measurement_from_image(self, image: torch.Tensor) -> torch.Tensor:
        return self.A(image)


class MaskFactory(LinearOperator):
    """An inpainting task whose mask is made per batch (`bind`); not usable before that."""

    def mask(self, height: int, width: int, generators: Sequence[torch.Generator]) -> torch.Tensor:
        raise NotImplementedError

    def bind(self, x_shape, generators) -> Inpainting:
        return Inpainting(self.mask(x_shape[-2], x_shape[-1], generators))

    def A(self, x):  # pragma: no cover - guarded misuse
        raise RuntimeError(f"{type(self).__name__} must be bound to a batch first (call .bind)")

    A_adjoint = A_pinv = A


class BoxInpainting(MaskFactory):
    """A centred box of `size` × the image side (fraction in (0, 1)) is missing."""

    def __init__(self, size: float = 0.5) -> None:
        if not 0 < size < 1:
            raise ValueError(f"box size is a fraction of the image side in (0, 1), got {size}")
        self.size = float(size)

    def mask(self, height, width, generators):
        mask = torch.ones(1, 1, height, width)
        bh, bw = round(self.size * height), round(self.size * width)
        top, left = (height - bh) // 2, (width - bw) // 2
        mask[..., top : top + bh, left : left + bw] = 0
        return mask


class RandomInpainting(MaskFactory):
    """Each pixel is kept with probability `keep` (0.5 as DDRM's random mask), drawn from the
    image's own generator, so the mask of an image depends only on (seed, image index)."""

    def __init__(self, keep: float = 0.5) -> None:
        if not 0 < keep <= 1:
            raise ValueError(f"keep must be a fraction in (0, 1], got {keep}")
        self.keep = float(keep)

    def mask(self, height, width, generators):
        device = generators[0].device if generators else "cpu"
        return (rand((1, height, width), generators, device) < self.keep).float()


class FileInpainting(MaskFactory):
    """A mask from a file: an image (white = kept) or a .npy array (non-zero = kept), resized
    to the image size with nearest-neighbour sampling when it differs."""

    def __init__(self, path: str) -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise UserError(
                f"mask file {self.path} does not exist; set task.operator.path to an image or "
                ".npy mask"
            )
        if self.path.suffix == ".npy":
            array = np.load(self.path)
        else:
            from PIL import Image

            array = np.asarray(Image.open(self.path).convert("L")) > 127
        array = np.asarray(array, dtype=np.float32)
        if array.ndim == 3:
            array = array[..., 0] if array.shape[-1] in (1, 3) else array[0]
        self._mask = torch.from_numpy((array != 0).astype(np.float32))[None, None]

    def mask(self, height, width, generators):
        if self._mask.shape[-2:] != (height, width):
            return torch.nn.functional.interpolate(self._mask, size=(height, width), mode="nearest")
        return self._mask
