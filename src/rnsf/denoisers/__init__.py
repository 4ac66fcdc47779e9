"""ε-prediction denoisers: the built-in prior, analytic priors, (pretrained networks)."""

from rnsf.denoisers.analytic import FiniteSetPrior, GaussianPrior
from rnsf.denoisers.base import Denoiser
from rnsf.denoisers.builtin import load_tiny_prior
from rnsf.denoisers.tiny_unet import TinyUNet

__all__ = ["Denoiser", "FiniteSetPrior", "GaussianPrior", "TinyUNet", "load_tiny_prior"]
