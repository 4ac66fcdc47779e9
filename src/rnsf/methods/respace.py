"""Timestep respacing as guided-diffusion does it (`respace.py`, `space_timesteps` and
`SpacedDiffusion`): keep S of the T timesteps, evenly spread, and run the ancestral DDPM chain on
them with betas recomputed from ᾱ of the kept steps, β̂_i = 1 − ᾱ_{τ_i} / ᾱ_{τ_{i−1}}.

With one section of S steps, the stride (T − 1) / (S − 1) is added up in floating point and
each partial sum is rounded with Python's round (half to even), as upstream does; where a sum
lands next to a half, this can differ from round(k (T − 1) / (S − 1)). The chain always starts
at T − 1 and ends at 0; S = 1 keeps only t = 0. S = T keeps every step and is the plain
1,000-step chain.
"""

from __future__ import annotations


def space_timesteps(num_timesteps: int, count: int) -> list[int]:
    """The `count` timesteps (increasing) that guided-diffusion's `space_timesteps(T, [count])`
    keeps."""
    if not 1 <= count <= num_timesteps:
        raise ValueError(f"cannot keep {count} of {num_timesteps} timesteps")
    stride = 1.0 if count == 1 else (num_timesteps - 1) / (count - 1)
    steps, position = [], 0.0
    for _ in range(count):
        steps.append(round(position))
        position += stride
    return sorted(set(steps))


def respaced_betas(abar: list[float], timesteps: list[int]) -> list[float]:
    """β̂_k = 1 − ᾱ_{τ_k} / ᾱ_{τ_{k−1}} of the chain over increasing `timesteps` τ (ᾱ before the
    first kept step is 1), as `SpacedDiffusion.__init__`; `abar[t]` is ᾱ_t. The cumulative
    product of 1 − β̂ is ᾱ at the kept steps, so the shorter chain has the original marginals."""
    betas, last = [], 1.0
    for t in timesteps:
        betas.append(1 - abar[t] / last)
        last = abar[t]
    return betas
