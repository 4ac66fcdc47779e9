"""guided-diffusion's noisy-image classifier (`EncoderUNetModel`, Dhariwal & Nichol 2021), written
to load OpenAI's `256x256_classifier.pt` (and the other sizes) with `strict=True`, and the
classifier-guidance gradient DDRM and DDNM add to ε.

The encoder is the first half of the ADM UNet (the same `ResBlock`, `AttentionBlock` and
`EmbedSequential` blocks of `rnsf.denoisers.adm`, hence the same state-dict keys) followed by
an attention-pooling head, `out.2` (`AttentionPool2d`: the mean position prepended, a learned
positional embedding, one multi-head attention with the new q/k/v order, the first position's
output projected to the class logits). Architecture flags as `create_classifier`
(`guided_diffusion/script_util.py`): `classifier_width` = `model_channels`, `classifier_depth`
= `num_res_blocks`, attention at the feature-map sizes `attention_resolutions`, 64 channels per
head, the channel multipliers of `image_size` (256: 1, 1, 2, 2, 4, 4).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from torch.nn import functional as F

from rnsf.denoisers.adm import (
    AttentionBlock,
    EmbedSequential,
    ResBlock,
    _norm,
    encoder_blocks,
    timestep_embedding,
)
from rnsf.denoisers.layers import full_precision

#: `create_classifier`'s channel multipliers per image size (script_util.py)
CHANNEL_MULT = {
    512: (0.5, 1, 1, 2, 2, 4, 4),
    256: (1, 1, 2, 2, 4, 4),
    128: (1, 1, 2, 3, 4),
    64: (1, 2, 3, 4),
}


def classifier_channel_mult(image_size: int) -> tuple[float, ...]:
    if image_size not in CHANNEL_MULT:
        raise ValueError(
            f"no classifier channel multipliers for image_size {image_size}; use one of "
            f"{sorted(CHANNEL_MULT)} or give channel_mult"
        )
    return CHANNEL_MULT[image_size]


class AttentionPool2d(nn.Module):
    """guided-diffusion's attention pooling (`unet.py` `AttentionPool2d`): keys
    `positional_embedding` (C, HW + 1), `qkv_proj` and `c_proj` (1-D convolutions)."""

    def __init__(self, spatial: int, channels: int, head_channels: int, out_channels: int):
        super().__init__()
        self.positional_embedding = nn.Parameter(
            torch.randn(channels, spatial**2 + 1) / channels**0.5
        )
        self.qkv_proj = nn.Conv1d(channels, 3 * channels, 1)
        self.c_proj = nn.Conv1d(channels, out_channels, 1)
        self.num_heads = channels // head_channels
        self.legacy_order = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, channels = x.shape[:2]
        x = x.reshape(batch, channels, -1)
        x = torch.cat([x.mean(dim=-1, keepdim=True), x], dim=-1)
        x = x + self.positional_embedding[None].to(x.dtype)
        # QKVAttention (the new q/k/v order), computed as the UNet's AttentionBlock computes it
        h = AttentionBlock.attention(self, self.qkv_proj(x))
        return self.c_proj(h)[:, :, 0]


class NoisyClassifier(nn.Module):
    """guided-diffusion's `EncoderUNetModel` with `pool="attention"`: logits of p(class | x_t, t)
    for images x_t in [-1, 1] at integer (or float) timesteps t (B,)."""

    def __init__(
        self,
        image_size: int = 256,
        in_channels: int = 3,
        model_channels: int = 128,
        num_classes: int = 1000,
        num_res_blocks: int = 2,
        attention_resolutions: Sequence[int] = (32, 16, 8),
        channel_mult: Sequence[float] | None = None,
        num_head_channels: int = 64,
        use_scale_shift_norm: bool = True,
        resblock_updown: bool = True,
        legacy_attention: bool = True,
        conv_resample: bool = True,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        channel_mult = tuple(channel_mult or classifier_channel_mult(image_size))
        self.image_size, self.model_channels, self.num_classes = (
            image_size,
            model_channels,
            num_classes,
        )
        attention_ds = {image_size // int(r) for r in attention_resolutions}
        emb_dim = 4 * model_channels

        def res(cin: int, cout: int | None = None, **updown: bool) -> ResBlock:
            return ResBlock(cin, emb_dim, dropout, cout, use_scale_shift_norm, **updown)

        def attn(ch: int) -> AttentionBlock:
            return AttentionBlock(ch, 1, num_head_channels, legacy_attention)

        self.time_embed = nn.Sequential(
            nn.Linear(model_channels, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim)
        )
        self.input_blocks, channels, ds = encoder_blocks(
            in_channels,
            model_channels,
            channel_mult,
            num_res_blocks,
            attention_ds,
            res,
            attn,
            resblock_updown,
            conv_resample,
        )
        ch = channels[-1]
        self.middle_block = EmbedSequential(res(ch), attn(ch), res(ch))
        self.out = nn.Sequential(
            _norm(ch),
            nn.SiLU(),
            AttentionPool2d(image_size // ds, ch, num_head_channels, num_classes),
        )

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        with full_precision(x):  # the embedding MLP stays in float32 (upstream use_fp16)
            emb = self.time_embed(timestep_embedding(t, self.model_channels))
        h = x
        for block in self.input_blocks:
            h = block(h, emb)
        h = self.middle_block(h, emb)
        with full_precision(x):  # the pooling head runs in float32 (unet.py: h.type(x.dtype))
            return self.out(h.float())


def guidance_gradient(
    classifier: nn.Module, x: torch.Tensor, t: int, labels: torch.Tensor, scale: float
) -> torch.Tensor:
    """scale · ∇ₓ log p(labels | x_t, t): DDRM's and DDNM's `cond_fn` (DDRM `runners/diffusion.py`
    L149-155): the log-softmax of the logits at each image's class, summed over the batch, its
    gradient with respect to x_t, times `classifier_scale`. Runs with autograd on also inside
    the engine's inference mode."""
    with torch.inference_mode(False), torch.enable_grad():
        x_in = x.detach().clone().requires_grad_(True)
        tt = torch.full((x.shape[0],), t, device=x.device, dtype=torch.long)
        logits = classifier(x_in, tt)
        log_probs = F.log_softmax(logits.float(), dim=-1)
        selected = log_probs[torch.arange(len(logits), device=x.device), labels.view(-1)]
        (grad,) = torch.autograd.grad(selected.sum(), x_in)
    return grad * scale
