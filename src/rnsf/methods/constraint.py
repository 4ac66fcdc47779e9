"""The overlap constraint of mask-shift restoration, as a sampler hook.

A tiled restoration (`rnsf.tiling`) hands each window after the first a `KnownRegion`: the pixels
that earlier windows already restored, with their values. A method that honours it (class
attribute `supports_known = True`, keyword `known` of `restore`) overwrites x̃₀ there with the
known values after every step's data-consistency projection, as DDNM's `hq_demo` does
(`guided_diffusion/gaussian_diffusion.py` L344-380 of wyhuai/DDNM). The window's last x̃₀, and so
its output, then equals the earlier result on the overlap exactly, and neighbouring windows
agree. A method of your own needs one line after its projection:

    if known is not None:
        x0_tilde = known.apply(x0_tilde)
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class KnownRegion:
    """`mask` (bool, broadcastable to x: (1 or B, 1, H, W)) marks the known pixels of x₀ and
    `values` (x's shape) holds them."""

    mask: torch.Tensor
    values: torch.Tensor

    def apply(self, x0: torch.Tensor) -> torch.Tensor:
        """x0 with the known pixels replaced by their values."""
        return torch.where(self.mask, self.values, x0)
