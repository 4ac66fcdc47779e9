"""ΠGDM, pseudoinverse-guided diffusion (Song, Vahdat, Mardani and Kautz, ICLR 2023), after the
official code in NVlabs/RED-diff (`algos/pgdm.py` L36-112 at 66482f2).

A DDIM sampler over the timesteps ts = range(0, 1000, 1000 // S), visited from the last, whose
every step is corrected by the vector–Jacobian product of the network's x̂₀ with a measurement
residual:

    x_T = √ᾱ_T A†y + √(1−ᾱ_T) z                                   (L103-112)
    ε̂ = ε_θ(x_t, t),  x̂₀ = (x_t − √(1−ᾱ_t) ε̂) / √ᾱ_t               (L43-51)
    g = (∂x̂₀/∂x_t)ᵀ v                                              (L52-67)
    x_s = √ᾱ_s x̂₀ + c₁ z + c₂ ε̂ + √(ᾱ_s ᾱ_t) w g                    (L70-96)
    c₁ = η √((1 − ᾱ_t/ᾱ_s)(1 − ᾱ_s)/(1 − ᾱ_t)),  c₂ = √(1 − ᾱ_s − c₁²)

with s the next timestep (−1 after the last, where ᾱ_s = 1 and c₁ = c₂ = 0). The vector v is

- `official` (upstream, noise-free): v = A†y − A†(A x̂₀) = A†(y − A x̂₀); for inpainting the
  observed pixels of x̂₀ are replaced by y and g is kept in the holes only (the `in2` branch,
  L88-90), so the output equals y there;
- `paper` (the paper's Eq. 7, never released upstream, NVlabs/RED-diff issue #5): with
  r_t² = 1 − ᾱ_t, v = r_t² Aᵀ(r_t² AAᵀ + σ_y² I)⁻¹ (y − A x̂₀) = V diag(s/(s² + σ_y²/r_t²)) Uᵀ
  (y − A x̂₀) through the operator's SVD (0 where s = 0). The factor r_t² makes it equal
  `official`'s A† at σ_y = 0, so w keeps its meaning; J_tᵀ v / r_t² is the paper's
  ∇ log p(y | x_t), exact for unit-variance Gaussian data.

`form: auto` runs `official` at σ_y = 0 and `paper` with noise. Fresh noise z is drawn at every
step, after the VJP, also when η = 0 (L96), as upstream. Each image's VJP depends on its own
x_t only: a batch gives the per-image results. ᾱ is upstream's float32 table
(`models/diffusion.py` L38-43, the same as DDNM's `compute_alpha`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import ClassVar

import torch

from rnsf.methods.base import Method, StepInfo
from rnsf.methods.ddrm import ddrm_timesteps
from rnsf.methods.state import SamplerState
from rnsf.operators.base import LinearOperator
from rnsf.operators.inpainting import Inpainting
from rnsf.utils.errors import UserError
from rnsf.utils.random import randn
from rnsf.utils.schema import Choice, Float, Int

FORMS = ("auto", "official", "paper")


def pigdm_timesteps(steps: int) -> list[int]:
    """Upstream's `ts = range(end, start, (start − end) // num_steps)` with start 1000, end 0
    (`utils/functions.py` L20-24): 50 → 0, 20, …, 980; 100 → 0, …, 990; 30 → 31 steps. The
    same grid as DDRM's."""
    return ddrm_timesteps(steps)


def regularized_pinv(
    operator: LinearOperator, residual: torch.Tensor, c: float | torch.Tensor
) -> torch.Tensor:
    """Aᵀ(AAᵀ + c I)⁻¹ r through the SVD A = U diag(s) Vᵀ: V(s / (s² + c) ⊙ Uᵀ r), 0 where
    s = 0; c = 0 gives A† r. No matrix is formed."""
    z = operator.Ut(residual)
    s = operator.singulars(z)
    keep = s > 0
    return operator.V(torch.where(keep, z * s / torch.where(keep, s * s + c, 1.0), 0.0))


