"""Composite degradations A = A_n ∘ … ∘ A_1, e.g. the old-photo task (DDNM's `mask_color_sr`).

The pseudo-inverse is taken as A₁† ∘ … ∘ A_n†. That is the Moore–Penrose inverse of the chain
when each stage keeps the next stage's Gram matrix a multiple of the identity on its range, which
holds for SR by block averaging → grey → mask (the old-photo order used here, mask applied to the
low-resolution grey image): A_SR A_SRᵀ = I / f², A_grey A_greyᵀ = ‖w‖² I, and a diagonal mask
commutes with both. The shared property tests check it.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from rnsf.operators.base import LinearOperator


class Composition(LinearOperator):
    """`operators` in the order they act on x."""

    def __init__(self, operators: Sequence[LinearOperator]) -> None:
        if not operators:
            raise ValueError("a composition needs at least one operator")
        self.operators = list(operators)

    def A(self, x: torch.Tensor) -> torch.Tensor:
        for op in self.operators:
            x = op.A(x)
        return x

    def A_adjoint(self, y: torch.Tensor) -> torch.Tensor:
        for op in reversed(self.operators):
            y = op.A_adjoint(y)
        return y

    def A_pinv(self, y: torch.Tensor) -> torch.Tensor:
        for op in reversed(self.operators):
            y = op.A_pinv(y)
        return y

    def bind(self, x_shape, generators) -> Composition:
        bound, shape = [], tuple(x_shape)
        for op in self.operators:
            op = op.bind(shape, generators)
            bound.append(op)
            shape = tuple(op.A(torch.zeros(shape, device="meta")).shape)
        return Composition(bound)

    def check_image_size(self, height: int, width: int) -> None:
        shape = (1, 3, height, width)
        for op in self.operators:
            op.check_image_size(*shape[-2:])
            op = op.bind(shape, [torch.Generator()])
            shape = tuple(op.A(torch.zeros(shape, device="meta")).shape)

    def x_shape(self, y_shape):
        for op in reversed(self.operators):
            y_shape = op.x_shape(y_shape)
        return tuple(y_shape)

    def add_noise(self, y, sigma, noise):
        return self.operators[-1].add_noise(y, sigma, noise)

    def measurement_from_image(self, image: torch.Tensor) -> torch.Tensor:
        for op in self.operators[1:]:
            image = op.measurement_from_image(image)
        return image
