"""The built-in prior's network: a small, fully convolutional ε-prediction UNet.

No attention, so it runs at any size that is a multiple of 2**(levels-1) and trains fast on CPU.
Timestep embedding: sinusoidal (cos-first, as guided-diffusion) followed by a two-layer MLP.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

from rnsf.denoisers.base import Denoiser


def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """Sinusoidal embedding of integer timesteps, [cos | sin] halves (guided-diffusion layout)."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, device=t.device) / half)
    args = t.float()[:, None] * freqs[None]
    return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)


def _norm(channels: int) -> nn.GroupNorm:
    return nn.GroupNorm(min(32, channels // 4), channels)


class ResBlock(nn.Module):
    def __init__(self, cin: int, cout: int, temb: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.norm1, self.conv1 = _norm(cin), nn.Conv2d(cin, cout, 3, padding=1)
        self.temb = nn.Linear(temb, cout)
        self.norm2, self.conv2 = _norm(cout), nn.Conv2d(cout, cout, 3, padding=1)
        self.dropout = nn.Dropout(dropout)
        self.skip = nn.Conv2d(cin, cout, 1) if cin != cout else nn.Identity()

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = h + self.temb(F.silu(emb))[:, :, None, None]
        h = self.conv2(self.dropout(F.silu(self.norm2(h))))
        return self.skip(x) + h


class TinyUNet(Denoiser):
    """ε-UNet with `len(channels)` resolution levels and `num_res_blocks` blocks per level."""

    def __init__(
        self,
        channels: tuple[int, ...] = (32, 64, 96, 128),
        num_res_blocks: int = 2,
        in_channels: int = 3,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        channels = tuple(channels)
        self.size_multiple = 2 ** (len(channels) - 1)
        self.base = channels[0]
        temb = 4 * channels[0]
        self.time_mlp = nn.Sequential(
            nn.Linear(channels[0], temb), nn.SiLU(), nn.Linear(temb, temb)
        )
        self.stem = nn.Conv2d(in_channels, channels[0], 3, padding=1)

        self.down = nn.ModuleList()
        skips = [channels[0]]
        cur = channels[0]
        for level, ch in enumerate(channels):
            for _ in range(num_res_blocks):
                self.down.append(ResBlock(cur, ch, temb, dropout))
                cur = ch
                skips.append(cur)
            if level < len(channels) - 1:
                self.down.append(nn.Conv2d(cur, cur, 3, stride=2, padding=1))
                skips.append(cur)
        self.mid = nn.ModuleList([ResBlock(cur, cur, temb, dropout), ResBlock(cur, cur, temb)])
        self.up = nn.ModuleList()
        for level, ch in reversed(list(enumerate(channels))):
            for _ in range(num_res_blocks + 1):
                self.up.append(ResBlock(cur + skips.pop(), ch, temb, dropout))
                cur = ch
            if level > 0:
                self.up.append(nn.Upsample(scale_factor=2, mode="nearest"))
                self.up.append(nn.Conv2d(cur, cur, 3, padding=1))
        self.out = nn.Sequential(_norm(cur), nn.SiLU(), nn.Conv2d(cur, in_channels, 3, padding=1))

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        emb = self.time_mlp(timestep_embedding(t, self.base))
        h = self.stem(x)
        hs = [h]
        for layer in self.down:
            h = layer(h, emb) if isinstance(layer, ResBlock) else layer(h)
            hs.append(h)
        for layer in self.mid:
            h = layer(h, emb)
        for layer in self.up:
            if isinstance(layer, ResBlock):
                h = layer(torch.cat([h, hs.pop()], dim=1), emb)
            else:
                h = layer(h)
        return self.out(h)
