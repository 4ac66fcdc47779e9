"""DPS (Chung et al., ICLR 2023), after the official sampler (DPS2022/diffusion-posterior-sampling
`guided_diffusion/gaussian_diffusion.py` L170-207, L363-373; `condition_methods.py` L28-44, L78-87).

1000 ancestral DDPM steps; after each, the sample moves against the gradient (with respect to
x_t, through the network) of the residual norm ‖y − A x̂₀(x_t)‖ — not squared — with the step
size ζ of the official task configs. The norm is taken **per image**, so a batch of B images gives
the same per-image result as B separate runs (upstream's norm spans the whole batch and its
loop only runs at batch size 1, specs D10).

`steps` < 1000 is an explicit departure from the paper: respaced ancestral sampling, as
guided-diffusion's `timestep_respacing` (`rnsf.methods.respace`): the chain visits S evenly spread
timesteps τ (999 … 0) with betas recomputed from ᾱ of the kept steps, β̂ = 1 − ᾱ_τ / ᾱ_τ', and
the posterior and its variance of that shorter chain. `metrics.json` records it under
`method_params.protocol`; the paper's DPS numbers are 1000-step numbers.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from rnsf.diffusion import NUM_TIMESTEPS, linear_betas
from rnsf.methods.base import Method, StepInfo
from rnsf.methods.respace import respaced_betas, space_timesteps
from rnsf.operators.inpainting import Inpainting
from rnsf.utils.random import randn


@dataclass(kw_only=True)
class DPS(Method):
    """`scale` ζ: null picks the official value for the operator — 0.5 for inpainting
    (`configs/inpainting_config.yaml`), 0.3 otherwise (super-resolution and deblurring configs).

    Variance: `learned_range` when the network returns 6 channels, as guided-diffusion's
    checkpoints do (`diffusion_config.yaml`: model_var_type learned_range); `fixed_small` (the
    clipped posterior variance) for 3-channel networks, where upstream would misread ε as the
    variance interpolation (specs D11). x̂₀ is clamped to [-1, 1] (`clip_denoised: True`).
    """

    steps: int = NUM_TIMESTEPS
    scale: float | None = None
    scale_inpainting: float = 0.5
    scale_default: float = 0.3
    name: str = field(default="dps", init=False)
    needs_grad = True  # a class attribute, not a field
    protocol: str = field(default="", init=False)  # for metrics.json: paper or respaced

    def __post_init__(self) -> None:
        if int(self.steps) != self.steps or not 1 <= self.steps <= NUM_TIMESTEPS:
            raise ValueError(
                f"method.steps={self.steps}: DPS takes 1 to {NUM_TIMESTEPS} steps (the paper's "
                f"{NUM_TIMESTEPS}, or fewer, respaced)"
            )
        self.protocol = (
            f"paper: {NUM_TIMESTEPS} ancestral DDPM steps"
            if self.steps == NUM_TIMESTEPS
            else f"non-paper: {self.steps} of {NUM_TIMESTEPS} steps, respaced as guided-diffusion"
        )

    @property
    def nfe(self) -> int:
        return self.steps

    def describe(self, operator) -> dict:
        """The hyperparameters with ζ as this operator gets it."""
        return {**self.hyperparameters(), "scale": self.step_size(operator)}

    def step_size(self, operator) -> float:
        if self.scale is not None:
            return float(self.scale)
        return self.scale_inpainting if isinstance(operator, Inpainting) else self.scale_default

    def restore(self, y, operator, denoiser, generators, *, sigma_y=0.0, callback=None):
        zeta = self.step_size(operator)
        taus = space_timesteps(denoiser.num_timesteps, self.steps)  # all T: the paper's chain
        abar_all = denoiser._abar.tolist()
        # the chain over the kept steps: ᾱ_k = ᾱ_{τ_k} and β_k = 1 − ᾱ_{τ_k} / ᾱ_{τ_{k−1}}, from
        # float64 ᾱ as upstream's NumPy tables (with every step kept: the original betas up to
        # float64 round-off)
        abar64 = torch.cumprod(1 - linear_betas(denoiser.num_timesteps), 0).tolist()
        beta = respaced_betas(abar64, taus)
        abar = [1.0] + [abar_all[t + 1] for t in taus]
        # posterior variance β̃_k = β_k (1 − ᾱ_{k−1}) / (1 − ᾱ_k), log clipped at k = 0
        post_var = [beta[k] * (1 - abar[k]) / (1 - abar[k + 1]) for k in range(len(taus))]
        # (a one-step chain only takes the mean: its variance is never used)
        log_post = [math.log(post_var[1]) if len(taus) > 1 else 0.0]
        log_post += [math.log(v) for v in post_var[1:]]
        x_shape = operator.x_shape(y.shape)

        with torch.inference_mode(False), torch.enable_grad():
            y = y.clone()
            x = randn(x_shape[1:], generators, y.device, y.dtype)
            for i, k in enumerate(reversed(range(len(taus)))):
                t = taus[k]  # the network sees the original timestep
                a_t, a_prev = abar[k + 1], abar[k]
                x = x.detach().requires_grad_(True)
                tt = torch.full((x.shape[0],), t, device=x.device, dtype=torch.long)
                out = denoiser(x, tt)
                eps = out[:, : x.shape[1]]
                x0 = ((x - math.sqrt(1 - a_t) * eps) / math.sqrt(a_t)).clamp(-1, 1)
                # the DDPM posterior q(x_{t-1} | x_t, x̂₀)
                c1 = beta[k] * math.sqrt(a_prev) / (1 - a_t)
                c2 = (1 - a_prev) * math.sqrt(1 - beta[k]) / (1 - a_t)
                mean = c1 * x0 + c2 * x
                if out.shape[1] == 2 * x.shape[1]:  # learned_range
                    frac = (out[:, x.shape[1] :] + 1) / 2
                    log_var = frac * math.log(beta[k]) + (1 - frac) * log_post[k]
                    std = torch.exp(0.5 * log_var)
                else:  # fixed_small
                    std = math.exp(0.5 * log_post[k])
                z = randn(x_shape[1:], generators, y.device, y.dtype)
                x_next = mean + std * z if k > 0 else mean
                # measurement step: ∇_{x_t} Σ_b ‖y_b − A x̂₀,b‖ (per-image norms)
                residual = (y - operator.A(x0)).flatten(1).norm(dim=1).sum()
                (grad,) = torch.autograd.grad(residual, x)
                x = (x_next - zeta * grad).detach()
                if callback is not None:
                    callback(StepInfo(index=i, t=t, x=x, x0=x0.detach(), x0_corrected=x0.detach()))
        return x
