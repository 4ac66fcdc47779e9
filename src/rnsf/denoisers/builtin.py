"""The built-in prior: a TinyUNet trained by `python train.py` on package photos, shipped as
`weights/tiny_prior.pt` (EMA weights in fp16 plus the architecture)."""

from __future__ import annotations

from pathlib import Path

import torch

from rnsf.denoisers.base import Denoiser
from rnsf.denoisers.execution import COMPILE_OFF, ExecutionPolicy
from rnsf.denoisers.tiny_unet import TinyUNet
from rnsf.utils.errors import UserError
from rnsf.utils.schema import RUNTIME_SCHEMA

WEIGHTS = Path(__file__).with_name("weights") / "tiny_prior.pt"


def load_tiny_prior(checkpoint: str | Path | None = None, **runtime) -> Denoiser:
    """Build the TinyUNet described by the file and load its weights (strict, weights only).

    `runtime`: the options of `ExecutionPolicy` (precision, channels_last, compile,
    checkpointing). With the defaults it is the plain TinyUNet (exact fp32, eager); another
    `precision` or a `compile` option wraps it in a `PretrainedDenoiser` that runs it so
    (`model.precision=bf16` on the command line)."""
    policy = ExecutionPolicy(name="tiny", **runtime)
    path = Path(checkpoint) if checkpoint else WEIGHTS
    if not path.is_file():
        raise UserError(
            f"built-in prior weights not found at {path}; reinstall rnsf or train them with "
            f"`python train.py export_to={path}`"
        )
    payload = torch.load(path, map_location="cpu", weights_only=True)
    arch = payload["arch"]
    model = TinyUNet(channels=tuple(arch["channels"]), num_res_blocks=arch["num_res_blocks"])
    model.load_state_dict({k: v.float() for k, v in payload["state_dict"].items()}, strict=True)
    model.training_steps = int(payload.get("steps", 0))
    model = model.eval().requires_grad_(False)
    plain = policy.precision == "fp32" and policy.compile in COMPILE_OFF
    if plain and not policy.checkpointing:
        return model
    from rnsf.denoisers.pretrained import PretrainedDenoiser

    return PretrainedDenoiser(model, name="tiny", native_size=None, policy=policy)


load_tiny_prior.config_schema = RUNTIME_SCHEMA
