"""DDRM (Kawar et al., NeurIPS 2022), after the official `efficient_generalized_steps`
(bahjat-kawar/ddrm `functions/denoising.py` L11-106).

The sampler works in the operator's spectral coordinates x̄ = Vᵀx of the variance-exploding
form x_VE = x / √ᾱ, with σ_t = √(1 − ᾱ_t) / √ᾱ_t and ȳ = Uᵀy / s. Each coordinate is updated by
one of three rules:

- missing (s = 0):                   x̄' = x̄₀ + √(1−η²) σ' ε̄ + η σ' z
- less noisy than y (s σ' < σ_y):    x̄' = x̄₀ + √(1−η²) σ' (Uᵀy − s x̄₀) / σ_y + η σ' z
- noisier than y (s σ' > σ_y):       x̄' = η_b ȳ + (1−η_b) x̄₀ + √(σ'² − η_b² σ_y² / s²) z

The output is x̂₀ at t = 0 with no final projection, as upstream (specs D2).

With a class-conditional network and a classifier (`model=adm_imagenet256_cond`), ε is guided as
in DDRM's `efficient_generalized_steps` with `cls_fn`: ε ← ε − √(1−ᾱ_t) s ∇ log p(c | x_t), s the
classifier scale and c each image's class; the gradient is taken at x_t (upstream passes the
initial x, specs D6).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from rnsf.diffusion import NUM_TIMESTEPS, sqrt32
from rnsf.methods.base import Method, StepInfo
from rnsf.methods.state import SamplerState
from rnsf.operators.base import SVDOperator
from rnsf.utils.errors import UserError
from rnsf.utils.random import randn


def ddrm_timesteps(steps: int, num_timesteps: int = NUM_TIMESTEPS) -> list[int]:
    """DDRM's `seq = range(0, T, T // steps)`, visited from the last; 30 steps visit 31."""
    if not 1 <= steps <= num_timesteps:
        raise ValueError(f"method.steps={steps} must lie in [1, {num_timesteps}]")
    return list(range(0, num_timesteps, num_timesteps // steps))


@dataclass(kw_only=True)
class DDRM(Method):
    """Defaults from the official CLI: η = 0.85 for the "less noisy" and "missing" rules,
    η_b = 1.0 for the "noisier" rule (`main.py` L60-75, `runners/diffusion.py` L337-338).

    Departures from upstream: x_T is mapped from the variance-exploding form with the exact
    factor √ᾱ_T (upstream divides by σ_T, a 5e-5 relative difference, specs D4); one z per
    step serves all three rules (upstream draws three, which is the same in distribution);
    singular values zeroed by an operator's threshold take the "missing" rule also with noise
    (upstream sends them to the "less noisy" rule, specs D5).
    """

    steps: int = 100
    eta: float = 0.85
    eta_b: float = 1.0
    name: str = field(default="ddrm", init=False)
    needs_svd = True  # the sampler works in the operator's spectral coordinates
    resumable = True  # state: the iterate (all else follows from y)

    def __post_init__(self) -> None:
        for key, value in (("eta", self.eta), ("eta_b", self.eta_b)):
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"method.{key} must lie in [0, 1], got {value}")
        self.timesteps = ddrm_timesteps(self.steps)

    @property
    def nfe(self) -> int:
        return len(self.timesteps)

    def restore(self, y, operator, denoiser, generators, *, sigma_y=0.0, callback=None, state=None):
        if not isinstance(operator, SVDOperator):
            raise UserError(
                f"ddrm needs an operator with an SVD (V, Vt, U, Ut, singulars); "
                f"{type(operator).__name__} has none: pick another method or give it an SVD"
            )
        # DDRM's float32 ᾱ (compute_alpha), one host copy before the loop: abar[t + 1] = ᾱ_t
        abar32 = denoiser.alphas_cumprod(torch.float32, "cpu")
        abar, root_1m = abar32.tolist(), sqrt32(1 - abar32).tolist()
        eta, eta_b, sy = self.eta, self.eta_b, float(sigma_y)
        x_shape = operator.x_shape(y.shape)

        def noise():
            return randn(x_shape[1:], generators, y.device, y.dtype)

        y_hat = operator.Ut(y)  # Uᵀy in spectral coordinates (zero off the range)
        s = operator.singulars(y_hat).expand_as(y_hat)
        in_range = s > 0
        s_safe = torch.where(in_range, s, 1.0)
        y_bar = torch.where(in_range, y_hat / s_safe, 0.0)  # ȳ = Uᵀy / s

        def sigma(t: int) -> float:  # VE noise level of timestep t
            return math.sqrt(1 - abar[t + 1]) / math.sqrt(abar[t + 1])

        state = state or SamplerState()  # a stopped batch continues from state.step
        if state.step:
            x = state.x
        else:  # initialisation from y (L20-39): coordinates that y pins down start at ȳ
            t_first = self.timesteps[-1]
            sig = sigma(t_first)
            large = in_range & (s * sig > sy)
            spread = (sig**2 - (sy / s_safe) ** 2).clamp_min(0).sqrt()
            z = noise()
            v = torch.where(large, y_bar + spread * z, sig * z)
            x = math.sqrt(abar[t_first + 1]) * operator.V(v)

        seq_next = [-1, *self.timesteps[:-1]]
        pairs = list(zip(reversed(self.timesteps), reversed(seq_next), strict=True))
        for i, (t, t_next) in enumerate(pairs[state.step :], start=state.step):
            a_next = abar[t_next + 1]
            eps = denoiser.eps(x, t)
            guide = denoiser.classifier_gradient(x, t)  # s ∇ log p(c | x_t), or None
            if guide is not None:  # classifier guidance: ε − √(1−ᾱ_t) s ∇ log p(c | x_t)
                eps = eps - root_1m[t + 1] * guide
            x0 = denoiser.x0_from_eps(x, eps, t)
            sig_next = sigma(t_next)
            x0_bar, eps_bar, z = operator.Vt(x0), operator.Vt(eps), noise()

            before = in_range & (s * sig_next > sy)
            after = in_range & (s * sig_next < sy)
            missing = x0_bar + math.sqrt(1 - eta**2) * sig_next * eps_bar + eta * sig_next * z
            less_noisy = (
                x0_bar
                + math.sqrt(1 - eta**2) * sig_next * (y_hat - s * x0_bar) / (sy if sy > 0 else 1.0)
                + eta * sig_next * z
            )
            noisier = (
                eta_b * y_bar
                + (1 - eta_b) * x0_bar
                + (sig_next**2 - (eta_b * sy / s_safe) ** 2).clamp_min(0).sqrt() * z
            )
            x_bar = torch.where(before, noisier, torch.where(after, less_noisy, missing))
            x = math.sqrt(a_next) * operator.V(x_bar)
            state.reached(i + 1, x)
            if callback is not None:
                callback(StepInfo(index=i, t=t, x=x, x0=x0, x0_corrected=x0))
        return x
