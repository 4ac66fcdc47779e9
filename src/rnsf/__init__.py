"""rnsf: zero-shot image restoration with frozen, pretrained diffusion models."""

__version__ = "0.1.0"
