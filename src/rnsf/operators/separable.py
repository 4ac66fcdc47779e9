"""Separable operators A x = M_h X M_wᵀ (per channel) built from two small 1-D matrices.

Super-resolution (bicubic and block average) and Gaussian blur are of this form. The 2-D SVD is
the Kronecker product of the 1-D SVDs, so no dense (HW)×(HW) matrix is ever formed: V and U
are two small matmuls, and the singular values are the outer product s_h s_wᵀ, zero-padded to
the image grid for the null space.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from rnsf.operators.base import SVDOperator, full_float32


def sandwich(left: torch.Tensor, x: torch.Tensor, right: torch.Tensor) -> torch.Tensor:
    """left @ x @ right in full float32 (no TF32 on a GPU, `full_float32`)."""
    with full_float32():
        return left @ x @ right


@dataclass(frozen=True)
class Factor1D:
    """The thresholded SVD of one 1-D matrix M (m × n, m ≤ n), and its two direct maps."""

    M: torch.Tensor  # (m, n): U diag(s) V[:, :m]ᵀ after thresholding
    M_pinv: torch.Tensor  # (n, m)
    U: torch.Tensor  # (m, m)
    V: torch.Tensor  # (n, n)
    s: torch.Tensor  # (n,), zero beyond m and where thresholded

    @classmethod
    def from_matrix(cls, matrix: torch.Tensor, zero_below: float) -> Factor1D:
        m, n = matrix.shape
        U, s, Vh = torch.linalg.svd(matrix.double(), full_matrices=True)
        s = torch.where(s >= zero_below, s, torch.zeros_like(s))
        V = Vh.T
        inv = torch.where(s > 0, 1 / torch.where(s > 0, s, 1), 0)
        return cls(
            M=(U * s) @ V[:, :m].T,
            M_pinv=(V[:, :m] * inv) @ U.T,
            U=U,
            V=V,
            s=torch.cat([s, s.new_zeros(n - m)]),
        )

    def to(self, device: torch.device, dtype: torch.dtype) -> Factor1D:
        return Factor1D(*(t.to(device=device, dtype=dtype) for t in vars(self).values()))


class SeparableOperator(SVDOperator):
    """Base class: subclasses give the 1-D matrix for an axis of length n via `matrix(n)`.

    1-D singular values below `zero_below` are set to zero, and A itself is the thresholded
    matrix (as upstream DDRM/DDNM do), so A A† A = A holds exactly and A† is stable.
    """

    def __init__(self, zero_below: float = 3e-2) -> None:
        self.zero_below = zero_below
        self._factors: dict[tuple, tuple[Factor1D, Factor1D]] = {}
        self._exact: dict[int, Factor1D] = {}

    def matrix(self, n: int) -> torch.Tensor:
        """The (m × n) float64 1-D matrix for an axis of length n."""
        raise NotImplementedError

    def out_size(self, n: int) -> int:
        return n

    def in_size(self, m: int) -> int:
        return m

    def x_shape(self, y_shape):
        *lead, h, w = y_shape
        return (*lead, self.in_size(h), self.in_size(w))

    def factors(self, height: int, width: int, like: torch.Tensor) -> tuple[Factor1D, Factor1D]:
        """The (row, column) factors for an image size, cached per size, device and dtype."""
        key = (height, width, like.device, like.dtype)
        if key not in self._factors:
            for n in {height, width}:
                if n not in self._exact:
                    self._exact[n] = Factor1D.from_matrix(self.matrix(n), self.zero_below)
            self._factors[key] = (
                self._exact[height].to(like.device, like.dtype),
                self._exact[width].to(like.device, like.dtype),
            )
        return self._factors[key]

    def _x_factors(self, x: torch.Tensor) -> tuple[Factor1D, Factor1D]:
        return self.factors(x.shape[-2], x.shape[-1], x)

    def _y_factors(self, y: torch.Tensor) -> tuple[Factor1D, Factor1D]:
        return self.factors(self.in_size(y.shape[-2]), self.in_size(y.shape[-1]), y)

    # direct maps: two small matmuls each
    def A(self, x: torch.Tensor) -> torch.Tensor:
        fh, fw = self._x_factors(x)
        return sandwich(fh.M, x, fw.M.T)

    def A_adjoint(self, y: torch.Tensor) -> torch.Tensor:
        fh, fw = self._y_factors(y)
        return sandwich(fh.M.T, y, fw.M)

    def A_pinv(self, y: torch.Tensor) -> torch.Tensor:
        fh, fw = self._y_factors(y)
        return sandwich(fh.M_pinv, y, fw.M_pinv.T)

    # the SVD view
    def Vt(self, x: torch.Tensor) -> torch.Tensor:
        fh, fw = self._x_factors(x)
        return sandwich(fh.V.T, x, fw.V)

    def V(self, z: torch.Tensor) -> torch.Tensor:
        fh, fw = self._x_factors(z)
        return sandwich(fh.V, z, fw.V.T)

    def Ut(self, y: torch.Tensor) -> torch.Tensor:
        fh, fw = self._y_factors(y)
        z = sandwich(fh.U.T, y, fw.U)
        H, W = fh.V.shape[0], fw.V.shape[0]
        return torch.nn.functional.pad(z, (0, W - z.shape[-1], 0, H - z.shape[-2]))

    def U(self, z: torch.Tensor) -> torch.Tensor:
        fh, fw = self._x_factors(z)
        m, k = fh.U.shape[0], fw.U.shape[0]
        return sandwich(fh.U, z[..., :m, :k], fw.U.T)

    def singulars(self, like: torch.Tensor) -> torch.Tensor:
        fh, fw = self._x_factors(like)
        return fh.s[:, None] * fw.s[None, :]


def keys_cubic(x: torch.Tensor, a: float = -0.5) -> torch.Tensor:
    """Keys' cubic convolution kernel (a = -0.5 is the "bicubic" of DDRM, DPS and SSD)."""
    x = x.abs()
    near = (a + 2) * x**3 - (a + 3) * x**2 + 1
    far = a * x**3 - 5 * a * x**2 + 8 * a * x - 4 * a
    return torch.where(x <= 1, near, torch.where(x < 2, far, torch.zeros_like(x)))


