"""The one place where σ_y changes units.

Every config gives the measurement noise σ_y in [0, 1] pixel units. Inside, images live in
[-1, 1], twice as wide, so the noise there is 2 σ_y (DDRM and DDNM double it the same way;
DPS's published 0.05 is already in [-1, 1] units, i.e. 0.025 here).
"""

from __future__ import annotations


def pixel_sigma_to_model(sigma: float) -> float:
    """σ_y in [0, 1] pixel units → the standard deviation of the noise on [-1, 1] images."""
    if sigma < 0:
        raise ValueError(f"task.sigma must be >= 0 (in [0, 1] pixel units), got {sigma}")
    return 2.0 * float(sigma)
