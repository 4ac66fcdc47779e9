"""The DDPM "simple" UNet of Ho et al. as ported by ermongroup/ddim (`models/diffusion.py`),
which SDEdit, DDRM, DDNM and SSD use for the CelebA-HQ 256 checkpoint `celeba_hq.ckpt`.

Module names reproduce the upstream key grammar (specs §3.3: `temb.dense.{0,1}`, `conv_in`,
`down.{L}.{block,attn,downsample}`, `mid.{block_1,attn_1,block_2}`, `up.{L}.{block,attn,
upsample}` indexed by level, `norm_out`, `conv_out`), so the checkpoint loads with `strict=True`.
Upstream quirks kept because the weights depend on them: the sin-first timestep embedding with
the (half − 1) divisor, GroupNorm eps 1e-6, asymmetric (0, 1) padding before the stride-2
convolution, single-head attention with 1×1 2-D convolutions.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn
from torch.nn import functional as F

from rnsf.denoisers.layers import GroupNorm32, full_precision, run_block


def timestep_embedding(t: torch.Tensor, dim: int) -> torch.Tensor:
    """The DDPM embedding (`models/diffusion.py` L6-24): frequencies exp(−ln(10⁴)·k/(half − 1))
    for k < half = dim // 2, output [sin | cos] (sin first), zero-padded when `dim` is odd."""
    half = dim // 2
    step = math.log(10000) / (half - 1)
    freqs = torch.exp(torch.arange(half, dtype=torch.float32, device=t.device) * -step)
    args = t.float()[:, None] * freqs[None]
    emb = torch.cat([torch.sin(args), torch.cos(args)], dim=1)
    return F.pad(emb, (0, 1)) if dim % 2 else emb


def _norm(channels: int) -> GroupNorm32:
    return GroupNorm32(32, channels, eps=1e-6)  # models/diffusion.py L32-33


class Downsample(nn.Module):
    """Pad right and bottom by one, then a 3×3 stride-2 convolution (L55-74); or 2×2 pooling."""

    def __init__(self, channels: int, with_conv: bool) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, stride=2) if with_conv else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.conv is None:
            return F.avg_pool2d(x, 2)
        return self.conv(F.pad(x, (0, 1, 0, 1)))


class Upsample(nn.Module):
    """Nearest ×2, then a 3×3 convolution (L36-52)."""

    def __init__(self, channels: int, with_conv: bool) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1) if with_conv else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.interpolate(x, scale_factor=2.0, mode="nearest")
        return self.conv(x) if self.conv is not None else x


