"""Layers shared by the pretrained networks: normalisation and attention under mixed precision.

Mixed precision follows guided-diffusion's fp16 recipe (`fp16_util.py`, `unet.py` L618-624 of
openai/guided-diffusion): convolutions run in the low precision, GroupNorm statistics (`nn.py`
L17-19) and the attention softmax (`unet.py` L351) are computed in float32, and the
timestep-embedding MLP and the output head stay in float32. Here the float32 arithmetic
happens inside the kernels: no float32 copy of an activation map is made.
"""

from __future__ import annotations

import contextlib

import torch
import torch.utils.checkpoint
from torch import nn
from torch.nn import functional as F


class GroupNorm32(nn.GroupNorm):
    """GroupNorm with float32 statistics, in the input's dtype.

    Float32 input: exactly `nn.GroupNorm`. A bf16/fp16 activation stays in its dtype: the
    native kernels (CPU and CUDA) accumulate the mean and variance in float32, and under
    `torch.compile` inductor computes the whole normalisation in float32 registers, fused with
    the SiLU and scale-shift that follow. The affine parameters (C values) are cast to the
    activation's dtype, as autocast casts every convolution weight.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weight, bias = self.weight, self.bias
        if weight is not None and weight.dtype != x.dtype:
            weight, bias = weight.to(x.dtype), bias.to(x.dtype)
        with full_precision(x):  # autocast would cast the input to float32 (a full copy)
            return F.group_norm(x, self.num_groups, weight, bias, self.eps)


def full_precision(x: torch.Tensor) -> contextlib.AbstractContextManager:
    """A context in which autocast is off on `x`'s device (float32 arithmetic)."""
    if x.device.type not in ("cuda", "cpu", "xpu", "mps"):
        return contextlib.nullcontext()
    return torch.autocast(device_type=x.device.type, enabled=False)


def run_block(block: nn.Module, *args: torch.Tensor, checkpoint: bool = False) -> torch.Tensor:
    """`block(*args)`; with `checkpoint` and gradients on, its activations are recomputed in
    the backward pass instead of being kept (`torch.utils.checkpoint`, non-reentrant, so it
    works with frozen parameters and an input that requires grad)."""
    if checkpoint and torch.is_grad_enabled():
        return torch.utils.checkpoint.checkpoint(block, *args, use_reentrant=False)
    return block(*args)
