"""Posterior calibration on a prior whose posterior is known exactly:  python -m rnsf.calibration.

A Gaussian prior (`rnsf.denoisers.GaussianPrior`, the exact ε-predictor), a linear operator with
an SVD and Gaussian measurement noise give a Gaussian posterior in closed form, coordinate by
coordinate in the operator's spectral coordinates (`posterior`). Every method restores one
measurement many times (`run`); the samples' mean, variance and interval coverage are compared
with the exact ones in the range and the null space of A (`stats`), and written as a Markdown
table and a figure (`table`).
"""

from rnsf.calibration.posterior import SpectralPosterior, exact_posterior
from rnsf.calibration.run import Cell, run_cell
from rnsf.calibration.stats import calibration_stats

__all__ = ["Cell", "SpectralPosterior", "calibration_stats", "exact_posterior", "run_cell"]
