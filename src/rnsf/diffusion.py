"""The variance-preserving diffusion shared by every denoiser and method.

Linear betas from 1e-4 to 0.02 over T = 1000 steps, as every checkpoint used here was trained
with (DDNM `diffusion.py` L46-76; guided-diffusion `get_named_beta_schedule("linear")`).
ᾱ_t = ∏_{s<=t} (1 - β_s) is tabled for t = -1 … T-1 with ᾱ_{-1} = 1, so that the last sampling
step can target t = -1 (DDNM/DDRM `compute_alpha`).

Each method reads ᾱ at the precision its official code keeps it (`alphas_cumprod`):
- float32, as DDNM and DDRM build it on the fly (`compute_alpha`: the float64 betas cast to
  float32, then a float32 cumulative product of 1 − β);
- float64, as guided-diffusion's NumPy tables behind DPS and SSD (`gaussian_diffusion.py`:
  `np.cumprod(1 - betas)`, every derived coefficient in float64, cast to float32 where used).
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import numpy as np
import torch

NUM_TIMESTEPS = 1000


def linear_betas(
    num_timesteps: int = NUM_TIMESTEPS, beta_start: float = 1e-4, beta_end: float = 0.02
) -> torch.Tensor:
    """Betas as upstream builds them: NumPy's float64 linspace (torch's linspace rounds 448 of
    the 1000 values differently in the last bit)."""
    return torch.from_numpy(np.linspace(beta_start, beta_end, num_timesteps, dtype=np.float64))


def alphas_cumprod(betas: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """ᾱ for t = -1 … T-1 as one table of length T+1 (entry 0 is ᾱ_{-1} = 1), in the arithmetic
    of the code that uses it: float32 as DDNM/DDRM's `compute_alpha` (cumprod of float32
    1 − β), float64 as guided-diffusion's `np.cumprod(1 - betas)`."""
    if dtype not in (torch.float32, torch.float64):
        raise ValueError(f"ᾱ tables are float32 or float64, not {dtype}")
    b = torch.cat([betas.new_zeros(1), betas]).to(dtype)
    return torch.cumprod(1 - b, dim=0)


def sqrt32(x: torch.Tensor) -> torch.Tensor:
    """The correctly rounded float32 square root of float32 values, as CUDA's `sqrtf` gives it
    (upstream takes such roots of extracted ᾱ on the GPU); the vectorised CPU kernel may be off
    by one unit in the last place, the float64 root rounded once to float32 never is."""
    return x.float().double().sqrt().float()


def alphas_cumprod_with_start(betas: torch.Tensor) -> torch.Tensor:
    """The float32 table (DDNM/DDRM's); kept for callers of the earlier name."""
    return alphas_cumprod(betas, torch.float32)


def spaced_diffusion(abar: torch.Tensor, timesteps: Sequence[int]) -> tuple[torch.Tensor, ...]:
    """(β̂, ᾱ̂) of guided-diffusion's `SpacedDiffusion` over increasing `timesteps` (`respace.py`
    L63-86): β̂_i = 1 − ᾱ_{τ_i} / ᾱ_{τ_{i-1}} (ᾱ before the first kept step taken as 1), and
    ᾱ̂ = cumprod(1 − β̂) as its `GaussianDiffusion` recomputes it. `abar` is a table with ᾱ_t at
    index t + 1, float64 for upstream's arithmetic. ᾱ̂ equals ᾱ_{τ_i} up to float64 round-off
    (and, cast to float32, exactly, for every chain SSD and DPS build: a test checks it)."""
    taus = list(timesteps)
    if any(b <= a for a, b in itertools.pairwise(taus)):
        raise ValueError(f"timesteps must increase, got {taus[:5]}…")
    kept = abar[torch.tensor(taus) + 1]
    previous = torch.cat([kept.new_ones(1), kept[:-1]])
    betas = 1 - kept / previous
    return betas, torch.cumprod(1 - betas, dim=0)


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
