"""The variance-preserving diffusion shared by every denoiser and method.

Linear betas from 1e-4 to 0.02 over T = 1000 steps, as every checkpoint used here was trained
with (DDNM `diffusion.py` L46-76; guided-diffusion `get_named_beta_schedule("linear")`).
`alpha_bar(t)` is the cumulative product ᾱ_t = ∏_{s<=t} (1 - β_s), with ᾱ_{-1} = 1 so that the
last sampling step can target t = -1 (DDNM/DDRM `compute_alpha`).
"""

from __future__ import annotations

import itertools

import torch

NUM_TIMESTEPS = 1000


def linear_betas(
    num_timesteps: int = NUM_TIMESTEPS, beta_start: float = 1e-4, beta_end: float = 0.02
) -> torch.Tensor:
    """Betas as upstream builds them: a float64 linspace (cast by the caller when needed)."""
    return torch.linspace(beta_start, beta_end, num_timesteps, dtype=torch.float64)


def alphas_cumprod_with_start(betas: torch.Tensor) -> torch.Tensor:
    """ᾱ for t = -1 … T-1 as one float32 table of length T+1; entry 0 is ᾱ_{-1} = 1."""
    abar = torch.cumprod(1.0 - betas.double(), dim=0)
    return torch.cat([abar.new_ones(1), abar]).float()


def uniform_timesteps(num_steps: int, num_timesteps: int = NUM_TIMESTEPS) -> list[int]:
    """DDNM's uniform skip: t_i = i * (T // S) for i = S-1 … 0 (S = 100 gives 990, 980, …, 0)."""
    if not 1 <= num_steps <= num_timesteps:
        raise ValueError(f"steps={num_steps} must lie in [1, {num_timesteps}]")
    skip = num_timesteps // num_steps
    return [i * skip for i in reversed(range(num_steps))]


def time_travel_pairs(
    num_steps: int,
    travel_length: int = 1,
    travel_repeat: int = 1,
    num_timesteps: int = NUM_TIMESTEPS,
) -> list[tuple[int, int]]:
    """Consecutive (t, t_next) timestep pairs of DDNM's schedule, with RePaint's time travel.

    With `travel_length = travel_repeat = 1` this is the plain uniform schedule followed by the
    final jump to -1. Otherwise it is RePaint's jump schedule (DDNM `get_schedule_jump`,
    `diffusion.py` L613-634): at every multiple k of L below S - L the chain goes back up L steps
    R - 1 times. A pair with t_next > t is a travel-back step (no network call).
    """
    if travel_length < 1 or travel_repeat < 1:
        raise ValueError("travel_length and travel_repeat must be >= 1")
    skip = num_timesteps // num_steps
    uniform_timesteps(num_steps, num_timesteps)  # validates num_steps
    jumps = {k: travel_repeat - 1 for k in range(0, num_steps - travel_length, travel_length)}
    t = num_steps
    indices: list[int] = []
    while t >= 1:
        t -= 1
        indices.append(t)
        if jumps.get(t, 0) > 0:
            jumps[t] -= 1
            for _ in range(travel_length):
                t += 1
                indices.append(t)
    indices.append(-1)
    steps = [i * skip if i >= 0 else -1 for i in indices]
    return list(itertools.pairwise(steps))
