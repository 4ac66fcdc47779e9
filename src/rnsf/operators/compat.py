"""Benchmark-compatible Gaussian deblurring: the upstream `Deblurring` operator, quirks included.

DDRM (`functions/svd_replacement.py` L397-464), DDNM and SSD (`functions/svd_operators.py`
`Deblurring`) build their Gaussian blur as an SVD with three quirks (specs D3 / D1 / D15), and the
published deblurring numbers are numbers for that operator:

1. the Toeplitz loop runs over taps i − K//2 … i + K//2 − 1, so an odd kernel loses its last
   tap (and the border is zero-padded);
2. 1-D singular values below 3e-2 are zeroed;
3. the 2-D singular values s_k s_l are sorted in descending order and *tiled* over the three
   channels, while the spectral coefficients are laid out pixel-major, channel-minor: the
   coefficient of rank p in channel c is scaled by s_sorted[(3 p + c) mod HW].

So A = U diag(s_tiled) Vᵀ is not a convolution, but it is linear, self-consistent and exactly
what produced the papers' y. The clean operator is `GaussianBlur` (`task=deblur_gauss`).
"""

from __future__ import annotations

import torch

from rnsf.operators.base import SVDOperator
from rnsf.operators.separable import SeparableOperator


def sampled_gaussian(taps: int, sigma: float) -> torch.Tensor:
    """exp(−x² / 2σ²) at x = −taps//2 … taps//2, normalised (upstream's kernel builder)."""
    x = torch.arange(taps, dtype=torch.float64) - taps // 2
    k = torch.exp(-(x**2) / (2 * sigma**2))
    return k / k.sum()


class UpstreamDeblurring(SeparableOperator):
    """The upstream `Deblurring` SVD operator for 3-channel images.

    `deblur_gauss_ddrm`: 5 taps, σ = 10 (DDRM/DDNM runners); `deblur_gauss_ssd`: 9 taps,
    σ = 15 (SSD `DeblurGaussOperator`). Ties among the sorted singular values are broken by
    row-major position (a stable sort, as CUDA's radix sort upstream).
    """

    channels = 3

    def __init__(self, taps: int = 5, sigma: float = 10.0, zero_below: float = 3e-2) -> None:
        super().__init__(zero_below)
        self.taps, self.sigma = int(taps), float(sigma)
        self._tiled: dict[tuple, torch.Tensor] = {}

    def kernel(self) -> torch.Tensor:
        return sampled_gaussian(self.taps, self.sigma)

    def matrix(self, n: int) -> torch.Tensor:
        k, half = self.kernel(), self.taps // 2
        rows = torch.zeros(n, n, dtype=torch.float64)
        for i in range(n):
            for j in range(i - half, i + half):  # upstream's range: the last tap is dropped
                if 0 <= j < n:
                    rows[i, j] = k[j - i + half]
        return rows

    def singulars(self, like: torch.Tensor) -> torch.Tensor:
        height, width = like.shape[-2:]
        key = (height, width, like.device, like.dtype)
        if key not in self._tiled:
            fh, fw = self.factors(height, width, like)
            grid = (fh.s[:, None].double() * fw.s[None, :].double()).flatten()
            ordered, perm = torch.sort(grid, descending=True, stable=True)
            n = grid.numel()
            rank = torch.empty_like(perm)
            rank[perm] = torch.arange(n, device=perm.device)
            c = torch.arange(self.channels, device=perm.device)[:, None]
            tiled = ordered[(self.channels * rank[None, :] + c) % n]
            self._tiled[key] = tiled.view(self.channels, height, width).to(like.dtype)
        return self._tiled[key]

    # A, Aᵀ and A† through the (tiled) SVD, not the separable matrices
    A = SVDOperator.A
    A_adjoint = SVDOperator.A_adjoint
    A_pinv = SVDOperator.A_pinv

    def check_image_size(self, height: int, width: int) -> None:
        if height != width:
            raise ValueError(
                f"image size {height}x{width}: the upstream deblurring operator needs square "
                "images; set dataset.image_size"
            )