@dataclass(kw_only=True)
class PiGDM(Method):
    """Defaults from the official code: `eta` 0.0 and `weight` (grad_term_weight) 1
    (`_configs/algo/pgdm.yaml` L3-11, `awd: True`), 50 steps (`_configs/exp/default.yaml`
    L9-11)."""

    steps: int = 50
    eta: float = 0.0
    weight: float = 1.0
    form: str = "auto"
    name: str = field(default="pigdm", init=False)
    needs_grad = True  # one vector–Jacobian product through the network per step
    supports_known = True  # x̂₀ pinned on the overlap, the guidance kept off it (as `in2`)
    resumable = True  # state: the iterate (each step reads x_t only)
    config_schema: ClassVar[dict] = {
        "steps": Int(1, 1000),
        "eta": Float(0.0, 1.0),
        "weight": Float(0.0),
        "form": Choice(*FORMS),
    }

    def __post_init__(self) -> None:
        if self.form not in FORMS:
            raise ValueError(f"method.form={self.form!r}: use one of {', '.join(FORMS)}")
        if not 0.0 <= self.eta <= 1.0:
            raise ValueError(f"method.eta must lie in [0, 1], got {self.eta}")
        self.timesteps = pigdm_timesteps(self.steps)
        self._checked_sigma: float | None = None

    @property
    def nfe(self) -> int:
        """Forward passes per image; each comes with one backward pass (the VJP)."""
        return len(self.timesteps)

    def form_for(self, sigma_y: float) -> str:
        """The form that runs at noise `sigma_y`: `auto` is `official` at 0, `paper` above."""
        if self.form != "auto":
            return self.form
        return "paper" if sigma_y > 0 else "official"

    def check(self, operator: LinearOperator, sigma_y: float = 0.0) -> None:
        super().check(operator, sigma_y)
        self._checked_sigma = float(sigma_y)
        if self.form_for(sigma_y) == "paper" and not getattr(operator, "has_svd", False):
            raise UserError(
                f"method pigdm in its paper form (σ_y > 0, or method.form=paper) needs an "
                f"operator with an SVD, and the task's {type(operator).__name__} has none: use "
                "task.sigma=0 with method.form=auto, or method.form=official (ignores the noise, "
                "as upstream)"
            )

    def describe(self, operator: LinearOperator) -> dict:
        """The hyperparameters, the form that runs (known once `check` saw the noise), the
        timesteps' span and the VJPs per image."""
        form = (
            self.form_for(self._checked_sigma)
            if self._checked_sigma is not None
            else "auto: official at σ_y = 0, paper otherwise"
        )
        return {
            **self.hyperparameters(),
            "form_run": form,
            "first_timestep": self.timesteps[-1],
            "vjps": self.nfe,
            "inpainting_replacement": form == "official" and isinstance(operator, Inpainting),
        }

    def guidance_vector(
        self,
        operator: LinearOperator,
        y: torch.Tensor,
        x0: torch.Tensor,
        abar_t: float,
        sigma_y: float,
        form: str,
        pinv_y: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """v of the module docstring: A†y − A†(A x̂₀) (`official`; `pinv_y` = A†y when the caller
        has it), or r_t² Aᵀ(r_t² AAᵀ + σ_y² I)⁻¹(y − A x̂₀) with r_t² = 1 − ᾱ_t (`paper`)."""
        if form == "official":  # upstream: H_pinv(y₀) − H_pinv(H(x̂₀)) (L52)
            pinv_y = operator.A_pinv(y) if pinv_y is None else pinv_y
            return pinv_y - operator.A_pinv(operator.A(x0))
        r2 = 1.0 - abar_t
        return regularized_pinv(operator, y - operator.A(x0), sigma_y**2 / r2)

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
        form = self.form_for(sigma_y)
        if form == "paper" and not getattr(operator, "has_svd", False):
            raise UserError(
                f"pigdm's paper form needs an operator with an SVD; {type(operator).__name__} "
                "has none: use method.form=official"
            )
        # upstream's float32 ᾱ (models/diffusion.py), one host copy: abar[t + 1] = ᾱ_t
        abar = denoiser.alphas_cumprod(torch.float32, "cpu").tolist()
        root_1m = [math.sqrt(1 - a) for a in abar]
        x_shape = operator.x_shape(y.shape)
        # `in2` (L88-90): observed pixels of x̂₀ ← y, the guidance kept in the holes
        replace = form == "official" and isinstance(operator, Inpainting)

        def noise():
            return randn(x_shape[1:], generators, y.device, y.dtype)

        with torch.inference_mode(False), torch.enable_grad():
            y = y.clone()
            pinv_y = operator.A_pinv(y)
            hole = 1 - operator.singulars(y) if replace else None
            if known is not None:  # mask-shift: the overlap keeps the earlier windows' result
                unknown = (~known.mask).to(y.dtype)
                hole = unknown if hole is None else hole * unknown
            state = state or SamplerState()  # a stopped batch continues from state.step
            if state.step:
                x = state.x
            else:  # x_T = √ᾱ_T A†y + √(1−ᾱ_T) z
                t_first = self.timesteps[-1]
                x = math.sqrt(abar[t_first + 1]) * pinv_y + root_1m[t_first + 1] * noise()
            pairs = list(
                zip(reversed(self.timesteps), reversed([-1, *self.timesteps[:-1]]), strict=True)
            )
            for i, (t, s) in enumerate(pairs[state.step :], start=state.step):
                a_t, a_s = abar[t + 1], abar[s + 1]
                c1 = self.eta * math.sqrt((1 - a_t / a_s) * (1 - a_s) / (1 - a_t))
                c2 = math.sqrt(max(1 - a_s - c1**2, 0.0))
                x = x.detach().requires_grad_(True)
                eps = denoiser.eps(x, t)
                guide = denoiser.classifier_gradient(x, t)  # s ∇ log p(c | x_t), or None
                if guide is not None:  # classifier guidance: ε − √(1−ᾱ_t) s ∇ log p(c | x_t)
                    eps = eps - root_1m[t + 1] * guide
                x0 = denoiser.x0_from_eps(x, eps, t)
                # g = (∂x̂₀/∂x_t)ᵀ v with v held fixed: one VJP through the network
                v = self.guidance_vector(operator, y, x0.detach(), a_t, sigma_y, form, pinv_y)
                (g,) = torch.autograd.grad(x0, x, grad_outputs=v)
                x0, eps = x0.detach(), eps.detach()
                x0_corrected = x0
                if replace:  # y = m ⊙ x: x̂₀ (1 − m) + y
                    x0_corrected = x0 * (1 - operator.singulars(y)) + y
                if known is not None:
                    x0_corrected = known.apply(x0_corrected)
                if hole is not None:
                    g = g * hole
                # x_s = √ᾱ_s x̂₀ + c₁ z + c₂ ε̂ + √(ᾱ_s ᾱ_t) w g
                scale = math.sqrt(a_s) * math.sqrt(a_t) * self.weight
                x = math.sqrt(a_s) * x0_corrected + c1 * noise() + c2 * eps + scale * g
                state.reached(i + 1, x)
                if callback is not None:
                    callback(StepInfo(index=i, t=t, x=x, x0=x0, x0_corrected=x0_corrected))
        return x.detach()
