"""Where the windows of mask-shift restoration lie on an image.

DDNM's Mask-Shift Restoration (paper §3.3; `hq_demo/guided_diffusion/gaussian_diffusion.py`
L660-745 of wyhuai/DDNM) slides a window of the model's size over the image with a stride of
half a window, row by row (the outer loop runs over rows, the inner over columns). Along each
axis the windows start at 0, stride, 2·stride, … and the last one is aligned to the image's far
edge, so it may overlap its neighbour by more than the usual amount. An axis that is not longer
than the window is one window along it, shrunk to the image (for a size-free prior; a prior
with a native size refuses such an image, see `MaskShift.check`).

Every window after the first treats the part that earlier windows already restored as known:
with the row-major order that part is a band of `known_top` rows at the top of the window and
a band of `known_left` columns at its left, so the still-unknown part is the rectangle below and
to the right of them.
"""

from __future__ import annotations

from dataclasses import dataclass


def axis_starts(length: int, window: int, stride: int) -> list[int]:
    """Start offsets of the windows along one axis of `length` pixels.

    0, stride, 2·stride, … while a window still ends before the far edge, then one window
    aligned to the edge (upstream's "last irregular shift"); a single window at 0 when the axis
    is not longer than the window.
    """
    if length <= window:
        return [0]
    starts = list(range(0, length - window, stride))
    starts.append(length - window)
    return starts


@dataclass(frozen=True)
class Window:
    """One window: rows [top, top + height) and columns [left, left + width) of the image, its
    position in the sweep (`index`), and the bands already restored by earlier windows."""

    index: int
    top: int
    left: int
    height: int
    width: int
    known_top: int = 0  #: rows at the window's top restored by earlier windows
    known_left: int = 0  #: columns at the window's left restored by earlier windows

    @property
    def rows(self) -> slice:
        return slice(self.top, self.top + self.height)

    @property
    def cols(self) -> slice:
        return slice(self.left, self.left + self.width)

    @property
    def has_known(self) -> bool:
        return self.known_top > 0 or self.known_left > 0


def plan(height: int, width: int, window: int, stride: int, order: str = "row") -> list[Window]:
    """The windows of an image of height × width, in restoration order.

    `order="row"` is upstream's: rows of windows top to bottom, each left to right.
    `order="column"` sweeps columns of windows left to right, each top to bottom; the known
    part is again a top band and a left band.
    """
    if order not in ("row", "column"):
        raise ValueError(f"tiling.order must be 'row' or 'column', got {order!r}")
    tops = axis_starts(height, window, stride)
    lefts = axis_starts(width, window, stride)
    win_h, win_w = min(window, height), min(window, width)
    cells = [(i, j) for i in range(len(tops)) for j in range(len(lefts))]
    if order == "column":
        cells.sort(key=lambda ij: (ij[1], ij[0]))
    windows = []
    for index, (i, j) in enumerate(cells):
        top, left = tops[i], lefts[j]
        # row order: the previous row of windows spans the whole width, so the rows it covers
        # are known across the window; the previous window of this row covers its full height.
        # Column order is the mirror image, with the same two bands.
        known_top = tops[i - 1] + win_h - top if i > 0 else 0
        known_left = lefts[j - 1] + win_w - left if j > 0 else 0
        windows.append(Window(index, top, left, win_h, win_w, known_top, known_left))
    return windows
