"""The ermongroup DDPM UNet (`DDPMUNet`, the key grammar of ddim's `models/diffusion.py`) as a
`diffusers` `UNet2DModel`, and the key map between the two.

The DDPM family that diffusers publishes (google/ddpm-cifar10-32, -celebahq-256, -church-256,
-bedroom-256, -cat-256) is the same network under other names: `diffusers_config(arch)` gives
the `UNet2DModel` config of a `DDPMUNet` architecture, and `ddpm_to_diffusers` /
`diffusers_to_ddpm` rename a state dict between them (the 1x1 convolutions of ddim's attention
are diffusers' linear layers, so those weights lose or gain their two unit dimensions).
"""

from __future__ import annotations

import re
from collections.abc import Mapping

import torch

_RESNET = {"norm1": "norm1", "conv1": "conv1", "temb_proj": "time_emb_proj", "norm2": "norm2",
           "conv2": "conv2", "nin_shortcut": "conv_shortcut"}  # fmt: skip
_ATTN = {"norm": "group_norm", "q": "to_q", "k": "to_k", "v": "to_v", "proj_out": "to_out.0"}
_FIXED = {
    "temb.dense.0": "time_embedding.linear_1",
    "temb.dense.1": "time_embedding.linear_2",
    "conv_in": "conv_in",
    "norm_out": "conv_norm_out",
    "conv_out": "conv_out",
    "mid.block_1": "mid_block.resnets.0",
    "mid.attn_1": "mid_block.attentions.0",
    "mid.block_2": "mid_block.resnets.1",
}


def diffusers_config(arch: Mapping) -> dict:
    """The `UNet2DModel` config of a `DDPMUNet(**arch)`: single-head attention on the levels
    whose resolution is in `attn_resolutions`, ddim's (0, 1) padding before the stride-2
    convolution (`downsample_padding: 0`), the sin-first embedding with the (half − 1) divisor
    (`flip_sin_to_cos: false`, `freq_shift: 1`) and GroupNorm eps 1e-6."""
    resolution = int(arch.get("resolution", 256))
    ch_mult = [int(m) for m in arch.get("ch_mult", (1, 1, 2, 2, 4, 4))]
    attn = {int(r) for r in arch.get("attn_resolutions", (16,))}
    attention = [resolution // 2**level in attn for level in range(len(ch_mult))]
    if not arch.get("resamp_with_conv", True):
        raise ValueError("diffusers' DDPM blocks resample with convolutions only")
    return {
        "sample_size": resolution,
        "in_channels": int(arch.get("in_channels", 3)),
        "out_channels": int(arch.get("out_ch", 3)),
        "block_out_channels": [int(arch.get("ch", 128)) * m for m in ch_mult],
        "layers_per_block": int(arch.get("num_res_blocks", 2)),
        "down_block_types": ["AttnDownBlock2D" if a else "DownBlock2D" for a in attention],
        "up_block_types": ["AttnUpBlock2D" if a else "UpBlock2D" for a in reversed(attention)],
        "attention_head_dim": None,  # one head of all channels
        "downsample_padding": 0,
        "flip_sin_to_cos": False,
        "freq_shift": 1,
        "norm_eps": 1e-6,
        "norm_num_groups": 32,
        "dropout": float(arch.get("dropout", 0.0)),
        "time_embedding_type": "positional",
        "act_fn": "silu",
        "center_input_sample": False,
        "mid_block_scale_factor": 1,
        "resnet_time_scale_shift": "default",
        "add_attention": True,
    }


def ddpm_key_to_diffusers(key: str, levels: int) -> str:
    """The diffusers name of one `DDPMUNet` key (`levels` = len(ch_mult)): ddim's `up.{L}` is
    indexed by resolution level, diffusers' `up_blocks.{i}` in execution order (i = levels-1-L)."""
    module, param = key.rsplit(".", 1)
    for old, new in _FIXED.items():
        if module == old:
            return f"{new}.{param}"
        if module.startswith(old + "."):
            return f"{new}.{_rename_leaf(module[len(old) + 1 :])}.{param}"
    match = re.fullmatch(
        r"(down|up)\.(\d+)\.(block|attn|downsample|upsample)(?:\.(\d+))?\.(.+)", module
    )
    if match is None:
        raise KeyError(f"not a DDPMUNet key: {key}")
    side, level, kind, index, leaf = match.groups()
    block = f"down_blocks.{level}" if side == "down" else f"up_blocks.{levels - 1 - int(level)}"
    if kind == "downsample":
        return f"{block}.downsamplers.0.{leaf}.{param}"
    if kind == "upsample":
        return f"{block}.upsamplers.0.{leaf}.{param}"
    table = _RESNET if kind == "block" else _ATTN
    group = "resnets" if kind == "block" else "attentions"
    return f"{block}.{group}.{index}.{table[leaf]}.{param}"


def _rename_leaf(leaf: str) -> str:
    return _RESNET.get(leaf) or _ATTN.get(leaf) or leaf


def key_map(arch: Mapping) -> dict[str, str]:
    """{DDPMUNet key: UNet2DModel key} for every key of `DDPMUNet(**arch)`."""
    from rnsf.denoisers.ddpm import DDPMUNet

    with torch.device("meta"):
        keys = list(DDPMUNet(**arch).state_dict())
    levels = len(arch.get("ch_mult", (1, 1, 2, 2, 4, 4)))
    return {k: ddpm_key_to_diffusers(k, levels) for k in keys}


def _is_attention_linear(diffusers_key: str) -> bool:
    return bool(re.search(r"attentions\.\d+\.(to_q|to_k|to_v|to_out\.0)\.weight$", diffusers_key))


def ddpm_to_diffusers(state: Mapping[str, torch.Tensor], arch: Mapping) -> dict[str, torch.Tensor]:
    """An ermongroup DDPM state dict (ddim's `.ckpt`) of `DDPMUNet(**arch)` under the names and
    shapes of `UNet2DModel(**diffusers_config(arch))`."""
    names = key_map(arch)
    unknown = [k for k in state if k not in names]
    if unknown:
        raise KeyError(f"not a key of DDPMUNet(**arch): {unknown[0]}")
    out = {}
    for old, value in state.items():
        new = names[old]
        out[new] = value[:, :, 0, 0] if _is_attention_linear(new) and value.dim() == 4 else value
    return out


def diffusers_to_ddpm(state: Mapping[str, torch.Tensor], arch: Mapping) -> dict[str, torch.Tensor]:
    """A DDPM-family `UNet2DModel` state dict (google/ddpm-*) under the names and shapes of
    `DDPMUNet(**arch)`, so that such a file loads into the ermongroup network."""
    names = {new: old for old, new in key_map(arch).items()}
    unknown = [k for k in state if k not in names]
    if unknown:
        raise KeyError(f"not a key of the DDPM-family UNet2DModel: {unknown[0]}")
    return {
        names[k]: v[:, :, None, None] if _is_attention_linear(k) and v.dim() == 2 else v
        for k, v in state.items()
    }
