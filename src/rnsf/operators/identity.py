"""Denoising: A = I."""

from __future__ import annotations

import torch

from rnsf.operators.base import SVDOperator


class Denoising(SVDOperator):
    """The identity; only the measurement noise degrades the image."""

    def A(self, x: torch.Tensor) -> torch.Tensor:
        return x

    A_adjoint = A_pinv = V = Vt = U = Ut = A

    def singulars(self, like: torch.Tensor) -> torch.Tensor:
        return torch.ones((), device=like.device, dtype=like.dtype)
