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

Arithmetic as upstream: guided-diffusion's float64 tables (ᾱ, the posterior mean coefficients and
log-variances, log β), cast to float32 where used (`extract_and_expand`). They are built once per
device, and stay there (`posterior_tables`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from rnsf.diffusion import NUM_TIMESTEPS, spaced_diffusion
from rnsf.methods.base import Method, StepInfo
from rnsf.methods.respace import space_timesteps
from rnsf.methods.state import SamplerState
from rnsf.operators.inpainting import Inpainting
from rnsf.utils.random import randn


def posterior_tables(abar: torch.Tensor, timesteps: list[int]) -> torch.Tensor:
    """(4, K) float32 for the chain over the K kept `timesteps` (all T: the paper's), from the
    float64 ᾱ table (entry t + 1 = ᾱ_t): the posterior mean coefficients
    c₁ = β_k √ᾱ_{k−1}/(1 − ᾱ_k) and c₂ = (1 − ᾱ_{k−1}) √(1 − β_k)/(1 − ᾱ_k), the clipped
    posterior log-variance log β̃_k (β̃_0 replaced by β̃_1) and log β_k; computed in float64 as
    guided-diffusion's `GaussianDiffusion.__init__` with the betas of its `SpacedDiffusion`, then
    cast."""
    beta, a = spaced_diffusion(abar, timesteps)
    a_prev = torch.cat([a.new_ones(1), a[:-1]])
    posterior_var = beta * (1.0 - a_prev) / (1.0 - a)
    if len(timesteps) > 1:
        log_clipped = torch.cat([posterior_var[1:2], posterior_var[1:]]).log()
    else:  # a one-step chain only takes the mean: its variance is never used
        log_clipped = torch.zeros_like(posterior_var)
    return torch.stack(
        [
            beta * a_prev.sqrt() / (1.0 - a),
            (1.0 - a_prev) * (1.0 - beta).sqrt() / (1.0 - a),
            log_clipped,
            beta.log(),
        ]
    ).float()


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
    resumable = True  # state: the iterate (the chain carries nothing else)
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

    def tables(self, denoiser, timesteps: list[int], device) -> torch.Tensor:
        """`posterior_tables` of the denoiser's float64 ᾱ on `device`, built once per device."""
        cache = self.__dict__.setdefault("_tables", {})
        key = (tuple(timesteps), torch.device(device))
        if key not in cache:
            abar = denoiser.alphas_cumprod(torch.float64, "cpu")
            cache[key] = posterior_tables(abar, timesteps).to(device)
        return cache[key]

    def restore(self, y, operator, denoiser, generators, *, sigma_y=0.0, callback=None, state=None):
        zeta = self.step_size(operator)
        taus = space_timesteps(denoiser.num_timesteps, self.steps)  # all T: the paper's chain
        coef1, coef2, min_log, max_log = self.tables(denoiser, taus, y.device)
        x_shape = operator.x_shape(y.shape)

        with torch.inference_mode(False), torch.enable_grad():
            y = y.clone()
            state = state or SamplerState()  # a stopped batch continues from state.step
            x = state.x if state.step else randn(x_shape[1:], generators, y.device, y.dtype)
            chain = list(reversed(range(len(taus))))
            for i, k in enumerate(chain[state.step :], start=state.step):
                t = taus[k]  # the network sees the original timestep
                x = x.detach().requires_grad_(True)
                eps, var_values = denoiser.eps_and_variance(x, t)
                x0 = denoiser.x0_from_eps(x, eps, t, torch.float64).clamp(-1, 1)
                # the DDPM posterior q(x_{t-1} | x_t, x̂₀)
                mean = coef1[k] * x0 + coef2[k] * x
                if var_values is not None:  # learned_range
                    frac = (var_values + 1.0) / 2.0
                    std = torch.exp(0.5 * (frac * max_log[k] + (1 - frac) * min_log[k]))
                else:  # fixed_small
                    std = torch.exp(0.5 * min_log[k])
                z = randn(x_shape[1:], generators, y.device, y.dtype)
                x_next = mean + std * z if k > 0 else mean
                # measurement step: ∇_{x_t} Σ_b ‖y_b − A x̂₀,b‖ (per-image norms)
                residual = (y - operator.A(x0)).flatten(1).norm(dim=1).sum()
                (grad,) = torch.autograd.grad(residual, x)
                x = (x_next - zeta * grad).detach()
                state.reached(i + 1, x)
                if callback is not None:
                    callback(StepInfo(index=i, t=t, x=x, x0=x0.detach(), x0_corrected=x0.detach()))
        return x
