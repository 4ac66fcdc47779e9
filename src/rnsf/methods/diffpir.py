"""DiffPIR (Zhu et al., CVPRW 2023), after the official scripts (yuanzhi-zhu/DiffPIR
`main_ddpir_sisr.py`, `main_ddpir_deblur.py`, `main_ddpir_inpainting.py`; specs
upstream-diffpir-daps §1).

At each visited timestep t (999 … 0, upstream's `quad` or `uniform` skip), with t' the next one:

1. x̂₀ = clamp((x_t − √(1−ᾱ_t) ε_θ(x_t, t)) / √ᾱ_t, −1, 1)   (guided-diffusion's `pred_xstart`)
2. x̂₀ ← argmin_x ‖y − A x‖² + ρ_t ‖x − x̂₀‖²,   ρ_t = λ σ_n² / σ̄_t²,  σ̄_t = √(1−ᾱ_t) / √ᾱ_t
3. ε̂ = (x_t − √ᾱ_t x̂₀) / √(1−ᾱ_t)   (from the corrected x̂₀)
   x_{t'} = √ᾱ_{t'} x̂₀ + √(1−ζ) (√(1−ᾱ_{t'} − η_σ²) ε̂ + η_σ z₁) + √ζ √(1−ᾱ_{t'}) z₂,
   η_σ = η √(1−ᾱ_{t'}) / √(1−ᾱ_t) √β_t

The last entry (t = 0) only calls the network; the result is the state x there, as upstream
returns it (specs D2; `output: x0` returns the last corrected x̂₀ instead, one call fewer).

The proximal step (2) is solved exactly in the operator's spectral coordinates, never densely:
with x̄ = Vᵀx and Aᵀy = V(s ⊙ Uᵀy), (AᵀA + ρI)⁻¹(Aᵀy + ρx̂₀) = V((s ⊙ Uᵀy + ρ Vᵀx̂₀) / (s² + ρ)).
Null-space coordinates (s = 0) keep Vᵀx̂₀ exactly, so the solve stays accurate in float32 at the
tiny ρ of early steps (ρ_999 ≈ 4e-11 at σ_y = 0), where upstream's FFT form, which subtracts two
nearly equal spectra and divides by ρ, does not (specs D6).

Noise units: upstream's σ_n is in [0, 1] pixel units (`noise_level_img`, floored at 0.001); the
sampler receives σ_y in the [-1, 1] units of y, so σ_n = max(0.001, σ_y / 2) (specs §1.3: the
prox's argmin is the same on either scale, so ρ_t keeps upstream's formula unchanged, D3).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np
import torch

from rnsf.diffusion import NUM_TIMESTEPS
from rnsf.methods.base import Method, StepInfo
from rnsf.methods.state import SamplerState
from rnsf.operators.base import LinearOperator, SVDOperator
from rnsf.operators.inpainting import Inpainting
from rnsf.operators.separable import AverageSR, BicubicSR, SeparableOperator
from rnsf.utils.errors import UserError
from rnsf.utils.random import randn
from rnsf.utils.schema import Choice, Float, Int

#: σ_n floor in pixel units (`sigma = max(0.001, noise_level_img)`, main_ddpir_sisr.py L49)
SIGMA_FLOOR = 0.001

#: (λ, ζ) per kind of operator, where `lam` / `zeta` are null (see conf/method/diffpir.yaml)
DEFAULTS = {
    "inpainting": (1.0, 1.0),  # main_ddpir_inpainting.py: lambda_ 1, zeta 1.0
    "sr": (7.0, 0.25),  # main_ddpir_sisr.py: zeta 0.25, λ swept over 2 … 12 (7 chosen)
    "other": (7.0, 0.3),  # main_ddpir_deblur.py: lambda_ 1 × 7, zeta 0.1 × 3
}


def diffpir_timesteps(
    iter_num: int, skip_type: str = "quad", num_timesteps: int = NUM_TIMESTEPS
) -> list[int]:
    """The timesteps upstream visits, first to last (main_ddpir_sisr.py L266-283): in reverse
    index s (t = T − 1 − s), `uniform` is s = 0, skip, …, (N − 1) skip with T − 1 appended when
    skip > 1 (N + 1 entries); `quad` is s_k = ⌊√(linspace(0, T², N))_k⌋ with the last entry
    lowered by one (N entries). `find_nearest` on σ̄ maps each s back to t = T − 1 − s."""
    if not 1 <= iter_num <= num_timesteps:
        raise ValueError(f"method.steps={iter_num} must lie in [1, {num_timesteps}]")
    skip = num_timesteps // iter_num
    if skip_type == "uniform":
        seq = [i * skip for i in range(iter_num)]
        if skip > 1:
            seq.append(num_timesteps - 1)
    elif skip_type == "quad":
        seq = [int(s) for s in np.sqrt(np.linspace(0, num_timesteps**2, iter_num))]
        seq[-1] -= 1
    else:
        raise ValueError(f"method.skip_type must be quad or uniform, got {skip_type!r}")
    return [num_timesteps - 1 - s for s in seq]


def task_kind(operator: LinearOperator, shrinks: bool = False) -> str:
    """Which upstream script's (λ, ζ) an operator takes: inpainting, sr (also a separable
    operator that `shrinks` the image by 2 or more: an SR window of a tiled restoration), or
    other."""
    if isinstance(operator, Inpainting):
        return "inpainting"
    if isinstance(operator, (BicubicSR, AverageSR)):
        return "sr"
    if shrinks and isinstance(operator, SeparableOperator):
        return "sr"
    return "other"


def rho_table(abar: torch.Tensor, lam: float, sigma_y: float) -> torch.Tensor:
    """ρ_t = λ σ_n² / σ̄_t² for t = 0 … T − 1 (float64), from the float32 ᾱ table (entry t + 1 =
    ᾱ_t; σ̄ in float32 as upstream's `reduced_alpha_cumprod`); σ_y in [-1, 1] units, σ_n =
    max(0.001, σ_y / 2) in pixel units (main_ddpir_sisr.py L49, L225-237)."""
    a = abar[1:].float()
    sigma_bar = ((1 - a).sqrt() / a.sqrt()).double()
    sigma_n = max(SIGMA_FLOOR, float(sigma_y) / 2)
    return lam * sigma_n**2 / sigma_bar**2


def prox(operator: SVDOperator, x0: torch.Tensor, y: torch.Tensor, rho: float) -> torch.Tensor:
    """(AᵀA + ρI)⁻¹(Aᵀy + ρ x0) = V((s ⊙ Uᵀy + ρ Vᵀx0) / (s² + ρ)), exactly, per coordinate."""
    y_bar = operator.Ut(y)
    s = operator.singulars(y_bar)
    return operator.V((s * y_bar + rho * operator.Vt(x0)) / (s * s + rho))


@dataclass(kw_only=True)
class DiffPIR(Method):
    """`steps` is upstream's `iter_num`; `lam` λ and `zeta` ζ are null for the official value of
    the operator's task (`DEFAULTS`); `eta` η, `guidance_scale` as upstream; `output` `state`
    (upstream) or `x0`."""

    steps: int = 100
    skip_type: str = "quad"
    lam: float | None = None
    zeta: float | None = None
    eta: float = 0.0
    guidance_scale: float = 1.0
    output: str = "state"
    name: str = field(default="diffpir", init=False)
    needs_svd = True  # the proximal step in spectral coordinates
    supports_known = True  # the overlap constraint after the proximal step, as DDNM's
    resumable = True  # state: the iterate (after the last step, x̂₀ too for `output: x0`)
    config_schema: ClassVar[dict] = {
        "steps": Int(1, NUM_TIMESTEPS),
        "skip_type": Choice("quad", "uniform"),
        "lam": Float(0.0, nullable=True, open_low=True),
        "zeta": Float(0.0, 1.0, nullable=True),
        "eta": Float(0.0, 1.0),
        "guidance_scale": Float(0.0),
        "output": Choice("state", "x0"),
    }

    def __post_init__(self) -> None:
        if self.output not in ("state", "x0"):
            raise ValueError(f"method.output must be state or x0, got {self.output!r}")
        if self.zeta is not None and not 0.0 <= self.zeta <= 1.0:
            raise ValueError(f"method.zeta must lie in [0, 1], got {self.zeta}")
        self.timesteps = diffpir_timesteps(self.steps, self.skip_type)

    @property
    def nfe(self) -> int:
        """One call per visited timestep; `output: x0` skips the last (its x̂₀ is unused)."""
        return len(self.timesteps) - (self.output == "x0")

    def settings(self, operator: LinearOperator, shrinks: bool = False) -> tuple[float, float]:
        """(λ, ζ) for `operator`: the configured values, else the official ones of its task."""
        lam, zeta = DEFAULTS[task_kind(operator, shrinks)]
        return (
            float(self.lam) if self.lam is not None else lam,
            float(self.zeta) if self.zeta is not None else zeta,
        )

    def describe(self, operator) -> dict:
        lam, zeta = self.settings(operator)
        return {**self.hyperparameters(), "lam": lam, "zeta": zeta, "timesteps": self.timesteps}

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
        if not isinstance(operator, SVDOperator):
            raise UserError(
                f"diffpir needs an operator with an SVD for its proximal step, and "
                f"{type(operator).__name__} has none: use method=daps or ddnm"
            )
        x_shape = operator.x_shape(y.shape)
        # an SR window of a tiled restoration measures at most half its side (a blur's, all but
        # the kernel's halo)
        shrinks = all(2 * m <= n for m, n in zip(y.shape[-2:], x_shape[-2:], strict=True))
        lam, zeta = self.settings(operator, shrinks)
        abar32 = denoiser.alphas_cumprod(torch.float32, "cpu")
        rho = rho_table(abar32, lam, sigma_y).tolist()
        abar = abar32.double()
        root = abar.sqrt().tolist()  # √ᾱ_t at t + 1
        root_1m = (1 - abar).sqrt().tolist()
        beta = (1 - abar[1:] / abar[:-1]).tolist()  # β_t at t

        def noise():
            return randn(x_shape[1:], generators, y.device, y.dtype)

        state = state or SamplerState()  # a stopped batch continues from state.step
        if state.step:
            x, x0_tilde = state.x, state.carry.get("x0")
        else:  # x_T = √ᾱ_T A†y + √(1−ᾱ_T) z (main_ddpir_sisr.py L243-254, A†y for bicubic SR)
            t_first = self.timesteps[0]
            x = root[t_first + 1] * operator.A_pinv(y) + root_1m[t_first + 1] * noise()
            x0_tilde = x
        timesteps = self.timesteps[:-1] if self.output == "x0" else self.timesteps
        for i, t in enumerate(timesteps[state.step :], start=state.step):
            # 1. x̂₀ from the network, clamped before the data step (specs D1)
            eps = denoiser.eps(x, t)
            x0 = denoiser.x0_from_eps(x, eps, t, torch.float64).clamp(-1, 1)
            if i == len(self.timesteps) - 1:  # t = 0: no data step, the state is returned (D2)
                state.reached(i + 1, x)
                if callback is not None:
                    callback(StepInfo(index=i, t=t, x=x, x0=x0, x0_corrected=x0))
                break
            # 2. the proximal data step, mixed by the guidance scale
            x0_tilde = x0 + self.guidance_scale * (prox(operator, x0, y, rho[t]) - x0)
            if known is not None:  # mask-shift: the overlap keeps the earlier windows' result
                x0_tilde = known.apply(x0_tilde)
            # 3. re-noise to t' with ε̂ of the corrected x̂₀ and a ζ share of fresh noise
            t_next = self.timesteps[i + 1]
            eps_hat = (x - root[t + 1] * x0_tilde) / root_1m[t + 1]
            eta_sigma = self.eta * root_1m[t_next + 1] / root_1m[t + 1] * math.sqrt(beta[t])
            kept = math.sqrt(max(root_1m[t_next + 1] ** 2 - eta_sigma**2, 0.0)) * eps_hat
            if eta_sigma > 0:
                kept = kept + eta_sigma * noise()
            x = (
                root[t_next + 1] * x0_tilde
                + math.sqrt(1 - zeta) * kept
                + math.sqrt(zeta) * root_1m[t_next + 1] * noise()
            )
            # `output: x0` returns the last corrected x̂₀: after the last step it goes with x
            last = self.output == "x0" and i == len(timesteps) - 1
            state.reached(i + 1, x, **({"x0": x0_tilde} if last else {}))
            if callback is not None:
                callback(StepInfo(index=i, t=t, x=x, x0=x0, x0_corrected=x0_tilde))
        if self.output == "x0":
            return x0_tilde
        return known.apply(x) if known is not None else x
