"""Degradation operators with A, A_adjoint, A_pinv (A_dagger) and, where known, their SVD."""

from rnsf.operators.base import LinearOperator, SVDOperator
from rnsf.operators.colorization import Colorization
from rnsf.operators.compat import UpstreamDeblurring
from rnsf.operators.composition import Composition
from rnsf.operators.cs import WalshHadamardCS
from rnsf.operators.identity import Denoising
from rnsf.operators.inpainting import BoxInpainting, FileInpainting, Inpainting, RandomInpainting
from rnsf.operators.separable import AverageSR, BicubicSR, GaussianBlur, SeparableOperator
from rnsf.operators.task import Task

__all__ = [
    "AverageSR",
    "BicubicSR",
    "BoxInpainting",
    "Colorization",
    "Composition",
    "Denoising",
    "FileInpainting",
    "GaussianBlur",
    "Inpainting",
    "LinearOperator",
    "RandomInpainting",
    "SVDOperator",
    "SeparableOperator",
    "Task",
    "UpstreamDeblurring",
    "WalshHadamardCS",
]
