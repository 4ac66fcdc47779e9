"""Walsh–Hadamard compressed sensing (DDNM/DDRM `WalshHadamardCS`, tasks cs2 / cs4).

Per channel, the orthonormal Walsh–Hadamard transform of the H·W pixels is permuted by a fixed
random permutation, and the first H·W / ratio coefficients are measured. V = (permuted WHT)ᵀ,
U = I, singular values 1 on the measured coefficients. y has shape (B, C, H·W / ratio).
"""

from __future__ import annotations

import math

import torch

from rnsf.operators.base import SVDOperator


def fwht(x: torch.Tensor) -> torch.Tensor:
    """Orthonormal fast Walsh–Hadamard transform over the last dimension (a power of two);
    its own inverse."""
    n = x.shape[-1]
    lead = x.shape[:-1]
    h = 1
    while h < n:
        x = x.reshape(*lead, n // (2 * h), 2, h)
        a, b = x[..., 0, :], x[..., 1, :]
        x = torch.stack((a + b, a - b), dim=-2)
        h *= 2
    return x.reshape(*lead, n) / math.sqrt(n)


class WalshHadamardCS(SVDOperator):
    """Keep 1/`ratio` of the permuted Walsh–Hadamard coefficients of each channel. The
    permutation comes from a generator seeded with `perm_seed` (upstream draws it from the
    run's global RNG, so its exact permutation cannot be replayed)."""

    def __init__(self, ratio: int = 4, perm_seed: int = 1234) -> None:
        if int(ratio) != ratio or ratio < 1:
            raise ValueError(f"compressed-sensing ratio must be a positive integer, got {ratio}")
        self.ratio, self.perm_seed = int(ratio), int(perm_seed)
        self._perms: dict[tuple, tuple[torch.Tensor, torch.Tensor]] = {}

    def check_image_size(self, height: int, width: int) -> None:
        n = height * width
        if height != width or n & (n - 1) or n % self.ratio:
            raise ValueError(
                f"image size {height}x{width}: Walsh-Hadamard sensing needs square images whose "
                f"H*W is a power of two divisible by {self.ratio}; "
                "set dataset.image_size to a power of two"
            )

    def _perm(self, n: int, device) -> tuple[torch.Tensor, torch.Tensor]:
        key = (n, device)
        if key not in self._perms:
            perm = torch.randperm(n, generator=torch.Generator().manual_seed(self.perm_seed))
            inverse = torch.empty_like(perm)
            inverse[perm] = torch.arange(n)
            self._perms[key] = (perm.to(device), inverse.to(device))
        return self._perms[key]

    def Vt(self, x: torch.Tensor) -> torch.Tensor:
        flat = x.flatten(-2)
        perm, _ = self._perm(flat.shape[-1], x.device)
        return fwht(flat)[..., perm].view_as(x)

    def V(self, z: torch.Tensor) -> torch.Tensor:
        flat = z.flatten(-2)
        _, inverse = self._perm(flat.shape[-1], z.device)
        return fwht(flat[..., inverse]).view_as(z)

    def singulars(self, like: torch.Tensor) -> torch.Tensor:
        height, width = like.shape[-2:]
        s = torch.zeros(height * width, device=like.device, dtype=like.dtype)
        s[: height * width // self.ratio] = 1
        return s.view(height, width)

    def Ut(self, y: torch.Tensor) -> torch.Tensor:
        n = y.shape[-1] * self.ratio
        side = math.isqrt(n)
        padded = torch.nn.functional.pad(y, (0, n - y.shape[-1]))
        return padded.view(*y.shape[:-1], side, n // side)

    def U(self, z: torch.Tensor) -> torch.Tensor:
        flat = z.flatten(-2)
        return flat[..., : flat.shape[-1] // self.ratio]

    def x_shape(self, y_shape):
        n = y_shape[-1] * self.ratio
        side = math.isqrt(n)
        return (*y_shape[:-1], side, n // side)

    def to_image(self, y: torch.Tensor) -> torch.Tensor:
        return self.A_pinv(y)
