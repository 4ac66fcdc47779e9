"""LPIPS per image through the `lpips` package, with a frozen backbone."""

from __future__ import annotations

import warnings

import lpips
import torch
from torch import nn

from rnsf.metrics.image import to_unit
from rnsf.metrics.weights import LPIPS_BACKBONES


class LPIPS(nn.Module):
    """LPIPS v0.1 (learned linear heads shipped with the `lpips` wheel) on an ImageNet backbone
    from `$TORCH_HOME/hub/checkpoints`. `net='vgg'` is the protocol of SSD's and DPS's evaluation
    scripts (specs/upstream-ddrm-dps-ssd.md §2.7, §3.8); `alex` is lpips' own default.

    Inputs are [-1, 1] images, lpips' convention; under the `uint8` protocol both are first
    rounded to 8 bits, so the score is the score of the saved PNGs.
    """

    def __init__(self, net: str = "alex") -> None:
        super().__init__()
        if net not in LPIPS_BACKBONES:
            raise ValueError(f"LPIPS net {net!r} is unknown; use one of {sorted(LPIPS_BACKBONES)}")
        self.net_name = net
        with warnings.catch_warnings():
            # lpips still calls torchvision with the deprecated `pretrained=True`
            warnings.simplefilter("ignore", UserWarning)
            self.net = lpips.LPIPS(net=net, pretrained=True, verbose=False)
        self.net.eval().requires_grad_(False)

    def train(self, mode: bool = True) -> LPIPS:
        """Always in eval mode (the heads carry dropout layers)."""
        return super().train(False)

    @torch.no_grad()
    def forward(
        self, pred: torch.Tensor, target: torch.Tensor, protocol: str = "float"
    ) -> torch.Tensor:
        """LPIPS per image (B,) between (B, 3, H, W) images in [-1, 1]."""
        pred, target = (to_unit(x, protocol) * 2 - 1 for x in (pred, target))
        return self.net(pred, target).flatten()
