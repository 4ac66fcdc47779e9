"""The exact posterior of a Gaussian prior under a linear SVD operator with Gaussian noise.

Prior x ~ N(μ, p² I) (the `GaussianPrior` with a scalar std p), measurement y = A x + σ n with
A = U diag(s) Vᵀ. In the spectral coordinates z = Vᵀx the prior stays N(Vᵀμ, p² I) (V is
orthogonal), and ỹ = Uᵀy measures each coordinate alone, ỹ_i = s_i z_i + σ n_i. So the posterior
factorises coordinate by coordinate:

    range (s_i > 0):  var_i  = p² σ² / (σ² + s_i² p²)
                      mean_i = (σ² (Vᵀμ)_i + s_i p² ỹ_i) / (σ² + s_i² p²)
                      (σ = 0: a point mass at ỹ_i / s_i)
    null  (s_i = 0):  var_i = p², mean_i = (Vᵀμ)_i   (y says nothing there)

No matrix is formed: two operator calls (Vᵀ, Uᵀ) and elementwise arithmetic, in float64.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from rnsf.operators.base import LinearOperator
from rnsf.utils.errors import UserError


@dataclass(frozen=True)
class SpectralPosterior:
    """The exact posterior per spectral coordinate (x's shape, batch dimension 1, float64)."""

    mean: torch.Tensor  #: posterior mean of Vᵀx
    var: torch.Tensor  #: posterior variance of each coordinate of Vᵀx (0: a point mass)
    in_range: torch.Tensor  #: bool, s_i > 0 (the coordinate lies in the range of Aᵀ)
    prior_std: float  #: p, the scale every error is reported in

    def pixel_mean(self, operator: LinearOperator) -> torch.Tensor:
        """The posterior mean in pixel space, V mean."""
        return operator.V(self.mean)


def prior_scale(prior) -> tuple[torch.Tensor, float]:
    """(mean, std) of a `GaussianPrior` whose std is one number: with a per-pixel std the
    spectral coordinates would be correlated and the posterior not diagonal in them."""
    std = prior.std.detach().double()
    if std.numel() != 1 and not torch.all(std == std.flatten()[0]):
        raise UserError(
            "the exact spectral posterior needs a GaussianPrior with one std for every pixel; "
            "pass a scalar std"
        )
    return prior.mean.detach().double(), float(std.flatten()[0])


def exact_posterior(
    operator: LinearOperator, y: torch.Tensor, prior, sigma_y: float
) -> SpectralPosterior:
    """The exact posterior of x given one measurement y (batch 1), `sigma_y` in the [-1, 1]
    units of y (`Task.sigma_model`), for a `GaussianPrior` and an operator with an SVD."""
    if not getattr(operator, "has_svd", False):
        raise UserError(
            f"the exact posterior needs an operator with an SVD, and {type(operator).__name__} "
            "has none: pick a task such as sr4, inpaint_box or colorization"
        )
    y = y.detach().double()
    ut_y = operator.Ut(y)
    mean0, p = prior_scale(prior)
    prior_mean = operator.Vt(mean0.to(ut_y.device).expand_as(ut_y).contiguous())
    s = operator.singulars(ut_y).expand_as(ut_y)
    in_range = s > 0
    sigma2, p2 = float(sigma_y) ** 2, p**2
    if sigma2 > 0:
        denom = sigma2 + s**2 * p2
        mean = (sigma2 * prior_mean + s * p2 * ut_y) / denom
        var = p2 * sigma2 / denom
    else:
        safe = torch.where(in_range, s, torch.ones_like(s))
        mean = torch.where(in_range, ut_y / safe, prior_mean)
        var = torch.where(in_range, torch.zeros_like(s), torch.full_like(s, p2))
    return SpectralPosterior(mean=mean, var=var, in_range=in_range, prior_std=p)
