"""The operator interface shared by every method (deepinv's vocabulary).

Images x are (B, C, H, W) in [-1, 1]. An operator maps x to a measurement y = A x and provides
its adjoint Aᵀ and Moore–Penrose pseudo-inverse A† (`A_pinv`, alias `A_dagger`).

Operators with a singular value decomposition A = U diag(s) Vᵀ (`SVDOperator`) expose it for
DDRM and DDNM+. The spectral coordinates have the shape of x; `singulars()` broadcasts against
them and is zero on the null space; `Ut` returns spectral coordinates (null entries zero) and
`U` drops the null entries again. Hence A = U(s ⊙ Vt x), Aᵀ = V(s ⊙ Ut y), A† = V(s⁺ ⊙ Ut y).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import torch


@contextmanager
def full_float32() -> Iterator[None]:
    """float32 matmuls in full IEEE precision inside the block, whatever the job's setting:
    a job with `model.precision` other than fp32 lets a GPU use TF32 (a 10-bit mantissa) for
    the network, which must not loosen an operator's A A† A = A. Restored on exit."""
    matmul = torch.backends.cuda.matmul
    saved = matmul.fp32_precision
    if saved == "ieee":
        yield
        return
    matmul.fp32_precision = "ieee"
    try:
        yield
    finally:
        matmul.fp32_precision = saved


class LinearOperator:
    """A linear degradation A with its adjoint and pseudo-inverse."""

    #: True when the class implements V, Vt, U, Ut and singulars
    has_svd: bool = False

    # -- the three maps every operator provides -------------------------------------------
    def A(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def A_adjoint(self, y: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def A_pinv(self, y: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def A_dagger(self, y: torch.Tensor) -> torch.Tensor:
        """deepinv's name for the pseudo-inverse."""
        return self.A_pinv(y)

    # -- shapes, per-batch state, noise, display ------------------------------------------
    def check_image_size(self, height: int, width: int) -> None:
        """Raise ValueError (naming the size and the fix) if the operator cannot take it."""

    def x_shape(self, y_shape: Sequence[int]) -> tuple[int, ...]:
        """Shape of the image that a measurement of `y_shape` came from (predict mode)."""
        return tuple(y_shape)

    def bind(self, x_shape: Sequence[int], generators: Sequence[torch.Generator]) -> LinearOperator:
        """The operator for one batch. Operators with per-image state (random masks) draw it
        here from each image's generator; the others return themselves."""
        return self

    def add_noise(self, y: torch.Tensor, sigma: float, noise: torch.Tensor) -> torch.Tensor:
        """y + σ n, with σ in the [-1, 1] units of y and n ~ N(0, I) shaped like y."""
        return y + sigma * noise if sigma > 0 else y

    def to_image(self, y: torch.Tensor) -> torch.Tensor:
        """A viewable picture of y in x's shape (the pseudo-inverse by default)."""
        return self.A_pinv(y)

    def measurement_from_image(self, image: torch.Tensor) -> torch.Tensor:
        """y from a stored picture of a measurement (predict mode); the picture of a low-res,
        grey or masked photo is the measurement itself for the built-in operators."""
        return image


class SVDOperator(LinearOperator):
    """An operator defined by its SVD; A, Aᵀ and A† follow from V, Vt, U, Ut and singulars.

    Subclasses may override A, A_adjoint and A_pinv with faster direct forms; the shared
    property tests check that they agree with the SVD.
    """

    has_svd = True

    def V(self, z: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def Vt(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def U(self, z: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def Ut(self, y: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def singulars(self, like: torch.Tensor) -> torch.Tensor:
        """Singular values broadcastable to the spectral coordinates of `like` (x-shaped)."""
        raise NotImplementedError

    def ddnm_plus_singulars(self, like: torch.Tensor) -> torch.Tensor:
        """The singular values DDNM+ weighs the range correction and the noise with
        (`Lambda`/`Lambda_noise`), broadcastable like `singulars`: the operator's own by default;
        the upstream deblurring operators use their unthresholded values (`_singulars_orig`)."""
        return self.singulars(like)

    def A(self, x: torch.Tensor) -> torch.Tensor:
        return self.U(self.singulars(x) * self.Vt(x))

    def A_adjoint(self, y: torch.Tensor) -> torch.Tensor:
        z = self.Ut(y)
        return self.V(self.singulars(z) * z)

    def A_pinv(self, y: torch.Tensor) -> torch.Tensor:
        z = self.Ut(y)
        s = self.singulars(z)
        return self.V(torch.where(s > 0, z / torch.where(s > 0, s, 1), 0))
