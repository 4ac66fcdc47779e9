"""The built-in prior: a TinyUNet trained by `python train.py` on package photos, shipped as
`weights/tiny_prior.pt` (EMA weights in fp16 plus the architecture)."""

from __future__ import annotations

from pathlib import Path

import torch

from rnsf.denoisers.base import Denoiser
from rnsf.denoisers.tiny_unet import TinyUNet
from rnsf.utils.errors import UserError

WEIGHTS = Path(__file__).with_name("weights") / "tiny_prior.pt"


def load_tiny_prior(
    checkpoint: str | Path | None = None, precision: str = "fp32", compile: bool | str = False
) -> Denoiser:
    """Build the TinyUNet described by the file and load its weights (strict, weights only).

    With the defaults it is the plain TinyUNet (exact fp32, eager); another `precision` or a
    `compile` option wraps it in a `PretrainedDenoiser` that runs it so (`model.precision=bf16`
    on the command line)."""
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
    if precision == "fp32" and compile in (False, None, "false"):
        return model
    from rnsf.denoisers.pretrained import PretrainedDenoiser

    return PretrainedDenoiser(
        model, name="tiny", native_size=None, precision=precision, compile=compile
    )
