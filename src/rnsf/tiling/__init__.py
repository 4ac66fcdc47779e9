"""Images of any size: DDNM's mask-shift restoration with window-restricted operators."""

from rnsf.tiling.grid import Window, axis_starts, plan
from rnsf.tiling.mask_shift import DEFAULT_WINDOW, MaskShift, Tiled, window_generators
from rnsf.tiling.restrict import NotTileable, WindowProblem, restrict

__all__ = [
    "DEFAULT_WINDOW",
    "MaskShift",
    "NotTileable",
    "Tiled",
    "Window",
    "WindowProblem",
    "axis_starts",
    "plan",
    "restrict",
    "window_generators",
]
