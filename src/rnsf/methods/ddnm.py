"""DDNM (Wang et al., ICLR 2023) and RNSF, which share one sampler.

The loop follows the RNSF paper's Algorithm 1 line by line; λ ≡ 1 is DDNM
(official `functions/svd_ddnm.py::ddnm_diffusion`, SVD path, L19-78), and with σ_y > 0 the data
step uses DDNM+'s per-singular-value weights and noise split (`ddnm_plus_diffusion`, L80-164),
applying Vᵀ to z and ε where upstream omits it (specs D4). DDNM+ weighs with each operator's
`ddnm_plus_singulars`: the upstream deblurring operators' unthresholded `_singulars_orig`, the
operator's own singular values otherwise. ᾱ is DDNM's float32 table (`compute_alpha`).
With a classifier (`model=adm_imagenet256_cond`), ε is guided as `ddnm_diffusion` does with
`cls_fn` (L46-52): ε ← ε − √(1−ᾱ_t) s ∇ log p(c | x_t), at x_t, for each image's class c.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from rnsf.diffusion import NUM_TIMESTEPS, sqrt32, time_travel_pairs
from rnsf.methods.base import Method, StepInfo
from rnsf.methods.state import SamplerState
from rnsf.operators.base import SVDOperator
from rnsf.schedules.lambdas import ConstantSchedule, LambdaSchedule
from rnsf.utils.errors import UserError
from rnsf.utils.random import randn


@dataclass
class DDNM(Method):
    """Range–null-space sampling. Defaults from the official code: 100 steps, η = 0.85
    (`main.py` L41-43, `configs/*.yml` T_sampling: 100), no time travel (L = R = 1)."""

    steps: int = 100
    eta: float = 0.85
    travel_length: int = 1
    travel_repeat: int = 1
    name: str = field(default="ddnm", init=False)
    #: honours the overlap constraint of tiled restoration (`rnsf.methods.constraint`)
    supports_known = True
    needs_svd_with_noise = True  # DDNM+'s per-singular-value weights
    resumable = True  # state: the iterate, and x̂₀ when time travel re-noises it

    def __post_init__(self) -> None:
        if not 0.0 <= self.eta <= 1.0:
            raise ValueError(f"method.eta must lie in [0, 1], got {self.eta}")
        self.pairs = time_travel_pairs(self.steps, self.travel_length, self.travel_repeat)
        self.travels = any(t_next > t for t, t_next in self.pairs)

    @property
    def nfe(self) -> int:
        return sum(t_next < t for t, t_next in self.pairs)

    def fusion_weight(self, s: float) -> float:
        """λ at s = t/T; DDNM always projects fully."""
        return 1.0

    def restore(
        self,
        y,
        operator,
        denoiser,
        generators,
        *,
        sigma_y=0.0,
        callback=None,
        known=None,
        state=None,
    ):
        if sigma_y > 0 and not isinstance(operator, SVDOperator):
            raise UserError(
                f"{self.name} with task.sigma > 0 needs an operator with an SVD, and "
                f"{type(operator).__name__} has none; use task.sigma=0"
            )
        # DDNM's float32 ᾱ (compute_alpha), one host copy before the loop: abar[t + 1] = ᾱ_t
        abar32 = denoiser.alphas_cumprod(torch.float32, "cpu")
        abar, root_1m = abar32.tolist(), sqrt32(1 - abar32).tolist()
        eta, eta_c = self.eta, math.sqrt(1.0 - self.eta**2)
        x_shape = operator.x_shape(y.shape)

        def noise():
            return randn(x_shape[1:], generators, y.device, y.dtype)

        state = state or SamplerState()  # a stopped batch continues from state.step
        if state.step:
            x, x0 = state.x, state.carry.get("x0")
        else:
            x, x0 = noise(), None  # x_T ~ N(0, I)
        nfe = sum(t_next < t for t, t_next in self.pairs[: state.step])
        for i, (t, t_next) in enumerate(self.pairs[state.step :], start=state.step):
            a_next = abar[t_next + 1]
            if t_next > t:  # time travel: re-noise the latest x̂₀ up to level t_next (upstream D5)
                x = math.sqrt(a_next) * x0 + math.sqrt(1 - a_next) * noise()
                state.reached(i + 1, x)
                continue
            # Algorithm 1: ε = ε_θ(x_t, t);  x̂₀|t = (x_t − √(1−ᾱ_t) ε) / √ᾱ_t
            eps = denoiser.eps(x, t)
            guide = denoiser.classifier_gradient(x, t)  # s ∇ log p(c | x_t), or None
            if guide is not None:  # classifier guidance: ε − √(1−ᾱ_t) s ∇ log p(c | x_t)
                eps = eps - root_1m[t + 1] * guide
            x0 = denoiser.x0_from_eps(x, eps, t)
            # Theorem 3.1: x̃₀ = λ_t [A†y + (I − A†A) x̂₀] + (1 − λ_t) x̂₀ = x̂₀ − λ_t A†(A x̂₀ − y)
            lam = self.fusion_weight(t / NUM_TIMESTEPS)
            sigma_t, a = math.sqrt(1 - a_next), math.sqrt(a_next)
            x0_tilde = x0
            if lam != 0.0:  # λ = 0 keeps x̂₀: no projection to compute
                correction = operator.A_pinv(operator.A(x0) - y)
                if sigma_y > 0:  # DDNM+: damp the correction where y's noise exceeds σ_t
                    correction = operator.V(
                        self._ddnm_plus_weight(operator, x0, a, sigma_t, sigma_y)
                        * operator.Vt(correction)
                    )
                x0_tilde = x0 - lam * correction
            if known is not None:  # mask-shift: the overlap keeps the earlier windows' result
                x0_tilde = known.apply(x0_tilde)
            # x_{t'} = √ᾱ_{t'} x̃₀ + √(1−ᾱ_{t'}) (η z + √(1−η²) ε),  z ~ N(0, I)
            if sigma_y > 0:
                x = a * x0_tilde + self._ddnm_plus_noise(
                    operator, noise(), eps, a, sigma_t, sigma_y
                )
            else:
                x = a * x0_tilde + sigma_t * (eta * noise() + eta_c * eps)
            # time travel re-noises this x̂₀ later: it goes with the iterate
            state.reached(i + 1, x, **({"x0": x0} if self.travels else {}))
            if callback is not None:
                callback(StepInfo(index=nfe, t=t, x=x, x0=x0, x0_corrected=x0_tilde))
            nfe += 1
        return x

    def _ddnm_plus_weight(self, op, like, a, sigma_t, sigma_y):
        """λ_k = s_k σ_t √(1−η²) / a / σ_y where σ_t < a σ_y / s_k, else 1 (`Lambda`)."""
        s = op.ddnm_plus_singulars(like)
        inv = torch.where(s > 0, 1 / torch.where(s > 0, s, 1), 0)
        noisy = sigma_t < a * sigma_y * inv
        return torch.where(noisy, s * sigma_t * math.sqrt(1 - self.eta**2) / a / sigma_y, 1.0)

    def _ddnm_plus_noise(self, op, z, eps, a, sigma_t, sigma_y):
        """V(d₁ ⊙ Vᵀz + d₂ ⊙ Vᵀε) with DDNM+'s split (`Lambda_noise`), Vᵀ applied to z and ε:
        d₁ = σ_t η, d₂ = 0 where σ_t < a σ_y / s_k; d₁ = √(σ_t² − a² σ_y² / s_k²), d₂ = 0 where
        σ_t > a σ_y / s_k; d₁ = σ_t η, d₂ = σ_t √(1−η²) where s_k = 0 (and at equality)."""
        s = op.ddnm_plus_singulars(z)
        inv = torch.where(s > 0, 1 / torch.where(s > 0, s, 1), 0)
        bound = a * sigma_y * inv
        less, more, null = sigma_t < bound, sigma_t > bound, s == 0
        d1 = torch.full_like(s, sigma_t * self.eta)
        d2 = torch.full_like(s, sigma_t * math.sqrt(1 - self.eta**2))
        d2 = torch.where(less | more, 0.0, d2)
        budget = (sigma_t**2 - a**2 * sigma_y**2 * inv**2).clamp_min(0)
        d1 = torch.where(more, budget.sqrt(), d1)
        d1 = torch.where(null, sigma_t * self.eta, d1)
        d2 = torch.where(null, sigma_t * math.sqrt(1 - self.eta**2), d2)
        return op.V(d1 * op.Vt(z) + d2 * op.Vt(eps))


@dataclass
class RNSF(DDNM):
    """Range Null-Space Fusion: DDNM's sampler with the range correction weighted by λ(t/T)
    from a schedule (the paper's `exp` by default)."""

    schedule: LambdaSchedule = field(default_factory=ConstantSchedule)
    name: str = field(default="rnsf", init=False)

    def fusion_weight(self, s: float) -> float:
        return self.schedule(s)
