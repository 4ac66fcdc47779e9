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

Which coordinate has rank p depends on how the sort breaks near-ties, and upstream sorts a float32
grid on the GPU. `deblur_cuda_order.npz` (package data, `operators/data/README.md`) holds that
order and the sorted values, measured on one GPU, for both kernels at 64, 128 and 256 pixels;
the operator uses it whenever the image size matches. Other sizes sort the float64 grid here
(stable, by row-major position) and warn once that the pairing is not upstream's GPU order.

DDNM+ (`task.sigma > 0`) weighs the noise with `_singulars_orig`, the products of the
*unthresholded* 1-D singular values (DDNM `svd_operators.py` L1016-1092), indexed by `_perm`
exactly like the spectral coordinates they multiply: each coordinate meets its own 2-D singular
value, the same in the three channels, with no tiling (`ddnm_plus_singulars`).
"""

from __future__ import annotations

import hashlib
import io
import warnings
from functools import cache
from importlib import resources

import numpy as np
import torch

from rnsf.operators.base import SVDOperator
from rnsf.operators.separable import SeparableOperator

#: upstream's GPU order of the sorted singular values (operators/data/README.md)
CUDA_ORDER_FILE = "deblur_cuda_order.npz"
CUDA_ORDER_SHA256 = "6620544896cd483a0444bf32141b1962e444e30f452e1077ada6924b74b2810c"
#: the table's kernel names: (taps, σ) of DDRM/DDNM's and SSD's deblurring
CUDA_ORDER_KERNELS = {(5, 10.0): "ddrm5", (9, 15.0): "ssd9"}


@cache
def cuda_order_table() -> dict[str, np.ndarray]:
    """The shipped table of upstream's GPU order (read once, its SHA-256 checked)."""
    data = resources.files("rnsf.operators").joinpath("data", CUDA_ORDER_FILE).read_bytes()
    return load_cuda_order(data)


def load_cuda_order(data: bytes) -> dict[str, np.ndarray]:
    """The arrays of a `deblur_cuda_order.npz` file's bytes, refused unless their SHA-256 is the
    recorded one."""
    digest = hashlib.sha256(data).hexdigest()
    if digest != CUDA_ORDER_SHA256:
        raise RuntimeError(
            f"rnsf/operators/data/{CUDA_ORDER_FILE} has sha256 {digest}, expected "
            f"{CUDA_ORDER_SHA256}: the file is damaged; reinstall rnsf"
        )
    with np.load(io.BytesIO(data)) as npz:
        return {key: npz[key] for key in npz.files}


def sampled_gaussian(taps: int, sigma: float) -> torch.Tensor:
    """exp(−x² / 2σ²) at x = −taps//2 … taps//2, normalised (upstream's kernel builder)."""
    x = torch.arange(taps, dtype=torch.float64) - taps // 2
    k = torch.exp(-(x**2) / (2 * sigma**2))
    return k / k.sum()


class UpstreamDeblurring(SeparableOperator):
    """The upstream `Deblurring` SVD operator for 3-channel images.

    `deblur_gauss_ddrm`: 5 taps, σ = 10 (DDRM/DDNM runners); `deblur_gauss_ssd`: 9 taps,
    σ = 15 (SSD `DeblurGaussOperator`). The sorted singular values and their order are
    upstream's GPU ones (`cuda_order`) at the sizes of the shipped table; elsewhere ties are
    broken by row-major position (a stable sort of the float64 grid), with a one-time warning.
    """

    channels = 3

    def __init__(self, taps: int = 5, sigma: float = 10.0, zero_below: float = 3e-2) -> None:
        super().__init__(zero_below)
        self.taps, self.sigma = int(taps), float(sigma)
        self._tiled: dict[tuple, torch.Tensor] = {}
        self._orig: dict[tuple, torch.Tensor] = {}
        self._warned = False

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

    def cuda_order(self, n: int) -> tuple[torch.Tensor, torch.Tensor] | None:
        """(sorted singular values, `_perm`) of upstream's GPU build for n×n images, from the
        shipped table, or None when the table has no entry for this kernel and size."""
        name = CUDA_ORDER_KERNELS.get((self.taps, self.sigma))
        if name is None or self.zero_below != 3e-2:
            return None
        table = cuda_order_table()
        key = f"{name}_{n}"
        if f"{key}_perm" not in table:
            return None
        perm = torch.from_numpy(table[f"{key}_perm"].astype(np.int64))
        return torch.from_numpy(table[f"{key}_singulars"]), perm

    def sorted_singulars(self, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(`_singulars`, `_perm`): the thresholded 2-D singular values in descending order and
        the row-major grid position of each, upstream's GPU order where the table has it."""
        table = self.cuda_order(n)
        if table is not None:
            return table
        if not self._warned:
            warnings.warn(
                f"{type(self).__name__}({self.taps} taps, sigma {self.sigma:g}) at {n}x{n}: "
                "no recorded upstream GPU order for this size, so singular values are paired "
                "with spectral coordinates in a stable float64 sort, not upstream's GPU order "
                "(recorded for 64, 128 and 256 pixels); results are not comparable with "
                "published deblurring numbers",
                stacklevel=3,
            )
            self._warned = True
        s = self.factors(n, n, torch.empty(0, dtype=torch.float64))[0].s
        grid = (s[:, None] * s[None, :]).flatten()
        return torch.sort(grid, descending=True, stable=True)

    def singulars(self, like: torch.Tensor) -> torch.Tensor:
        height, width = like.shape[-2:]
        key = (height, width, like.device, like.dtype)
        if key not in self._tiled:
            ordered, perm = self.sorted_singulars(height)
            n = perm.numel()
            rank = torch.empty_like(perm)
            rank[perm] = torch.arange(n)
            c = torch.arange(self.channels)[:, None]
            tiled = ordered[(self.channels * rank[None, :] + c) % n]
            self._tiled[key] = tiled.view(self.channels, height, width).to(like.device, like.dtype)
        return self._tiled[key]

    def ddnm_plus_singulars(self, like: torch.Tensor) -> torch.Tensor:
        """`_singulars_orig`: products of the unthresholded 1-D singular values, each at its own
        grid position and the same in every channel (DDNM `Deblurring.Lambda`/`Lambda_noise`)."""
        height, width = like.shape[-2:]
        key = (height, width, like.device, like.dtype)
        if key not in self._orig:
            sh, sw = (torch.linalg.svdvals(self.matrix(n)) for n in (height, width))
            grid = sh[:, None] * sw[None, :]
            self._orig[key] = grid[None].to(like.device, like.dtype)
        return self._orig[key]

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
