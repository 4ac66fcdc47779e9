"""Mask-shift restoration: images of any size with a prior of fixed size (DDNM paper §3.3).

`MaskShift.restore(method, y, operator, denoiser, generators, …)` restores the image window by
window (`rnsf.tiling.grid`), each window with the method's own sampler on the operator
restricted to it (`rnsf.tiling.restrict`), and every window after the first with the overlap
constraint (`rnsf.methods.constraint.KnownRegion`): after each step's projection, x̃₀ on the part
that earlier windows restored is replaced by their result, as in DDNM's `hq_demo`
(`guided_diffusion/gaussian_diffusion.py` L344-380). The window's output is written into the
stitched image; on the overlap it equals what was there, so neighbouring windows agree exactly.

Differences from `hq_demo`, on purpose: every window starts from fresh noise x_T ~ N(0, I) drawn
from its own generator, seeded from (seed, image index, window index) (upstream's loop carries
the previous window's final sample over as the next window's start); any method that honours
the hook (DDNM, DDNM+, RNSF) and any local operator can be tiled, not only block-average SR;
the known part is held fixed inside the window's projection for operators whose kernel crosses
the overlap's border (bicubic, blur; see `restrict`).

A batch's images (all of one size) go through the windows together: window k of every image
in one call, so memory is one window per image at a time.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import torch

from rnsf.methods.base import Method
from rnsf.methods.constraint import KnownRegion
from rnsf.operators.base import LinearOperator
from rnsf.operators.separable import SeparableOperator
from rnsf.tiling.grid import Window, axis_starts, plan
from rnsf.tiling.restrict import _axis, band, kernel_width, margin, restrict
from rnsf.utils.errors import UserError
from rnsf.utils.schema import Bool, Choice, Int

#: window of a prior without a native size (the built-in prior): the demo images' size
DEFAULT_WINDOW = 64


def window_seed(image_seed: int, window_index: int) -> int:
    """A 63-bit seed from (image seed, window index); the image seed is itself derived from
    (run seed, image index) by `rnsf.utils.random.image_seed`."""
    state = np.random.SeedSequence([int(image_seed), int(window_index)]).generate_state(
        2, dtype=np.uint32
    )
    return (int(state[0]) << 31) ^ int(state[1])


def window_generators(generators, window_index: int) -> list[torch.Generator]:
    """One generator per image for one window, seeded from its image's seed and the window."""
    return [
        torch.Generator(device=g.device).manual_seed(window_seed(g.initial_seed(), window_index))
        for g in generators
    ]


def known_mask(window: Window, top: int, left: int, device) -> torch.Tensor:
    """(1, 1, h, w) bool: the `top` rows and `left` columns held at the stitched values."""
    mask = torch.zeros(1, 1, window.height, window.width, dtype=torch.bool, device=device)
    mask[..., :top, :] = True
    mask[..., :, :left] = True
    return mask


