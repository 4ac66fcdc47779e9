"""The denoiser protocol every method talks to: ε-prediction on the shared diffusion."""

from __future__ import annotations

import torch
from torch import nn

from rnsf.diffusion import NUM_TIMESTEPS, alphas_cumprod_with_start, linear_betas


class Denoiser(nn.Module):
    """A frozen ε-prediction network on the linear-β VP diffusion.

    Subclasses implement `forward(x_t, t) -> ε` for images in [-1, 1] and integer timesteps
    t ∈ [0, T-1] of shape (B,). Networks that also predict a variance (6 output channels) return
    only the first 3 channels from `eps`.
    """

    #: spatial sizes must be a multiple of this (e.g. 2**levels for a UNet)
    size_multiple: int = 1
    #: sizes the network was trained for; None when any multiple of `size_multiple` works
    native_size: int | None = None

    def __init__(self, num_timesteps: int = NUM_TIMESTEPS) -> None:
        super().__init__()
        self.num_timesteps = num_timesteps
        abar = alphas_cumprod_with_start(linear_betas(num_timesteps))
        self.register_buffer("_abar", abar, persistent=False)

    def alpha_bar(self, t: int) -> torch.Tensor:
        """ᾱ_t as a 0-d tensor on the model's device; t = -1 gives 1."""
        return self._abar[t + 1]

    def eps(self, x: torch.Tensor, t: int) -> torch.Tensor:
        """ε̂(x_t, t) for a batch at one shared timestep t."""
        tt = torch.full((x.shape[0],), t, device=x.device, dtype=torch.long)
        out = self(x, tt)
        return out[:, : x.shape[1]] if out.shape[1] != x.shape[1] else out

    def describe(self, device: torch.device | None = None) -> dict:
        """How the network runs, for metrics.json: precision, compile mode, compile seconds."""
        return {"precision": "fp32", "compile": None, "compile_seconds": None}

    def check_size(self, height: int, width: int) -> None:
        """Raise a ValueError naming the size and the fix when the network cannot take it."""
        m = self.size_multiple
        if height % m or width % m:
            raise ValueError(
                f"image size {height}x{width} is not a multiple of {m}, which "
                f"{type(self).__name__} needs; set dataset.image_size to a multiple of {m}"
            )
