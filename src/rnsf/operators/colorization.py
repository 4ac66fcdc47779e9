"""Colorization: y is the weighted grey value of the three channels."""

from __future__ import annotations

import torch

from rnsf.operators.base import SVDOperator, full_float32

#: DDRM/DDNM/SSD grey weights (svd_operators.py `Colorization`)
GREY_WEIGHTS = (0.3333, 0.3334, 0.3333)


class Colorization(SVDOperator):
    """A x = Σ_c w_c x_c, y of shape (B, 1, H, W). Per pixel the 1×3 row w has the SVD
    w = 1 · ‖w‖ · v₁ᵀ with v₁ = w/‖w‖; V completes v₁ to an orthonormal basis of colour space."""

    def __init__(self, weights: tuple[float, float, float] = GREY_WEIGHTS) -> None:
        w = torch.tensor(weights, dtype=torch.float64)
        _, _, Vh = torch.linalg.svd(w[None], full_matrices=True)
        Vh = Vh * torch.sign(Vh[0] @ w)  # first row = +w/‖w‖
        self._w, self._V = w, Vh.T
        self._cache: dict[tuple, tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = {}

    def _tensors(self, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        key = (like.device, like.dtype)
        if key not in self._cache:
            w, V = self._w, self._V
            s = torch.tensor([w.norm(), 0.0, 0.0], dtype=torch.float64)
            self._cache[key] = tuple(t.to(device=like.device, dtype=like.dtype) for t in (w, V, s))
        return self._cache[key]

    def A(self, x: torch.Tensor) -> torch.Tensor:
        w, _, _ = self._tensors(x)
        with full_float32():
            return torch.einsum("c,bchw->bhw", w, x)[:, None]

    def A_adjoint(self, y: torch.Tensor) -> torch.Tensor:
        w, _, _ = self._tensors(y)
        return w[None, :, None, None] * y

    def A_pinv(self, y: torch.Tensor) -> torch.Tensor:
        w, _, _ = self._tensors(y)
        with full_float32():
            return (w / (w @ w))[None, :, None, None] * y

    def V(self, z: torch.Tensor) -> torch.Tensor:
        _, V, _ = self._tensors(z)
        with full_float32():
            return torch.einsum("ck,bkhw->bchw", V, z)

    def Vt(self, x: torch.Tensor) -> torch.Tensor:
        _, V, _ = self._tensors(x)
        with full_float32():
            return torch.einsum("ck,bchw->bkhw", V, x)

    def U(self, z: torch.Tensor) -> torch.Tensor:
        return z[:, :1]

    def Ut(self, y: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.pad(y, (0, 0, 0, 0, 0, 2))

    def singulars(self, like: torch.Tensor) -> torch.Tensor:
        _, _, s = self._tensors(like)
        return s[:, None, None]

    def x_shape(self, y_shape):
        return (*y_shape[:-3], 3, *y_shape[-2:])

    def measurement_from_image(self, image: torch.Tensor) -> torch.Tensor:
        return self.A(image) if image.shape[-3] == 3 else image
