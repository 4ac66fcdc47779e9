"""ε-prediction denoisers: the built-in prior, pretrained 256×256 networks, analytic priors."""

from rnsf.denoisers.adm import ADMUNet
from rnsf.denoisers.analytic import FiniteSetPrior, GaussianPrior
from rnsf.denoisers.base import Denoiser
from rnsf.denoisers.builtin import load_tiny_prior
from rnsf.denoisers.classifier import NoisyClassifier
from rnsf.denoisers.ddpm import DDPMUNet
from rnsf.denoisers.pretrained import (
    PretrainedDenoiser,
    load_adm,
    load_classifier,
    load_ddpm,
)
from rnsf.denoisers.tiny_unet import TinyUNet

__all__ = [
    "ADMUNet",
    "DDPMUNet",
    "Denoiser",
    "FiniteSetPrior",
    "GaussianPrior",
    "NoisyClassifier",
    "PretrainedDenoiser",
    "TinyUNet",
    "load_adm",
    "load_classifier",
    "load_ddpm",
    "load_tiny_prior",
]
