"""SSD and SSD+ (Liu et al., IJCAI 2024, "Shortcut Sampling for Diffusion"), after the official
code (GongyeLiu/SSD `trainer/trainer.py` L255-420, `trainer/sampler.py` L34-39, L229-332).

1. Distortion-adaptive (DA) inversion: from x = A†y at t = 0 up to the transitional state at
   t₀ − 1, x_{i+1} = √ᾱ_{i+1} f + √(1 − ᾱ_{i+1} − η_inv β̂_{i+1}) ε + √(η_inv β̂_{i+1}) z with
   f = clamp(x̂₀) and β̂ the respaced beta.
2. Generation with back projection: x̂₀ = clamp(x̂₀); x̂₀ ← x̂₀ − A†(A x̂₀ − y); then
   x_prev = √ᾱ_prev x̂₀ + √(1−η²) √(1−ᾱ_prev) ε + η √(1−ᾱ_prev) z. SSD+ stops projecting once
   t falls below `stop_consistency_t`.

Both chains run on the timesteps of `create_space_timesteps` (`guided_diffusion/script_util.py`
L158-177), which accumulates the float stride (t₀ − 1)/(N − 1) and rounds each partial sum. The
inversion calls the network F − 1 times, the generation B times: SSD-100 (F/B = 15/85) makes 99
calls, SSD-30 (5/25) 29.

Arithmetic as upstream: ᾱ and every coefficient come from guided-diffusion's float64 tables of the
two respaced chains, cast to float32 where used (`_extract_into_tensor`), and the few square roots
upstream takes of an extracted ᾱ are float32 ones. The coefficients are built once per device and
chain, and stay there.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from rnsf.diffusion import spaced_diffusion, sqrt32
from rnsf.methods.base import Method, StepInfo
from rnsf.methods.state import SamplerState
from rnsf.operators.colorization import Colorization
from rnsf.utils.random import randn

#: official forward / backward step counts (run/infer_*_100.sh and *_30.sh)
STEP_PRESETS = {100: (15, 85), 30: (5, 25)}


def spaced_timesteps(t0: int, count: int) -> list[int]:
    """`create_space_timesteps`: round(c_k) for c_0 = 0, c_{k+1} = c_k + (t₀ − 1)/(count − 1),
    k = 0 … count − 1 (Python's round). The accumulated float sum rounds some halves the other
    way than round(k (t₀ − 1)/(count − 1)) would: 457, not 458, at index 70 for t₀ = 550 and 85
    steps."""
    if count < 2:
        raise ValueError(f"SSD needs at least 2 timesteps per chain, got {count}")
    if count > t0:
        raise ValueError(f"SSD cannot space {count} timesteps over t0={t0}: use fewer steps")
    stride, cur, steps = (t0 - 1) / (count - 1), 0.0, []
    for _ in range(count):
        steps.append(round(cur))
        cur += stride
    return steps


def inversion_coefficients(abar: torch.Tensor, taus: list[int], eta: float) -> torch.Tensor:
    """(3, F − 1) float32 for the DA inversion from τ_i to τ_{i+1}: √ᾱ_{i+1} (a float32 root of
    the extracted ᾱ), √(1 − ᾱ_{i+1} − η β̂_{i+1}) and √(η β̂_{i+1}) (float64, then cast), with
    β̂ the forward chain's respaced betas (`trainer/sampler.py` L34-39, L307-318)."""
    beta, a = spaced_diffusion(abar, taus)
    beta, a_next = beta[1:], a[1:]
    return torch.stack(
        [
            sqrt32(a_next),
            (1 - a_next - eta * beta).clamp_min(0).sqrt().float(),
            (eta * beta).sqrt().float(),
        ]
    )


def generation_coefficients(abar: torch.Tensor, taus: list[int], eta: float) -> torch.Tensor:
    """(3, B) float32 for the step from τ_i to τ_{i−1} (ᾱ_prev = 1 at i = 0): √ᾱ_prev,
    √(1−η²)·√(1−ᾱ_prev) and η·√(1−ᾱ_prev), in float32 from the extracted ᾱ_prev, as
    `p_sample_svd` (`trainer/sampler.py` L229-266) computes them."""
    prev = torch.cat([abar.new_ones(1), spaced_diffusion(abar, taus)[1][:-1]]).float()
    root = sqrt32(1 - prev)
    return torch.stack([sqrt32(prev), (1 - eta**2) ** 0.5 * root, eta * root])


@dataclass(kw_only=True)
class SSD(Method):
    """`steps` picks the official F/B split (100 → 15/85, 30 → 5/25; otherwise F = ⌈0.15 S⌉, at
    least the 2 an inversion chain needs, so short debug runs such as debug=tiny's 5 work);
    `forward_steps`/`backward_steps` set it directly. `insert_step` t₀ and `noise_eta` (the
    inversion's η) default per operator as the official scripts: t₀ = 550 and η = 0.4, but
    t₀ = 750 and η = 0.8 for colorization; `ddim_eta` 0.8 (`configs/inference/*.yaml`)."""

    steps: int = 100
    forward_steps: int | None = None
    backward_steps: int | None = None
    insert_step: int | None = None
    noise_eta: float | None = None
    ddim_eta: float = 0.8
    consistency_until: int | None = None  # SSD+: last projected t (None: project every step)
    name: str = field(default="ssd", init=False)
    resumable = True  # state: the iterate; the step index says the stage (inversion, generation)

    def __post_init__(self) -> None:
        f, b = STEP_PRESETS.get(self.steps, (max(2, math.ceil(0.15 * self.steps)), None))
        self.forward_steps = self.forward_steps or f
        self.backward_steps = self.backward_steps or b or self.steps - self.forward_steps
        if self.forward_steps < 2 or self.backward_steps < 1:
            raise ValueError(
                f"SSD needs forward_steps >= 2 and backward_steps >= 1, got "
                f"{self.forward_steps}/{self.backward_steps}"
            )

    @property
    def nfe(self) -> int:
        return self.forward_steps - 1 + self.backward_steps

    def settings(self, operator) -> tuple[int, float]:
        """(t₀, inversion η) for this operator: the official per-task values unless set."""
        colour = isinstance(operator, Colorization)
        t0 = self.insert_step or (750 if colour else 550)
        eta = self.noise_eta if self.noise_eta is not None else (0.8 if colour else 0.4)
        return t0, eta

    def describe(self, operator) -> dict:
        """The hyperparameters with t₀ and the inversion η as this operator gets them."""
        t0, eta = self.settings(operator)
        return {**self.hyperparameters(), "insert_step": t0, "noise_eta": eta}

    def project_at(self, index: int, t0: int) -> bool:
        """SSD projects at every generation step; SSD+ at the first ⌊(t₀ − stop)/t₀ · B⌋."""
        if self.consistency_until is None:
            return True
        return index < int((t0 - self.consistency_until) / t0 * self.backward_steps)

    def coefficients(self, denoiser, operator, device) -> tuple:
        """(t₀, forward and backward timesteps, inversion and generation coefficients), built
        once per device and operator kind from the denoiser's float64 ᾱ table."""
        t0, eta_inv = self.settings(operator)
        key = (t0, eta_inv, self.ddim_eta, torch.device(device))
        cache = self.__dict__.setdefault("_coefficients", {})
        if key not in cache:
            abar = denoiser.alphas_cumprod(torch.float64, "cpu")
            forward = spaced_timesteps(t0, self.forward_steps)
            backward = spaced_timesteps(t0, self.backward_steps)
            cache[key] = (
                t0,
                forward,
                backward,
                inversion_coefficients(abar, forward, eta_inv).to(device),
                generation_coefficients(abar, backward, self.ddim_eta).to(device),
            )
        return cache[key]

    def restore(self, y, operator, denoiser, generators, *, sigma_y=0.0, callback=None, state=None):
        t0, forward, backward, inv, gen = self.coefficients(denoiser, operator, y.device)
        x_shape = operator.x_shape(y.shape)

        def noise():
            return randn(x_shape[1:], generators, y.device, y.dtype)

        def x0_of(x, t):  # guided-diffusion's _predict_xstart_from_eps on float64 ᾱ, clamped
            eps = denoiser.eps(x, t)
            return eps, denoiser.x0_from_eps(x, eps, t, torch.float64).clamp(-1, 1)

        # steps 0 … F − 2 invert, the next B generate: state.step says the stage
        state = state or SamplerState()  # a stopped batch continues from state.step
        inverted = len(forward) - 1
        # 1. DA inversion from A†y (t = 0) to the transitional state at t₀ − 1
        x = state.x if state.step else operator.A_pinv(y)
        for i, t in enumerate(forward[:-1]):
            if i < state.step:
                continue
            eps, f = x0_of(x, t)
            x = f * inv[0, i] + inv[1, i] * eps + inv[2, i] * noise()
            state.reached(i + 1, x)
            if callback is not None:
                callback(StepInfo(index=i, t=t, x=x, x0=f, x0_corrected=f))
        # 2. generation with back projection from t₀ − 1 down to 0
        for index, i in enumerate(reversed(range(self.backward_steps))):
            nfe = inverted + index
            if nfe < state.step:
                continue
            t = backward[i]
            eps, x0 = x0_of(x, t)
            x0_proj = x0 - operator.A_pinv(operator.A(x0) - y) if self.project_at(index, t0) else x0
            x = x0_proj * gen[0, i] + gen[1, i] * eps + gen[2, i] * noise()
            state.reached(nfe + 1, x)
            if callback is not None:
                callback(StepInfo(index=nfe, t=t, x=x, x0=x0, x0_corrected=x0_proj))
        return x


@dataclass(kw_only=True)
class SSDPlus(SSD):
    """SSD+: back projection only while t ≳ `consistency_until` (default 200, `inference_ir.py`
    `--stop_consistency_timestep 200`), for noisy or inexact measurements."""

    consistency_until: int | None = 200
    name: str = field(default="ssd_plus", init=False)
