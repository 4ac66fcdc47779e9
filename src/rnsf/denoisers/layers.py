"""Layers shared by the pretrained networks: the parts that stay in float32 under autocast.

Mixed precision follows guided-diffusion's fp16 recipe (`fp16_util.py`, `unet.py` L618-624 of
openai/guided-diffusion): convolutions run in the low precision, while GroupNorm (`nn.py`
L17-19), the attention softmax (`unet.py` L351) and the timestep-embedding MLP stay in float32.
"""

from __future__ import annotations

import contextlib

import torch
from torch import nn


class GroupNorm32(nn.GroupNorm):
    """GroupNorm computed in float32 and returned in the input's dtype."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with full_precision(x):
            return super().forward(x.float()).to(x.dtype)


def full_precision(x: torch.Tensor) -> contextlib.AbstractContextManager:
    """A context in which autocast is off on `x`'s device (float32 arithmetic)."""
    if x.device.type not in ("cuda", "cpu", "xpu", "mps"):
        return contextlib.nullcontext()
    return torch.autocast(device_type=x.device.type, enabled=False)


def softmax32(scores: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """Softmax in float32, cast back to the dtype of `scores`."""
    return torch.softmax(scores.float(), dim=dim).to(scores.dtype)