class ResnetBlock(nn.Module):
    """norm-swish-conv, plus the projected embedding, norm-swish-dropout-conv, and a 1×1
    `nin_shortcut` when the channel count changes (L77-134)."""

    def __init__(self, cin: int, cout: int, temb_channels: int, dropout: float) -> None:
        super().__init__()
        self.norm1 = _norm(cin)
        self.conv1 = nn.Conv2d(cin, cout, 3, padding=1)
        self.temb_proj = nn.Linear(temb_channels, cout)
        self.norm2 = _norm(cout)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1)
        self.nin_shortcut = nn.Conv2d(cin, cout, 1) if cin != cout else None

    def forward(self, x: torch.Tensor, temb: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = h + self.temb_proj(F.silu(temb)).to(h.dtype)[:, :, None, None]
        h = self.conv2(self.dropout(F.silu(self.norm2(h))))
        return (self.nin_shortcut(x) if self.nin_shortcut is not None else x) + h


class AttnBlock(nn.Module):
    """Single-head self-attention with 1×1 convolutions q, k, v, proj_out (L137-189); scores
    scaled by C^(−1/2) (the default of `F.scaled_dot_product_attention`, which computes it;
    equal to upstream's explicit product to 1e-5 in float32, tested), softmax accumulated in
    float32."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.norm = _norm(channels)
        self.q = nn.Conv2d(channels, channels, 1)
        self.k = nn.Conv2d(channels, channels, 1)
        self.v = nn.Conv2d(channels, channels, 1)
        self.proj_out = nn.Conv2d(channels, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, channels, height, width = x.shape
        h = self.norm(x)
        # (B, C, H, W) → (B, 1, HW, C): one head over all positions
        q, k, v = (m(h).flatten(2).transpose(1, 2)[:, None] for m in (self.q, self.k, self.v))
        h = F.scaled_dot_product_attention(q, k, v)[:, 0].transpose(1, 2)
        return x + self.proj_out(h.reshape(batch, channels, height, width))


class Level(nn.Module):
    """One resolution of the UNet: `block`, `attn` (possibly empty) and a resampler."""

    def __init__(self, blocks: list[nn.Module], attns: list[nn.Module]) -> None:
        super().__init__()
        self.block = nn.ModuleList(blocks)
        self.attn = nn.ModuleList(attns)


class DDPMUNet(nn.Module):
    """ddim's `Model` with `type: simple` (ε-prediction, `out_ch` channels).

    Defaults are the CelebA-HQ 256 config (DDNM `configs/celeba_hq.yml`): ch 128,
    ch_mult (1, 1, 2, 2, 4, 4), 2 res-blocks, attention on 16×16 maps, dropout 0,
    resamp_with_conv true.

    `checkpointing = True` recomputes each block's activations in the backward pass (DPS).
    """

    checkpointing: bool = False

    def __init__(
        self,
        resolution: int = 256,
        in_channels: int = 3,
        out_ch: int = 3,
        ch: int = 128,
        ch_mult: Sequence[int] = (1, 1, 2, 2, 4, 4),
        num_res_blocks: int = 2,
        attn_resolutions: Sequence[int] = (16,),
        dropout: float = 0.0,
        resamp_with_conv: bool = True,
    ) -> None:
        super().__init__()
        ch_mult = tuple(ch_mult)
        attn_resolutions = {int(r) for r in attn_resolutions}
        self.ch = ch
        self.resolution = resolution
        self.in_channels, self.out_channels = in_channels, out_ch
        self.levels = len(ch_mult)
        self.num_res_blocks = num_res_blocks
        temb_ch = 4 * ch

        self.temb = nn.Module()
        self.temb.dense = nn.ModuleList([nn.Linear(ch, temb_ch), nn.Linear(temb_ch, temb_ch)])
        self.conv_in = nn.Conv2d(in_channels, ch, 3, padding=1)

        res = resolution
        in_mult = (1, *ch_mult)
        block_in = ch
        self.down = nn.ModuleList()
        for level in range(self.levels):
            blocks, attns = [], []
            block_in = ch * in_mult[level]
            block_out = ch * ch_mult[level]
            for _ in range(num_res_blocks):
                blocks.append(ResnetBlock(block_in, block_out, temb_ch, dropout))
                block_in = block_out
                if res in attn_resolutions:
                    attns.append(AttnBlock(block_in))
            down = Level(blocks, attns)
            if level != self.levels - 1:
                down.downsample = Downsample(block_in, resamp_with_conv)
                res //= 2
            self.down.append(down)

        self.mid = nn.Module()
        self.mid.block_1 = ResnetBlock(block_in, block_in, temb_ch, dropout)
        self.mid.attn_1 = AttnBlock(block_in)
        self.mid.block_2 = ResnetBlock(block_in, block_in, temb_ch, dropout)

        ups: list[Level] = []
        for level in reversed(range(self.levels)):
            blocks, attns = [], []
            block_out = ch * ch_mult[level]
            skip_in = ch * ch_mult[level]
            for i in range(num_res_blocks + 1):
                if i == num_res_blocks:
                    skip_in = ch * in_mult[level]
                blocks.append(ResnetBlock(block_in + skip_in, block_out, temb_ch, dropout))
                block_in = block_out
                if res in attn_resolutions:
                    attns.append(AttnBlock(block_in))
            up = Level(blocks, attns)
            if level != 0:
                up.upsample = Upsample(block_in, resamp_with_conv)
                res *= 2
            ups.insert(0, up)  # indexed by level, as upstream (L291)
        self.up = nn.ModuleList(ups)

        self.norm_out = _norm(block_in)
        self.conv_out = nn.Conv2d(block_in, out_ch, 3, padding=1)

    @property
    def size_multiple(self) -> int:
        return 2 ** (self.levels - 1)

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """ε for x_t at integer timesteps t of shape (B,)."""
        with full_precision(x):  # the embedding MLP in float32
            temb = timestep_embedding(t, self.ch)
            temb = self.temb.dense[1](F.silu(self.temb.dense[0](temb)))

        ckpt = self.checkpointing
        hs = [self.conv_in(x)]
        for level, down in enumerate(self.down):
            for i, block in enumerate(down.block):
                h = run_block(block, hs[-1], temb, checkpoint=ckpt)
                if len(down.attn):
                    h = run_block(down.attn[i], h, checkpoint=ckpt)
                hs.append(h)
            if level != self.levels - 1:
                hs.append(down.downsample(hs[-1]))

        h = run_block(self.mid.block_1, hs[-1], temb, checkpoint=ckpt)
        h = run_block(self.mid.attn_1, h, checkpoint=ckpt)
        h = run_block(self.mid.block_2, h, temb, checkpoint=ckpt)

        for level in reversed(range(self.levels)):
            up = self.up[level]
            for i, block in enumerate(up.block):
                h = run_block(block, torch.cat([h, hs.pop()], dim=1), temb, checkpoint=ckpt)
                if len(up.attn):
                    h = run_block(up.attn[i], h, checkpoint=ckpt)
            if level != 0:
                h = up.upsample(h)

        with full_precision(x):  # the output head in float32, as the ADM one
            return self.conv_out(F.silu(self.norm_out(h.float())))