class BicubicSR(SeparableOperator):
    """Bicubic downsampling by an integer factor: the `SRConv` matrix of DDRM/DDNM/SSD, which is
    bit-identical to DPS's `Resizer` (specs: upstream-ddrm-dps-ssd §1.7 item 7).

    4·factor taps of the a = -0.5 Keys kernel at x_i = (i - 2·factor + 0.5)/factor, normalised
    to sum 1; output row r is centred on input i = factor//2 + r·factor and uses inputs
    i - 2·factor … i + 2·factor - 1, reflected symmetrically at the border (j < 0 → -j-1,
    j ≥ n → 2n-1-j). 1-D singular values below 3e-2 are zeroed, as upstream (none are for
    ×2/×4/×8 at 64 or 256 pixels).
    """

    def __init__(self, factor: int, zero_below: float = 3e-2) -> None:
        super().__init__(zero_below)
        if int(factor) != factor or factor < 1:
            raise ValueError(f"SR factor must be a positive integer, got {factor}")
        self.factor = int(factor)

    def kernel(self) -> torch.Tensor:
        f = self.factor
        taps = (torch.arange(4 * f, dtype=torch.float64) - 2 * f + 0.5) / f
        k = keys_cubic(taps)
        return k / k.sum()

    def matrix(self, n: int) -> torch.Tensor:
        f, k = self.factor, self.kernel()
        rows = torch.zeros(n // f, n, dtype=torch.float64)
        for r in range(n // f):
            centre = f // 2 + r * f
            for tap, j in enumerate(range(centre - 2 * f, centre + 2 * f)):
                j = -j - 1 if j < 0 else (2 * n - 1 - j if j >= n else j)
                rows[r, j] += k[tap]
        return rows

    def out_size(self, n: int) -> int:
        return n // self.factor

    def in_size(self, m: int) -> int:
        return m * self.factor

    def check_image_size(self, height: int, width: int) -> None:
        _check_divisible(height, width, self.factor)


class AverageSR(SeparableOperator):
    """Block-average downsampling (DDNM's `sr_averagepooling`): A = avg_pool2d(·, factor) and
    A† = nearest-neighbour upsampling."""

    def __init__(self, factor: int) -> None:
        super().__init__(zero_below=0.0)
        if int(factor) != factor or factor < 1:
            raise ValueError(f"SR factor must be a positive integer, got {factor}")
        self.factor = int(factor)

    def matrix(self, n: int) -> torch.Tensor:
        f = self.factor
        return torch.kron(torch.eye(n // f, dtype=torch.float64), torch.full((1, f), 1.0 / f))

    def A(self, x: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.avg_pool2d(x, self.factor)

    def A_pinv(self, y: torch.Tensor) -> torch.Tensor:
        f = self.factor
        return y.repeat_interleave(f, dim=-2).repeat_interleave(f, dim=-1)

    def A_adjoint(self, y: torch.Tensor) -> torch.Tensor:
        return self.A_pinv(y) / self.factor**2

    def out_size(self, n: int) -> int:
        return n // self.factor

    def in_size(self, m: int) -> int:
        return m * self.factor

    def check_image_size(self, height: int, width: int) -> None:
        _check_divisible(height, width, self.factor)


class GaussianBlur(SeparableOperator):
    """A clean separable Gaussian blur: a normalised, symmetric kernel of `kernel_size` taps
    with standard deviation `sigma` pixels, reflect padding at the border (edge not repeated).

    1-D singular values below `zero_below` are zeroed and, by default, A is exactly that
    truncated operator, so A A† A = A holds and A† is stable. `exact_forward: true` applies
    the untruncated blur in A (the measurement of DPS's protocol: a depthwise convolution after
    `ReflectionPad2d`) while A† and the SVD keep the truncation.
    """

    def __init__(
        self,
        sigma: float = 3.0,
        kernel_size: int = 19,
        zero_below: float = 3e-2,
        exact_forward: bool = False,
    ) -> None:
        super().__init__(zero_below)
        if kernel_size % 2 == 0 or kernel_size < 1:
            raise ValueError(f"kernel_size must be odd and positive, got {kernel_size}")
        self.sigma, self.kernel_size = float(sigma), int(kernel_size)
        self.exact_forward = bool(exact_forward)
        self._exact_matrices: dict[tuple, tuple[torch.Tensor, torch.Tensor]] = {}

    def kernel(self) -> torch.Tensor:
        x = torch.arange(self.kernel_size, dtype=torch.float64) - self.kernel_size // 2
        k = torch.exp(-(x**2) / (2 * self.sigma**2))
        return k / k.sum()

    def matrix(self, n: int) -> torch.Tensor:
        k, half = self.kernel(), self.kernel_size // 2
        if half >= n:
            raise ValueError(f"blur kernel of {self.kernel_size} taps is too large for {n} pixels")
        rows = torch.zeros(n, n, dtype=torch.float64)
        for i in range(n):
            for tap in range(self.kernel_size):
                j = i + tap - half
                j = -j if j < 0 else (2 * n - 2 - j if j >= n else j)  # reflect, edge not repeated
                rows[i, j] += k[tap]
        return rows

    def A(self, x: torch.Tensor) -> torch.Tensor:
        if not self.exact_forward:
            return super().A(x)
        key = (x.shape[-2], x.shape[-1], x.device, x.dtype)
        if key not in self._exact_matrices:
            self._exact_matrices[key] = tuple(
                self.matrix(n).to(device=x.device, dtype=x.dtype) for n in key[:2]
            )
        mh, mw = self._exact_matrices[key]
        return sandwich(mh, x, mw.T)

    def check_image_size(self, height: int, width: int) -> None:
        if self.kernel_size // 2 >= min(height, width):
            raise ValueError(
                f"image size {height}x{width} is smaller than the blur kernel "
                f"({self.kernel_size} taps); use larger images or task.operator.kernel_size"
            )


def _check_divisible(height: int, width: int, factor: int) -> None:
    if height % factor or width % factor:
        raise ValueError(
            f"image size {height}x{width} is not divisible by the SR factor {factor}; "
            f"use dataset.image_size divisible by {factor} or a smaller factor"
        )
