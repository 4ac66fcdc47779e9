"""Priors whose optimal ε-predictor is known in closed form, for tests with known answers.

For x_t = √ᾱ x₀ + √(1−ᾱ) ε the MMSE noise estimate is ε̂ = (x_t − √ᾱ E[x₀ | x_t]) / √(1−ᾱ).
Both take integer timesteps, and float ones too (DAPS passes a continuous timestep, as a UNet's
sinusoidal embedding takes it): ᾱ is then interpolated log-linearly between the table's entries.
"""

from __future__ import annotations

import torch

from rnsf.denoisers.base import Denoiser


def alpha_bar_at(denoiser: Denoiser, t: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """ᾱ_t for timesteps t (B,): the table entry for integer t; for float t, log ᾱ interpolated
    linearly between the neighbouring integer steps (t clamped to [0, T − 1])."""
    table = denoiser.alphas_cumprod(dtype, t.device)
    if not t.is_floating_point():
        return table[t + 1]
    t = t.to(dtype).clamp(0, denoiser.num_timesteps - 1)
    low = t.floor().long().clamp(max=denoiser.num_timesteps - 2)
    w = t - low
    log = table.log()
    return torch.exp((1 - w) * log[low + 1] + w * log[low + 2])


class GaussianPrior(Denoiser):
    """x₀ ~ N(mean, std²) independently per pixel (mean and std broadcast to (C, H, W)):
    E[x₀ | x_t] = mean + √ᾱ std² (x_t − √ᾱ mean) / (ᾱ std² + 1 − ᾱ)."""

    def __init__(self, mean: float | torch.Tensor = 0.0, std: float | torch.Tensor = 0.5) -> None:
        super().__init__()
        self.register_buffer("mean", torch.as_tensor(mean, dtype=torch.float32))
        self.register_buffer("std", torch.as_tensor(std, dtype=torch.float32))

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        abar = alpha_bar_at(self, t, torch.float32).view(-1, 1, 1, 1).to(x.dtype)
        var = self.std**2
        x0 = self.mean + abar.sqrt() * var * (x - abar.sqrt() * self.mean) / (abar * var + 1 - abar)
        return (x - abar.sqrt() * x0) / (1 - abar).sqrt()


class FiniteSetPrior(Denoiser):
    """The data distribution is uniform on a finite set of images (K, C, H, W); the exact
    posterior mean is a softmax-weighted average of the set:
    w_k ∝ exp(−‖x_t − √ᾱ x_k‖² / (2 (1 − ᾱ)))."""

    def __init__(self, images: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("images", images.float())

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        abar = alpha_bar_at(self, t, torch.float32).view(-1, 1).double()
        flat = x.flatten(1).double()
        data = self.images.flatten(1).double()
        dist2 = ((flat[:, None] - abar.sqrt()[:, :, None] * data[None]) ** 2).sum(-1)
        weights = torch.softmax(-dist2 / (2 * (1 - abar)), dim=1)
        x0 = (weights @ data).view_as(x)
        abar4 = abar.view(-1, 1, 1, 1)
        return ((x.double() - abar4.sqrt() * x0) / (1 - abar4).sqrt()).to(x.dtype)
