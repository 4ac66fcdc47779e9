"""Operators restricted to one window of a tiled restoration.

`restrict(operator, window, height, width)` returns a `WindowProblem`: the operator that the
method sees on the window, and the window's measurement taken from the whole image's y (and
the part of the image restored so far). For every supported operator, an x̂ on the window that
satisfies the window problem, with the known bands kept, satisfies the whole-image measurement on
every measured pixel the window owns, so the stitched image is consistent (see `MaskShift`).

- Pointwise operators (colorization, inpainting with its mask cropped, denoising) act pixel by
  pixel: the window's operator is the same one (or the cropped mask), y is cropped.
- Separable operators (bicubic and block-average SR, Gaussian blur) mix neighbouring pixels,
  so a measured pixel near a window border depends on pixels outside the window: its kernel
  reaches `halo` pixels beyond the pixel (bicubic ×f: 2f; a blur of K taps: K//2). The window
  measures only the rows (and columns) of y whose kernel lies wholly inside it, taken from the
  operator's un-truncated 1-D matrix; rows reaching outside are left to a neighbouring window,
  which the overlap must make possible (`MaskShift.check`). The known bands are treated as
  constants: with the 1-D matrices restricted to the unknown rectangle (M_h', M_w'), the window's
  operator is X ↦ M_h' X M_w'ᵀ on the unknown part and y' = y_w − A_w(known part), so DDNM's
  projection makes the window exactly consistent, including the measured pixels whose kernel
  straddles the known/unknown border. 1-D singular values below the operator's `zero_below` are
  zeroed as for the whole image; where that truncates a window's matrix (a straddling row with
  only a few small taps in the unknown part, or the blur), that part of the row is not enforced
  (the halo effect, measured in the README).

Compressed sensing mixes every pixel with every other and is refused, as is any operator without
a registered restriction. Register one for your operator with `@restrict.register(MyOperator)`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import singledispatch

import torch

from rnsf.operators.base import LinearOperator
from rnsf.operators.colorization import Colorization
from rnsf.operators.compat import UpstreamDeblurring
from rnsf.operators.cs import WalshHadamardCS
from rnsf.operators.identity import Denoising
from rnsf.operators.inpainting import Inpainting
from rnsf.operators.separable import Factor1D, SeparableOperator
from rnsf.tiling.grid import Window
from rnsf.utils.errors import UserError


class NotTileable(UserError):
    """The operator has no restriction to a window."""


@dataclass
class WindowProblem:
    """The method's view of one window: `operator` acts on the window's pixels; the top
    `known_top` rows and left `known_left` columns are held at the stitched values (at most the
    window's known bands); `measurement` turns the whole image's y and the stitched output so
    far into the window's y."""

    operator: LinearOperator
    known_top: int
    known_left: int
    _measure: object = field(repr=False, default=None)

    def measurement(self, y: torch.Tensor, stitched: torch.Tensor) -> torch.Tensor:
        return self._measure(y, stitched)


def _pointwise_problem(operator, window: Window) -> WindowProblem:
    def crop(y, stitched):
        return y[..., window.rows, window.cols]

    return WindowProblem(operator, window.known_top, window.known_left, crop)


@singledispatch
def restrict(operator: LinearOperator, window: Window, height: int, width: int) -> WindowProblem:
    """The window problem of `operator` (bound to the batch) for `window` of a height × width
    image. Raises `NotTileable` for operators that are not local."""
    raise NotTileable(
        f"tiling needs an operator that acts locally, and {type(operator).__name__} has no "
        "window restriction; use tiling=none, or register one with rnsf.tiling.restrict.register"
    )


@restrict.register(WalshHadamardCS)
def _compressed_sensing(operator, window, height, width):
    raise NotTileable(
        "tiling needs an operator that acts locally, and compressed sensing (cs2, cs4) mixes every "
        "pixel with every other, so no window can be restored alone; use tiling=none"
    )


@restrict.register(Colorization)
@restrict.register(Denoising)
def _pointwise(operator, window, height, width):
    return _pointwise_problem(operator, window)


@restrict.register(Inpainting)
def _inpainting(operator, window, height, width):
    return _pointwise_problem(Inpainting(operator.mask[..., window.rows, window.cols]), window)


def band(operator: SeparableOperator, n: int) -> torch.Tensor:
    """The operator's un-truncated 1-D matrix for n pixels (cached on the operator)."""
    cache = operator.__dict__.setdefault("_tiling_bands", {})
    if n not in cache:
        cache[n] = operator.matrix(n)
    return cache[n]


#: singular-value threshold of a window's 1-D factors when the whole-image matrix keeps all of
#: its singular values (SR): low enough to enforce the rows that straddle the held band with a
#: few small taps (bicubic ×4: about 5e-3), which the margin keeps small
WINDOW_ZERO_BELOW = 1e-3


def window_zero_below(operator: SeparableOperator, n: int) -> float:
    """The operator's own threshold if it truncates the whole-image 1-D matrix (blur, whose
    small singular values would amplify noise), else `WINDOW_ZERO_BELOW` (no lower than 0)."""
    cache = operator.__dict__.setdefault("_tiling_thresholds", {})
    if n not in cache:
        matrix = band(operator, n)
        s = torch.linalg.svdvals(matrix)
        truncates = bool((s < operator.zero_below).any())
        cache[n] = operator.zero_below if truncates else min(operator.zero_below, WINDOW_ZERO_BELOW)
    return cache[n]


def kernel_width(matrix: torch.Tensor) -> int:
    """The widest span of non-zero entries in a row of a 1-D matrix (the kernel's support)."""
    nz = matrix != 0
    n = matrix.shape[1]
    first = nz.int().argmax(1)
    last = n - 1 - nz.flip(1).int().argmax(1)
    return int((last - first + 1)[nz.any(1)].max())


def margin(matrix: torch.Tensor) -> int:
    """Pixels at the inner edge of a known band that are redone rather than held: kernel width
    − 1, so that a measured pixel straddling the held band's edge lay wholly inside the earlier
    window (which made it consistent)."""
    return kernel_width(matrix) - 1


def _axis(matrix: torch.Tensor, start: int, length: int, known: int):
    """Rows of a 1-D matrix whose kernel lies inside [start, start + length): their indices, the
    rows on the window, and the same with the first `known` columns zeroed."""
    inside = matrix[:, start : start + length]
    outside = matrix.abs().sum(1) - inside.abs().sum(1)
    rows = torch.nonzero((outside == 0) & (inside.abs().sum(1) > 0)).flatten()
    full = inside[rows]
    unknown = full.clone()
    unknown[:, :known] = 0
    return rows, full, unknown


@restrict.register(SeparableOperator)
def _separable(operator, window, height, width):
    band_h, band_w = band(operator, height), band(operator, width)
    # the last kernel-width pixels of an earlier window touch measured pixels that it could not
    # see whole; they are redone here rather than held (the halo; see the module docstring)
    top = max(window.known_top - margin(band_h), 0) if window.known_top else 0
    left = max(window.known_left - margin(band_w), 0) if window.known_left else 0
    cache = operator.__dict__.setdefault("_tiling_windows", {})
    key = (height, width, window.top, window.left, window.height, window.width, top, left)
    if key not in cache:
        rows_h, full_h, unknown_h = _axis(band_h, window.top, window.height, top)
        rows_w, full_w, unknown_w = _axis(band_w, window.left, window.width, left)
        win_op = WindowSeparable(
            Factor1D.from_matrix(unknown_h, window_zero_below(operator, height)),
            Factor1D.from_matrix(unknown_w, window_zero_below(operator, width)),
        )
        cache[key] = (win_op, rows_h, rows_w, full_h, full_w)
    win_op, rows_h, rows_w, full_h, full_w = cache[key]

    def measure(y, stitched):
        y_w = y[..., rows_h.to(y.device), :][..., rows_w.to(y.device)]
        if not (top or left):
            return y_w
        part = stitched[..., window.rows, window.cols].clone()
        part[..., top:, left:] = 0  # the held bands only
        fh = full_h.to(device=y.device, dtype=y.dtype)
        fw = full_w.to(device=y.device, dtype=y.dtype)
        return y_w - fh @ part @ fw.T

    return WindowProblem(win_op, top, left, measure)


@restrict.register(UpstreamDeblurring)
def _upstream_deblurring(operator, window, height, width):
    raise NotTileable(
        "the upstream deblurring operator (deblur_gauss_ddrm/deblur_gauss_ssd) pairs its singular "
        "values across the whole image, so it does not act locally and cannot be tiled; use "
        "task=deblur_gauss (a true convolution) or tiling=none"
    )


class WindowSeparable(SeparableOperator):
    """X ↦ M_h X M_wᵀ with two fixed 1-D factors (one window's restricted operator)."""

    def __init__(self, fh: Factor1D, fw: Factor1D) -> None:
        super().__init__(zero_below=0.0)
        self._fh, self._fw = fh, fw
        self._cache: dict[tuple, tuple[Factor1D, Factor1D]] = {}

    def factors(self, height, width, like):
        key = (like.device, like.dtype)
        if key not in self._cache:
            self._cache[key] = (
                self._fh.to(like.device, like.dtype),
                self._fw.to(like.device, like.dtype),
            )
        return self._cache[key]

    def x_shape(self, y_shape):
        return (*y_shape[:-2], self._fh.V.shape[0], self._fw.V.shape[0])
