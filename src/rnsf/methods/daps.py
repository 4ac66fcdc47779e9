"""DAPS (Zhang et al., CVPR 2025), after the official code (zhangbingliang2019/DAPS, branch `main`:
`sampler.py`, `cores/scheduler.py`, `cores/mcmc.py`, `model/precond.py`; specs
upstream-diffpir-daps §2), its pixel-space "DAPS-1K" configuration.

The VP ε-network is read as an EDM denoiser (`VPPrecond`): D(x; σ) = x − σ ε_θ(x / √(1+σ²), c),
c = 999 t(σ), t(σ) = (√(β_min² + 2 β_d ln(1+σ²)) − β_min) / β_d, β_min = 0.1, β_d = 19.9, the
continuous timestep passed to the network as a float (specs A5). From x = σ_max z, for each
annealing level σ_k, k = 0 … N − 1:

1. x̂₀: Euler steps of the probability-flow ODE from σ_k down to 0.01, no gradient:
   x ← x + (σ_{j+1} − σ_j) (x − D(x; σ_j)) / σ_j on a poly-7 grid of `ode_steps` + 1 levels.
2. Langevin on p(x₀ | x̂₀, y) ∝ exp(−c ‖A x₀ − y‖² / (2τ²) − ‖x₀ − x̂₀‖² / (2σ_k²)), from x₀ = x̂₀:
   x₀ ← x₀ + η_k (−c Aᵀ(A x₀ − y) / τ² + (x̂₀ − x₀) / σ_k²) + √(2η_k) z,
   η_k = lr (1 + r_k (lr_min_ratio − 1)); c = 2, r_k = k / (N + 1) on `main`, c = 1, r_k = k / N
   on `legacy` (specs A1, A3). Only A and Aᵀ are used: nothing differentiates through the network.
3. x = x₀ + σ_{k+1} z.

The result is the last x₀. τ is a fixed hyperparameter in [-1, 1] units; the measurement noise
σ_y is not read (specs A6). An image whose Langevin state turns NaN is reset to zero on its own
(upstream resets the whole batch, specs A4).
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field
from typing import ClassVar

import torch

from rnsf.methods.base import Method, StepInfo
from rnsf.methods.state import SamplerState
from rnsf.operators.base import LinearOperator
from rnsf.operators.inpainting import Inpainting
from rnsf.utils.random import randn
from rnsf.utils.schema import Choice, Float, Int

#: `VPPrecond` constants (DA:model/precond.py L21-61): β_d, β_min, M
BETA_D, BETA_MIN, M = 19.9, 0.1, 1000


def vp_time(sigma: float) -> float:
    """t(σ) of the VP SDE whose ᾱ(t) = 1 / (1 + σ²), in [0, 1]."""
    return (math.sqrt(BETA_MIN**2 + 2 * BETA_D * math.log1p(sigma**2)) - BETA_MIN) / BETA_D


def c_noise(sigma: float) -> float:
    """The float timestep `VPPrecond` passes to the network: (M − 1) t(σ)."""
    return (M - 1) * vp_time(sigma)


def poly7(sigma_max: float, sigma_min: float, count: int) -> list[float]:
    """`count` levels (σ_max^{1/7} + r (σ_min^{1/7} − σ_max^{1/7}))^7, r = linspace(0, 1, count)."""
    a, b = sigma_max ** (1 / 7), sigma_min ** (1 / 7)
    return [(a + i / (count - 1) * (b - a)) ** 7 if count > 1 else sigma_max for i in range(count)]


def annealing_sigmas(
    steps: int, sigma_max: float = 100.0, sigma_min: float = 0.1, variant: str = "main"
) -> list[float]:
    """The N + 1 annealing levels, σ_N = 0. `main`: N + 1 poly-7 points with the last (σ_min)
    replaced by 0, so the last level used is above σ_min (0.10604 for N = 200; DA:cores/
    scheduler.py L38-44, L272-278, L312-315). `legacy`: N points down to σ_min, then 0."""
    if variant == "main":
        return [*poly7(sigma_max, sigma_min, steps + 1)[:-1], 0.0]
    return [*poly7(sigma_max, sigma_min, steps), 0.0]


def ode_sigmas(
    sigma: float, steps: int = 5, sigma_min: float = 0.01, variant: str = "main"
) -> list[float]:
    """The inner ODE's levels from σ: `main`, `steps` + 1 poly-7 points down to σ_min, the last
    Euler step ending at σ_min (DA:cores/scheduler.py L378-408); `legacy`, `steps` points down to
    σ_min, then 0, so the last step returns D(·; σ_min) (DL:sampler.py L20-56)."""
    if variant == "main":
        return poly7(sigma, sigma_min, steps + 1)
    return [*poly7(sigma, sigma_min, steps), 0.0]


def is_box_mask(operator: LinearOperator) -> bool:
    """Whether the operator is inpainting whose missing pixels form one rectangle per image."""
    if not isinstance(operator, Inpainting):
        return False
    missing = operator.mask[:, 0] == 0  # (1 or B, H, W)
    rows, cols = missing.any(dim=2), missing.any(dim=1)
    area = rows.sum(dim=1) * cols.sum(dim=1)
    return bool(((missing.sum(dim=(1, 2)) == area) & (area > 0)).all())


@dataclass(kw_only=True)
class DAPS(Method):
    """`steps` network evaluations: N = `steps` // `ode_steps` annealing levels (at least one)
    with `ode_steps` calls each (DAPS-1K: 1000 = 200 × 5); at each level `langevin_steps`
    Langevin steps of rate `lr` (null: 5e-5 for box inpainting, 1e-4 otherwise) decaying to about
    `lr_min_ratio` lr, likelihood scale `tau`; `variant` `main` or `legacy`."""

    steps: int = 1000
    ode_steps: int = 5
    sigma_max: float = 100.0
    sigma_min: float = 0.1
    ode_sigma_min: float = 0.01
    langevin_steps: int = 100
    lr: float | None = None
    lr_box_inpainting: float = 5e-5
    lr_default: float = 1e-4
    lr_min_ratio: float = 0.01
    tau: float = 0.01
    variant: str = "main"
    name: str = field(default="daps", init=False)
    supports_known = True  # the overlap constraint after each Langevin run
    #: state: x at the next level (and after the last, x₀: the result); its step counts
    #: network evaluations, `ode_steps` per level, as `nfe` and the callback's index do
    resumable = True
    config_schema: ClassVar[dict] = {
        "steps": Int(1, 100000),
        "ode_steps": Int(1, 1000),
        "sigma_max": Float(0.0, open_low=True),
        "sigma_min": Float(0.0, open_low=True),
        "ode_sigma_min": Float(0.0, open_low=True),
        "langevin_steps": Int(0, 100000),
        "lr": Float(0.0, nullable=True, open_low=True),
        "lr_box_inpainting": Float(0.0, open_low=True),
        "lr_default": Float(0.0, open_low=True),
        "lr_min_ratio": Float(0.0, 1.0),
        "tau": Float(0.0, open_low=True),
        "variant": Choice("main", "legacy"),
    }

    def __post_init__(self) -> None:
        if self.variant not in ("main", "legacy"):
            raise ValueError(f"method.variant must be main or legacy, got {self.variant!r}")
        if not self.sigma_max > self.sigma_min > 0:
            raise ValueError(
                f"method.sigma_max={self.sigma_max} must exceed method.sigma_min={self.sigma_min}"
                " > 0"
            )
        if self.ode_steps < 1:
            raise ValueError(f"method.ode_steps must be >= 1, got {self.ode_steps}")
        #: annealing levels N (`steps` not a multiple of `ode_steps` is rounded down)
        self.levels = max(1, self.steps // self.ode_steps)
        self.sigmas = annealing_sigmas(self.levels, self.sigma_max, self.sigma_min, self.variant)

    @property
    def nfe(self) -> int:
        return self.levels * self.ode_steps

    def step_size(self, operator: LinearOperator) -> float:
        if self.lr is not None:
            return float(self.lr)
        return self.lr_box_inpainting if is_box_mask(operator) else self.lr_default

    def describe(self, operator) -> dict:
        return {**self.hyperparameters(), "lr": self.step_size(operator)}

    def lr_at(self, k: int, lr: float) -> float:
        """η_k from the base rate `lr`: linear decay by r_k = k / (N + 1) (`main`,
        DA:sampler.py L73; DA:cores/mcmc.py L174-180) or k / N (`legacy`, DL:sampler.py L346)."""
        r = k / (self.levels + 1) if self.variant == "main" else k / self.levels
        return lr * (1 + r * (self.lr_min_ratio - 1))

    # -- the three parts of one annealing step ---------------------------------------------
    @staticmethod
    def denoise(denoiser, x: torch.Tensor, sigma: float) -> torch.Tensor:
        """D(x; σ) = x − σ ε_θ(x / √(1+σ²), c(σ)), the float timestep c(σ) given to the network
        (`VPPrecond`; the first C output channels are ε)."""
        t = torch.full((x.shape[0],), c_noise(sigma), device=x.device, dtype=torch.float32)
        eps = denoiser(x / math.sqrt(1 + sigma**2), t)[:, : x.shape[1]]
        return x - sigma * eps.to(x.dtype)

    def ode_x0(self, denoiser, x: torch.Tensor, sigma: float) -> torch.Tensor:
        """x̂₀: Euler steps of the probability-flow ODE from σ to `ode_sigma_min`."""
        levels = ode_sigmas(sigma, self.ode_steps, self.ode_sigma_min, self.variant)
        for s, s_next in itertools.pairwise(levels):
            x = x + (s_next - s) * (x - self.denoise(denoiser, x, s)) / s
        return x

    def langevin(self, x0, y, operator, sigma: float, lr: float, noise) -> torch.Tensor:
        """`langevin_steps` unadjusted Langevin steps on the posterior of x₀ given x̂₀ = `x0` at
        level σ and y; only `operator.A` and `operator.A_adjoint` are called."""
        weight = (2.0 if self.variant == "main" else 1.0) / self.tau**2
        x = x0
        for _ in range(self.langevin_steps):
            grad = -weight * operator.A_adjoint(operator.A(x) - y) + (x0 - x) / sigma**2
            x = x + lr * grad + math.sqrt(2 * lr) * noise()
            bad = torch.isnan(x).flatten(1).any(dim=1).view(-1, *[1] * (x.dim() - 1))
            x = torch.where(bad, torch.zeros_like(x), x)  # per image (upstream: the batch)
        return x

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
        lr = self.step_size(operator)
        x_shape = operator.x_shape(y.shape)

        def noise():
            return randn(x_shape[1:], generators, y.device, y.dtype)

        state = state or SamplerState()  # a stopped batch continues from state.step
        if state.step:  # after state.step // ode_steps levels (x₀ only after the last one)
            x, x0y = state.x, state.carry.get("x0")
        else:
            x = self.sigmas[0] * noise()  # x_T = σ_max z
            x0y = x
        for k in range(state.step // self.ode_steps, self.levels):
            sigma, sigma_next = self.sigmas[k], self.sigmas[k + 1]
            with torch.no_grad():
                x0 = self.ode_x0(denoiser, x, sigma)
            x0y = self.langevin(x0, y, operator, sigma, self.lr_at(k, lr), noise)
            if known is not None:  # mask-shift: the overlap keeps the earlier windows' result
                x0y = known.apply(x0y)
            x = x0y + sigma_next * noise()  # drawn also at σ_N = 0, as upstream
            last = {"x0": x0y} if k == self.levels - 1 else {}  # the result, after the last level
            state.reached((k + 1) * self.ode_steps, x, **last)
            if callback is not None:  # after the level's last network evaluation
                index = (k + 1) * self.ode_steps - 1
                t = round(c_noise(sigma))
                callback(StepInfo(index=index, t=t, x=x, x0=x0, x0_corrected=x0y))
        return x0y