@dataclass
class MaskShift:
    """`window` (pixels, square; None: the model's native size, or `DEFAULT_WINDOW` for a
    size-free prior), `stride` (None: half the window), `order` (`row`, upstream's, or
    `column`), `progress` (a progress bar over the windows)."""

    window: int | None = None
    stride: int | None = None
    order: str = "row"
    progress: bool = True
    name: str = "mask_shift"
    config_schema: ClassVar[dict] = {
        "window": Int(1, nullable=True),
        "stride": Int(1, nullable=True),
        "order": Choice("row", "column"),
        "progress": Bool(),
    }

    # -- set-up --------------------------------------------------------------------------
    def resolve(self, denoiser) -> MaskShift:
        """Fill in the defaults from the denoiser and check the settings (one-line errors)."""
        native = getattr(denoiser, "native_size", None)
        window = self.window or native or DEFAULT_WINDOW
        stride = self.stride or max(window // 2, 1)
        if self.order not in ("row", "column"):
            raise UserError(f"tiling.order={self.order!r} is unknown; use row or column")
        if window < 1 or not 0 < stride <= window:
            raise UserError(
                f"tiling.window={window}, tiling.stride={stride}: the stride must lie in "
                f"(0, window]; set tiling.stride (default: half the window)"
            )
        if native and window != native:
            raise UserError(
                f"tiling.window={window}, but model {getattr(denoiser, 'name', '')} takes "
                f"{native}x{native} images; set tiling.window={native} (or leave it null)"
            )
        multiple = getattr(denoiser, "size_multiple", 1)
        if window % multiple:
            raise UserError(
                f"tiling.window={window} is not a multiple of {multiple}, which the model needs; "
                f"set tiling.window to a multiple of {multiple}"
            )
        return MaskShift(window, stride, self.order, self.progress)

    def describe(self) -> dict:
        return {
            "tiling": self.name,
            "window": self.window,
            "stride": self.stride,
            "order": self.order,
        }

    def check(self, method: Method, operator: LinearOperator, height: int, width: int, denoiser):
        """Start-up checks for an image of height × width: the method honours the overlap
        constraint, the operator restricts to windows, every measured pixel lies wholly inside
        some window, and a prior of fixed size is not given a smaller image."""
        if method.nfe > 0 and not getattr(method, "supports_known", False):
            raise UserError(
                f"method {method.name} cannot be tiled: its update has no place for the overlap "
                "constraint (x̃₀ on the overlap replaced by the earlier windows' result); use "
                "method=ddnm or method=rnsf, or tiling=none"
            )
        native = getattr(denoiser, "native_size", None)
        if native and min(height, width) < native:
            raise UserError(
                f"image of {height}x{width} is smaller than the {native}x{native} window of the "
                f"model; use images of at least {native} pixels per side (e.g. a larger SR "
                "factor or dataset.resize=resize with dataset.image_size) or tiling=none"
            )
        if denoiser is not None:
            try:
                denoiser.check_size(min(height, self.window), min(width, self.window))
            except ValueError as err:
                raise UserError(str(err)) from None
        bound = operator.bind((1, 3, height, width), [torch.Generator()])
        windows = plan(height, width, self.window, self.stride, self.order)
        if len(windows) > 1 or (windows[0].height, windows[0].width) != (height, width):
            restrict(bound, windows[-1], height, width)  # NotTileable for non-local operators
            if isinstance(bound, SeparableOperator):
                for n in (height, width):
                    self._check_coverage(bound, n)

    def _check_coverage(self, operator: SeparableOperator, n: int) -> None:
        """Every measured row must fit wholly inside a window, and the held part of an overlap
        (overlap − margin) must be as wide as the margin (see `restrict`): overlap ≥ 2·margin."""
        matrix = band(operator, n)
        if n <= self.window:
            return
        need = 2 * margin(matrix)
        overlap = self.window - self.stride
        covered = torch.zeros(matrix.shape[0], dtype=torch.bool)
        for start in axis_starts(n, self.window, self.stride):
            covered[_axis(matrix, start, self.window, 0)[0]] = True
        if overlap < need or not covered.all():
            fix = (
                f"use tiling.stride <= {self.window - need}"
                if self.window > need
                else "use a larger tiling.window"
            )
            raise UserError(
                f"tiling.window={self.window}, tiling.stride={self.stride}: the overlap of "
                f"{overlap} px is too narrow for this operator's {kernel_width(matrix)}-pixel "
                f"kernel (it needs {need} px); {fix}"
            )

    # -- the restoration ------------------------------------------------------------------
    def restore(
        self,
        method: Method,
        y: torch.Tensor,
        operator: LinearOperator,
        denoiser,
        generators,
        *,
        sigma_y: float = 0.0,
        callback=None,
    ) -> torch.Tensor:
        x_shape = (y.shape[0], *operator.x_shape(y.shape)[1:])
        height, width = x_shape[-2:]
        windows = plan(height, width, self.window, self.stride, self.order)
        if method.nfe == 0 or len(windows) == 1:  # no network, or the image is one window
            return method.restore(
                y, operator, denoiser, generators, sigma_y=sigma_y, callback=callback
            )
        stitched = y.new_zeros(x_shape)
        bar = self._bar(len(windows))
        for window in windows:
            problem = restrict(operator, window, height, width)
            known = None
            if problem.known_top or problem.known_left:
                mask = known_mask(window, problem.known_top, problem.known_left, y.device)
                known = KnownRegion(mask, stitched[..., window.rows, window.cols])
            x = method.restore(
                problem.measurement(y, stitched),
                problem.operator,
                denoiser,
                window_generators(generators, window.index),
                sigma_y=sigma_y,
                callback=_tagged(callback, window),
                known=known,
            )
            stitched[..., window.rows, window.cols] = x
            if bar is not None:
                bar.update(1)
        if bar is not None:
            bar.close()
        return stitched

    def _bar(self, total: int):
        if not self.progress:
            return None
        from lightning.pytorch.utilities import rank_zero_only
        from tqdm.auto import tqdm

        if rank_zero_only.rank != 0:
            return None
        return tqdm(total=total, desc="windows", unit="window", leave=False, dynamic_ncols=True)


def _tagged(callback, window: Window):
    """The sampler callback with the window attached to each StepInfo (`info.window`)."""
    if callback is None:
        return None

    def tagged(info):
        info.window = window
        callback(info)

    return tagged


class Tiled(Method):
    """A method restored window by window: `Tiled(method, tiling).restore(…)` has the one
    signature of every method, so the engine runs it unchanged."""

    def __init__(self, method: Method, tiling: MaskShift) -> None:
        self.method, self.tiling = method, tiling
        self.name, self.steps = method.name, method.steps

    @property
    def nfe(self) -> int:
        """Network evaluations per window."""
        return self.method.nfe

    def hyperparameters(self) -> dict:
        return self.method.hyperparameters()

    def restore(self, y, operator, denoiser, generators, *, sigma_y=0.0, callback=None):
        return self.tiling.restore(
            self.method, y, operator, denoiser, generators, sigma_y=sigma_y, callback=callback
        )
