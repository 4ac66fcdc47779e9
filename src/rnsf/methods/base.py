"""The one call signature every restoration method shares."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import ClassVar

import torch

from rnsf.denoisers.base import Denoiser
from rnsf.operators.base import LinearOperator
from rnsf.utils.errors import UserError
from rnsf.utils.schema import Int


@dataclass
class StepInfo:
    """What a sampler callback receives after each network evaluation."""

    index: int  #: 0-based index of the network evaluation
    t: int  #: timestep the network saw
    x: torch.Tensor  #: the new iterate x_{t_next}
    x0: torch.Tensor  #: the network's x̂₀ at t (before any correction)
    x0_corrected: torch.Tensor  #: x̃₀ after the method's data-consistency step


Callback = Callable[[StepInfo], None]


class Method:
    """restore(y, operator, denoiser, generators, sigma_y=…, callback=…) -> x̂ in [-1, 1].

    `sigma_y` is the measurement noise in the [-1, 1] units of y (`Task.sigma_model`);
    `generators` holds one torch.Generator per image of the batch.

    Before a job writes anything, the engine asks the method what it needs (`check`, from the
    class attributes below) and what it will use (`describe`, recorded in metrics.json), with
    the operator as `restore` will get it (bound to the job's image size).
    """

    name: str = "method"
    steps: int | None = None
    #: True when `restore` takes `known=KnownRegion` (the overlap constraint of tiling,
    #: `rnsf.methods.constraint`) and applies it to x̃₀ after every projection
    supports_known: bool = False
    #: whether `restore` differentiates through the network (memory per image, batch size)
    needs_grad: bool = False
    #: the method works in the operator's spectral coordinates (V, Vᵀ, U, Uᵀ, singular values)
    needs_svd: bool = False
    #: with measurement noise (σ_y > 0) the method needs the operator's SVD
    needs_svd_with_noise: bool = False
    #: the method models measurement noise; False: it refuses σ_y > 0
    supports_noise: bool = True
    #: `restore` takes `state=SamplerState` and records it at every step boundary, so that a
    #: stopped job continues its batch in flight from the last step (`rnsf.methods.state`);
    #: False: that batch restarts from its first step
    resumable: bool = False

    def check(self, operator: LinearOperator, sigma_y: float = 0.0) -> None:
        """Raise a one-line `UserError` when this method cannot restore measurements of
        `operator` with noise `sigma_y` ([-1, 1] units); `restore` would fail or be wrong."""
        kind = type(operator).__name__
        svd = getattr(operator, "has_svd", False)
        if self.needs_svd and not svd:
            raise UserError(
                f"method {self.name} needs an operator with an SVD (V, Vt, U, Ut, singulars), "
                f"and the task's {kind} has none: pick another method (ddnm, rnsf, dps, ssd, "
                "pinv) or a task whose operator has an SVD"
            )
        if sigma_y > 0 and not self.supports_noise:
            raise UserError(
                f"method {self.name} does not model measurement noise: use task.sigma=0 or a "
                "method that does (ddnm, rnsf, ddrm, dps, ssd_plus)"
            )
        if sigma_y > 0 and self.needs_svd_with_noise and not svd:
            raise UserError(
                f"method {self.name} with task.sigma > 0 needs an operator with an SVD, and the "
                f"task's {kind} has none: use task.sigma=0, or method=dps or ssd_plus"
            )

    def describe(self, operator: LinearOperator) -> dict:
        """The settings this method will use on `operator`, per-task defaults resolved (for
        metrics.json); by default its `hyperparameters()`."""
        return self.hyperparameters()

    @property
    def nfe(self) -> int:
        """Network evaluations per image."""
        return 0

    def restore(
        self,
        y: torch.Tensor,
        operator: LinearOperator,
        denoiser: Denoiser | None,
        generators: Sequence[torch.Generator],
        *,
        sigma_y: float = 0.0,
        callback: Callback | None = None,
    ) -> torch.Tensor:
        raise NotImplementedError

    def hyperparameters(self) -> dict:
        """The method's settings, for metrics.json (dataclass fields; schedules by value)."""
        import dataclasses

        if not dataclasses.is_dataclass(self):
            return {}
        params = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            params[f.name] = vars(value) if dataclasses.is_dataclass(value) else value
        return params


class Pinv(Method):
    """A†y: the least-squares solution of minimum norm; no network."""

    name = "pinv"
    config_schema: ClassVar[dict] = {"steps": Int(1, 1000, nullable=True)}  # null: no steps

    def __init__(self, steps: int | None = None) -> None:
        # Closed form: `steps` is accepted and ignored (recorded as null), so that sweeps over
        # method.steps and presets such as debug=tiny compose with method=pinv.
        del steps

    def restore(self, y, operator, denoiser, generators, *, sigma_y=0.0, callback=None):
        return operator.A_pinv(y)
