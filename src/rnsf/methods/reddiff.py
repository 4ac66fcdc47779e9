"""RED-diff, regularisation by denoising diffusion (Mardani, Song, Kautz and Vahdat, ICLR 2024),
after the official code (NVlabs/RED-diff `algos/reddiff.py` L51-141 at 66482f2).

Variational posterior q(x₀ | y) = N(μ, σ_x0² I); μ is fitted by Adam, one step per timestep,
visiting ts = range(0, 1000, 1000 // S) from the last (as ΠGDM):

    μ₀ = A†y                                                   (L132-141, no noise)
    for t = ts[-1], …, ts[0]:                                  (L55)
        x̃₀ = μ + σ_x0 n₀,  x_t = √ᾱ_t x̃₀ + √(1−ᾱ_t) ε           (L64-68; n₀ then ε drawn)
        ε̂ = sg(ε_θ(x_t, t))                                    (L80-84: no backward through it)
        loss = w_t mean(sg(ε̂ − ε) ⊙ x̃₀) + v mean((y − A x̃₀)²) / 2 (L86-88, L111)
        w_t = λ ω(σ_t),  σ_t = √(1−ᾱ_t) / √ᾱ_t                  (L90-108; `linear`: ω(σ) = σ)
        μ ← Adam(lr, betas (0.9, 0.99), eps 1e-8) step            (L51-52, L113-116)

The gradient is formed from A and Aᵀ only, never through the network:
∇_μ loss = w_t (ε̂ − ε) / n + v Aᵀ(A x̃₀ − y) / m_y, with n and m_y the elements of one image and
of its measurement. Departure: upstream's means span the whole batch, which divides every
gradient by B and, through Adam's eps, makes a result depend on the batch size; here each
image's loss is its own mean, which is upstream's loss at batch size 1, and Adam's update is
elementwise, so an image's result is the same in any batch.

Output: the final μ, the paper's estimate. Upstream returns x̃₀ built *before* its last Adam
step (L67, L126-129), discarding that step; `discard_last_step: true` reproduces it. σ_y is not
used (upstream reads it, L35, and never uses it): the noise enters through A†y and λ is the
only knob. ᾱ is upstream's float32 table
(`models/diffusion.py` L38-43).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import ClassVar

import torch

from rnsf.methods.base import Method, StepInfo
from rnsf.methods.pigdm import pigdm_timesteps
from rnsf.methods.state import SamplerState
from rnsf.utils.random import randn
from rnsf.utils.schema import Bool, Choice, Float, Int

#: ω(σ_t) of `denoise_term_weight` (L90-108)
WEIGHTINGS = {
    "linear": lambda s: s,
    "sqrt": math.sqrt,
    "square": lambda s: s * s,
    "log": lambda s: math.log(s + 1.0),
    "trunc_linear": lambda s: min(s, 1.0),
    "power2over3": lambda s: s ** (2 / 3),
    "const": lambda s: 1.0,
}


@dataclass(kw_only=True)
class REDDiff(Method):
    """Defaults from the official code: λ (`grad_term_weight`) 0.25, `linear` weighting, v
    (`obs_weight`) 1.0, lr 0.1, σ_x0 0 (`_configs/algo/reddiff.yaml` L3-13), 50 steps
    (`_configs/exp/default.yaml` L9-11), Adam betas (0.9, 0.99) and torch's eps 1e-8 (L51-52)."""

    steps: int = 50
    lam: float = 0.25
    weighting: str = "linear"
    obs_weight: float = 1.0
    lr: float = 0.1
    sigma_x0: float = 0.0
    betas: tuple[float, float] = (0.9, 0.99)
    adam_eps: float = 1e-8
    discard_last_step: bool = False
    name: str = field(default="reddiff", init=False)
    supports_known = True  # μ pinned on the overlap after every Adam step
    resumable = True  # state: μ and Adam's moments (its step count is the step's)
    config_schema: ClassVar[dict] = {
        "steps": Int(1, 1000),
        "lam": Float(0.0),
        "weighting": Choice(*WEIGHTINGS),
        "obs_weight": Float(0.0),
        "lr": Float(0.0, open_low=True),
        "sigma_x0": Float(0.0),
        "adam_eps": Float(0.0),
        "discard_last_step": Bool(),
    }

    def __post_init__(self) -> None:
        if self.weighting not in WEIGHTINGS:
            raise ValueError(
                f"method.weighting={self.weighting!r}: use one of {', '.join(WEIGHTINGS)}"
            )
        self.betas = tuple(float(b) for b in self.betas)
        self.timesteps = pigdm_timesteps(self.steps)

    @property
    def nfe(self) -> int:
        """Forward passes per image (and no backward pass through the network)."""
        return len(self.timesteps)

    def describe(self, operator) -> dict:
        return {**self.hyperparameters(), "first_timestep": self.timesteps[-1], "vjps": 0}

    def weight(self, abar_t: float) -> float:
        """w_t = λ ω(σ_t), σ_t = √(1−ᾱ_t) / √ᾱ_t."""
        return self.lam * WEIGHTINGS[self.weighting](math.sqrt(1 - abar_t) / math.sqrt(abar_t))

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
        # upstream's float32 ᾱ (models/diffusion.py), one host copy: abar[t + 1] = ᾱ_t
        abar = denoiser.alphas_cumprod(torch.float32, "cpu").tolist()
        x_shape = operator.x_shape(y.shape)
        n, m_y = math.prod(x_shape[1:]), y[0].numel()  # elements of one image, one measurement

        def noise():
            return randn(x_shape[1:], generators, y.device, y.dtype)

        with torch.inference_mode(False), torch.no_grad():
            y = y.clone()
            state = state or SamplerState()  # a stopped batch continues from state.step
            if state.step:  # μ, and Adam as it stood after state.step updates
                mu, output = state.x, state.carry.get("x0")  # x̃₀ only after the last step
            else:
                mu = operator.A_pinv(y).clone()  # μ₀ = A†y, a tensor of its own (Adam updates it)
                if known is not None:  # mask-shift: the overlap keeps the earlier windows' result
                    mu = known.apply(mu)
            adam = torch.optim.Adam([mu], lr=self.lr, betas=self.betas, eps=self.adam_eps)
            if state.step:  # Adam's moments, and its count of updates: one per step
                moments = {key: state.carry[key] for key in ("exp_avg", "exp_avg_sq")}
                saved = {"step": torch.tensor(float(state.step)), **moments}
                adam.load_state_dict({**adam.state_dict(), "state": {0: saved}})
            timesteps = list(reversed(self.timesteps))
            for i, t in enumerate(timesteps[state.step :], start=state.step):
                a_t = abar[t + 1]
                n0, z = noise(), noise()  # both drawn every step, as upstream
                x0 = mu + self.sigma_x0 * n0 if self.sigma_x0 else mu.clone()
                output = x0  # x̃₀ before this step's update (upstream's return value)
                x_t = math.sqrt(a_t) * x0 + math.sqrt(1 - a_t) * z
                eps = denoiser.eps(x_t, t)
                guide = denoiser.classifier_gradient(x_t, t)  # s ∇ log p(c | x_t), or None
                if guide is not None:  # classifier guidance: ε − √(1−ᾱ_t) s ∇ log p(c | x_t)
                    eps = eps - math.sqrt(1 - a_t) * guide
                # ∇_μ of w_t mean(sg(ε̂ − ε) x̃₀) + v mean((y − A x̃₀)²)/2, per image
                mu.grad = self.weight(a_t) / n * (eps - z) + self.obs_weight / m_y * (
                    operator.A_adjoint(operator.A(x0) - y)
                )
                adam.step()
                if known is not None:
                    mu.copy_(known.apply(mu))
                # Adam updates μ and its moments in place: the state holds references to them
                moments = {key: adam.state[mu][key] for key in ("exp_avg", "exp_avg_sq")}
                if self.discard_last_step and i == len(timesteps) - 1:
                    moments["x0"] = output  # the result: x̃₀ before this last update
                state.reached(i + 1, mu, **moments)
                if callback is not None:
                    x0_net = denoiser.x0_from_eps(x_t, eps, t)
                    callback(StepInfo(index=i, t=t, x=mu.clone(), x0=x0_net, x0_corrected=x0))
        return output if self.discard_last_step else mu
