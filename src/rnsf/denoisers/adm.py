"""The guided-diffusion ("ADM") UNet of Dhariwal & Nichol (2021), written to load OpenAI's
checkpoints (and DPS's FFHQ model, which uses the same code) with `strict=True`.

Module names, nesting and parameter shapes reproduce the upstream state-dict key grammar
(specs §2.4: `time_embed.{0,2}`, `input_blocks.{i}.{j}`, `middle_block.{0,1,2}`,
`output_blocks.{i}.{j}`, `out.{0,2}`, optional `label_emb`), including the parameter-free
SiLU/Dropout slots that fix the Sequential indices and the 1-D convolutions of the attention.
Every architectural choice is a constructor argument, so each checkpoint is a config preset.

Departures from upstream that do not change any weight or output:
- attention never uses gradient checkpointing (upstream forces it, `unet.py` L297, which fails
  with frozen parameters); gradients w.r.t. the input flow through plain autograd (DPS);
- `attention_resolutions` are feature-map sizes (16 = attention on 16×16 maps), as the
  upstream command-line flags give them; they are turned into downsampling factors here.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
from torch import nn
from torch.nn import functional as F

from rnsf.denoisers.layers import GroupNorm32, full_precision, run_block


def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """guided-diffusion's sinusoidal embedding (`nn.py` L103-121): frequencies
    exp(−ln(max_period)·k/half) for k < half = dim // 2, output [cos | sin] (cos first), a zero
    column appended when `dim` is odd."""
    half = dim // 2
    freqs = torch.exp(
        -math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half
    )
    args = t.float()[:, None] * freqs[None]
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    return F.pad(emb, (0, 1)) if dim % 2 else emb


def _norm(channels: int) -> GroupNorm32:
    return GroupNorm32(32, channels)  # nn.py L93-100: 32 groups, eps 1e-5


class TimestepBlock(nn.Module):
    """A block that also takes the timestep embedding."""

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError


class EmbedSequential(nn.Sequential):
    """A Sequential that hands the embedding to its TimestepBlocks."""

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        for layer in self:
            x = layer(x, emb) if isinstance(layer, TimestepBlock) else layer(x)
        return x


class Downsample(nn.Module):
    """Halve the resolution: 3×3 stride-2 convolution (key `op`) or 2×2 average pooling."""

    def __init__(self, channels: int, use_conv: bool, out_channels: int | None = None) -> None:
        super().__init__()
        out_channels = out_channels or channels
        if use_conv:
            self.op = nn.Conv2d(channels, out_channels, 3, stride=2, padding=1)
        else:
            if out_channels != channels:
                raise ValueError("pooling cannot change the number of channels")
            self.op = nn.AvgPool2d(2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.op(x)


class Upsample(nn.Module):
    """Double the resolution (nearest), then an optional 3×3 convolution (key `conv`)."""

    def __init__(self, channels: int, use_conv: bool, out_channels: int | None = None) -> None:
        super().__init__()
        self.conv = (
            nn.Conv2d(channels, out_channels or channels, 3, padding=1) if use_conv else None
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.interpolate(x, scale_factor=2, mode="nearest")
        return self.conv(x) if self.conv is not None else x


class ResBlock(TimestepBlock):
    """Residual block (`unet.py` L143-256): GroupNorm-SiLU-conv, the embedding as a per-channel
    (scale, shift) pair — scale first — or a bias, GroupNorm-SiLU-dropout-conv, and a 1×1 skip
    convolution when the channel count changes. `up`/`down` resample inside the block."""

    def __init__(
        self,
        channels: int,
        emb_channels: int,
        dropout: float,
        out_channels: int | None = None,
        use_scale_shift_norm: bool = False,
        up: bool = False,
        down: bool = False,
    ) -> None:
        super().__init__()
        out_channels = out_channels or channels
        self.use_scale_shift_norm = use_scale_shift_norm
        self.in_layers = nn.Sequential(
            _norm(channels), nn.SiLU(), nn.Conv2d(channels, out_channels, 3, padding=1)
        )
        self.updown = up or down
        if up:
            self.h_upd, self.x_upd = Upsample(channels, False), Upsample(channels, False)
        elif down:
            self.h_upd, self.x_upd = Downsample(channels, False), Downsample(channels, False)
        else:
            self.h_upd = self.x_upd = nn.Identity()
        emb_out = 2 * out_channels if use_scale_shift_norm else out_channels
        self.emb_layers = nn.Sequential(nn.SiLU(), nn.Linear(emb_channels, emb_out))
        self.out_layers = nn.Sequential(
            _norm(out_channels),
            nn.SiLU(),
            nn.Dropout(dropout),
            nn.Conv2d(out_channels, out_channels, 3, padding=1),
        )
        self.skip_connection = (
            nn.Identity() if out_channels == channels else nn.Conv2d(channels, out_channels, 1)
        )

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        if self.updown:
            h = self.in_layers[:-1](x)
            h, x = self.h_upd(h), self.x_upd(x)
            h = self.in_layers[-1](h)
        else:
            h = self.in_layers(x)
        e = self.emb_layers(emb).to(h.dtype)[:, :, None, None]
        if self.use_scale_shift_norm:
            scale, shift = e.chunk(2, dim=1)
            h = self.out_layers[0](h) * (1 + scale) + shift
            h = self.out_layers[1:](h)
        else:
            h = self.out_layers(h + e)
        return self.skip_connection(x) + h


class AttentionBlock(nn.Module):
    """Multi-head self-attention over all positions (`unet.py` L259-305) with 1-D convolutions
    `qkv` (C → 3C) and `proj_out`, and a residual connection.

    `legacy_order=True` (QKVAttentionLegacy, L328-358, what OpenAI's checkpoints use): the 3C
    channels are laid out head-major, [q₀ k₀ v₀ | q₁ k₁ v₁ | …]. `False` (QKVAttention): q, k
    and v are split first, then each into heads. Queries and keys are each scaled by ch^(−1/4)
    before the product (1/√ch in all); the softmax is accumulated in float32. The product runs
    in `F.scaled_dot_product_attention` (flash or memory-efficient kernels on a GPU), equal to
    upstream's explicit einsum and float32 softmax to 1e-5 in float32 (tested).
    """

    def __init__(
        self,
        channels: int,
        num_heads: int = 1,
        num_head_channels: int = -1,
        legacy_order: bool = True,
    ) -> None:
        super().__init__()
        if num_head_channels == -1:
            self.num_heads = num_heads
        else:
            if channels % num_head_channels:
                raise ValueError(f"{channels} channels: not a multiple of {num_head_channels}")
            self.num_heads = channels // num_head_channels
        self.legacy_order = legacy_order
        self.norm = _norm(channels)
        self.qkv = nn.Conv1d(channels, 3 * channels, 1)
        self.proj_out = nn.Conv1d(channels, channels, 1)

    def attention(self, qkv: torch.Tensor) -> torch.Tensor:
        """(B, 3C, T) → (B, C, T) through `F.scaled_dot_product_attention`, whose default
        scale 1/√ch is upstream's ch^(−1/4) on q and on k."""
        batch, width, length = qkv.shape
        heads = self.num_heads
        ch = width // (3 * heads)
        if self.legacy_order:  # (B, H, 3ch, T) → (B, H, T, 3ch), split into q | k | v
            q, k, v = qkv.reshape(batch, heads, 3 * ch, length).transpose(2, 3).split(ch, -1)
        else:  # (B, 3, H, ch, T) → 3 × (B, H, T, ch)
            q, k, v = qkv.reshape(batch, 3, heads, ch, length).transpose(3, 4).unbind(1)
        out = F.scaled_dot_product_attention(q, k, v)  # (B, H, T, ch)
        return out.transpose(2, 3).reshape(batch, heads * ch, length)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, channels, *spatial = x.shape
        flat = x.reshape(batch, channels, -1)
        h = self.proj_out(self.attention(self.qkv(self.norm(flat))))
        return (flat + h).reshape(batch, channels, *spatial)


def encoder_blocks(
    in_channels: int,
    model_channels: int,
    channel_mult: Sequence[float],
    num_res_blocks: int,
    attention_ds: set[int],
    res: Callable[..., ResBlock],
    attn: Callable[[int], AttentionBlock],
    resblock_updown: bool,
    conv_resample: bool,
) -> tuple[nn.ModuleList, list[int], int]:
    """guided-diffusion's `input_blocks`, shared by the UNet and the classifier's encoder: the
    stem, then per level `num_res_blocks` ResBlocks (with attention at the downsampling factors
    in `attention_ds`) and a downsampling block between levels. Returns the blocks, each block's
    output channels (the UNet's skip connections) and the downsampling factor reached."""
    ch = int(channel_mult[0] * model_channels)
    blocks = nn.ModuleList([EmbedSequential(nn.Conv2d(in_channels, ch, 3, padding=1))])
    channels = [ch]
    ds = 1
    for level, mult in enumerate(channel_mult):
        for _ in range(num_res_blocks):
            layers: list[nn.Module] = [res(ch, int(mult * model_channels))]
            ch = int(mult * model_channels)
            if ds in attention_ds:
                layers.append(attn(ch))
            blocks.append(EmbedSequential(*layers))
            channels.append(ch)
        if level != len(channel_mult) - 1:
            down = res(ch, down=True) if resblock_updown else Downsample(ch, conv_resample)
            blocks.append(EmbedSequential(down))
            channels.append(ch)
            ds *= 2
    return blocks, channels, ds


class ADMUNet(nn.Module):
    """guided-diffusion's `UNetModel` (2-D), ε-prediction with optional learned variance.

    Arguments follow the upstream `create_model` flags: `model_channels` (num_channels),
    `channel_mult`, `num_res_blocks`, `attention_resolutions` (feature-map sizes),
    `num_heads` / `num_head_channels` / `num_heads_upsample`, `use_scale_shift_norm`,
    `resblock_updown`, `learn_sigma` (6 output channels: ε then the variance interpolation),
    `num_classes` (class-conditional when set), `legacy_attention` (False =
    `use_new_attention_order`), `conv_resample`, `dropout`.

    `checkpointing = True` recomputes each block's activations in the backward pass (memory
    for compute, when gradients flow through the frozen network as in DPS).
    """

    checkpointing: bool = False

    def __init__(
        self,
        image_size: int = 256,
        in_channels: int = 3,
        model_channels: int = 256,
        channel_mult: Sequence[float] = (1, 1, 2, 2, 4, 4),
        num_res_blocks: int = 2,
        attention_resolutions: Sequence[int] = (32, 16, 8),
        num_heads: int = 4,
        num_head_channels: int = 64,
        num_heads_upsample: int = -1,
        use_scale_shift_norm: bool = True,
        resblock_updown: bool = True,
        learn_sigma: bool = True,
        num_classes: int | None = None,
        legacy_attention: bool = True,
        conv_resample: bool = True,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        channel_mult = tuple(channel_mult)
        self.image_size = image_size
        self.in_channels = in_channels
        self.model_channels = model_channels
        self.out_channels = 2 * in_channels if learn_sigma else in_channels
        self.num_classes = num_classes
        self.levels = len(channel_mult)
        attention_ds = {image_size // int(r) for r in attention_resolutions}
        heads_up = num_heads if num_heads_upsample == -1 else num_heads_upsample
        emb_dim = 4 * model_channels

        def res(cin: int, cout: int | None = None, **updown: bool) -> ResBlock:
            return ResBlock(cin, emb_dim, dropout, cout, use_scale_shift_norm, **updown)

        def attn(ch: int, heads: int) -> AttentionBlock:
            return AttentionBlock(ch, heads, num_head_channels, legacy_attention)

        self.time_embed = nn.Sequential(
            nn.Linear(model_channels, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim)
        )
        if num_classes is not None:
            self.label_emb = nn.Embedding(num_classes, emb_dim)

        self.input_blocks, skip_channels, ds = encoder_blocks(
            in_channels,
            model_channels,
            channel_mult,
            num_res_blocks,
            attention_ds,
            res,
            lambda ch: attn(ch, num_heads),
            resblock_updown,
            conv_resample,
        )
        ch = skip_channels[-1]

        self.middle_block = EmbedSequential(res(ch), attn(ch, num_heads), res(ch))

        self.output_blocks = nn.ModuleList()
        for level, mult in reversed(list(enumerate(channel_mult))):
            for i in range(num_res_blocks + 1):
                layers: list[nn.Module] = [
                    res(ch + skip_channels.pop(), int(mult * model_channels))
                ]
                ch = int(mult * model_channels)
                if ds in attention_ds:
                    layers.append(attn(ch, heads_up))
                if level and i == num_res_blocks:
                    up = res(ch, up=True) if resblock_updown else Upsample(ch, conv_resample)
                    layers.append(up)
                    ds //= 2
                self.output_blocks.append(EmbedSequential(*layers))

        self.out = nn.Sequential(
            _norm(ch), nn.SiLU(), nn.Conv2d(ch, self.out_channels, 3, padding=1)
        )

    @property
    def size_multiple(self) -> int:
        return 2 ** (self.levels - 1)

    def forward(
        self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor | None = None
    ) -> torch.Tensor:
        """ε (and the variance values when `learn_sigma`) for x_t at integer timesteps t (B,);
        `y` (B,) holds class indices for a class-conditional network."""
        if (y is not None) != (self.num_classes is not None):
            raise ValueError("pass class labels y exactly when the network is class-conditional")
        with full_precision(x):  # the embedding MLP stays in float32 (upstream use_fp16)
            emb = self.time_embed(timestep_embedding(t, self.model_channels))
            if y is not None:
                emb = emb + self.label_emb(y)
        ckpt = self.checkpointing
        h, skips = x, []
        for block in self.input_blocks:
            h = run_block(block, h, emb, checkpoint=ckpt)
            skips.append(h)
        h = run_block(self.middle_block, h, emb, checkpoint=ckpt)
        for block in self.output_blocks:
            h = run_block(block, torch.cat([h, skips.pop()], dim=1), emb, checkpoint=ckpt)
        with full_precision(x):  # the output head runs in float32 (unet.py L661-663)
            return self.out(h.float())
