"""How well samples match the exact posterior, in the range and the null space of A.

All statistics are taken in the spectral coordinates z = Vᵀx, where the exact posterior is a
product of independent normals (`rnsf.calibration.posterior`):

- `mean_error`: RMS over the coordinates of a subspace of (sample mean − exact mean), in units of
  the prior std p. An exact sampler scores about √(var/(n p²)) (1/√n in the null space) from
  Monte-Carlo error alone.
- `var_ratio`: the mean over the coordinates of (sample variance / exact variance), 1 for an
  exact sampler (± about √(2/(n−1)) per coordinate); undefined where the exact posterior is a
  point mass (the range with σ_y = 0).
- `coverage`: the share of (sample, coordinate) pairs inside the exact marginal's central 90 %
  interval, 0.90 for an exact sampler; at a point mass, the share within `POINT_MASS_TOL` · p.
"""

from __future__ import annotations

import math

import torch
from scipy.stats import norm

from rnsf.calibration.posterior import SpectralPosterior

LEVEL = 0.90  #: the central interval whose coverage is reported
#: a sample "is" the point mass when it lies this close (relative to the prior std): float32
#: samplers reproduce y/s to about 1e-6 relative, a method that does not is off by far more
POINT_MASS_TOL = 1e-3
SUBSPACES = ("range", "null")


def calibration_stats(z: torch.Tensor, posterior: SpectralPosterior) -> dict[str, float]:
    """`z`: (n, C, H, W) samples in spectral coordinates. Returns mean_error_{range,null},
    var_ratio_{range,null}, coverage_{range,null} (NaN where a subspace is empty or, for the
    variance ratio, a point mass)."""
    z = z.double()
    n = z.shape[0]
    p = posterior.prior_std
    mean, var = posterior.mean[0], posterior.var[0]
    sample_mean = z.mean(0)
    sample_var = z.var(0, correction=1) if n > 1 else torch.zeros_like(sample_mean)
    half = norm.ppf(0.5 + LEVEL / 2) * var.sqrt()
    half = torch.where(var > 0, half, torch.full_like(half, POINT_MASS_TOL * p))
    inside = ((z - mean).abs() <= half).double().mean(0)
    out = {}
    for name, where in zip(SUBSPACES, (posterior.in_range[0], ~posterior.in_range[0]), strict=True):
        if not where.any():
            out.update({f"{k}_{name}": math.nan for k in ("mean_error", "var_ratio", "coverage")})
            continue
        err = (sample_mean - mean)[where]
        out[f"mean_error_{name}"] = float(err.square().mean().sqrt()) / p
        positive = where & (var > 0)
        out[f"var_ratio_{name}"] = (
            float((sample_var[positive] / var[positive]).mean()) if positive.any() else math.nan
        )
        out[f"coverage_{name}"] = float(inside[where].mean())
    return out
