"""A task is an operator plus measurement noise: y = A x + n, n ~ N(0, σ² I)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from rnsf.operators.base import LinearOperator
from rnsf.operators.noise import pixel_sigma_to_model
from rnsf.utils.random import randn


@dataclass
class Task:
    """`sigma` is in [0, 1] pixel units, as in every config; `sigma_model` is its [-1, 1] value."""

    name: str
    operator: LinearOperator
    sigma: float = 0.0

    def __post_init__(self) -> None:
        self.sigma_model = pixel_sigma_to_model(self.sigma)

    def measure(
        self, x: torch.Tensor, generators: Sequence[torch.Generator]
    ) -> tuple[LinearOperator, torch.Tensor]:
        """The batch's operator and its noisy measurement of x (per-image noise generators)."""
        self.operator.check_image_size(x.shape[-2], x.shape[-1])
        op = self.operator.bind(x.shape, generators)
        y = op.A(x)
        if self.sigma_model > 0:
            noise = randn(y.shape[1:], generators, y.device, y.dtype)
            y = op.add_noise(y, self.sigma_model, noise)
        return op, y
