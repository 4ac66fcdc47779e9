"""The denoiser protocol every method talks to: ε-prediction on the shared diffusion."""

from __future__ import annotations

import torch
from torch import nn

from rnsf.diffusion import NUM_TIMESTEPS, alphas_cumprod, linear_betas, sqrt32


class Denoiser(nn.Module):
    """A frozen ε-prediction network on the linear-β VP diffusion.

    Subclasses implement `forward(x_t, t) -> ε` for images in [-1, 1] and integer timesteps
    t ∈ [0, T-1] of shape (B,). Networks that also predict a variance (6 output channels) return
    only the first 3 channels from `eps`; `eps_and_variance` returns both halves.

    The public pieces every sampler uses: `alphas_cumprod(dtype, device)` (the ᾱ table at the
    precision a method asks for), `x0_from_eps` (x̂₀ from ε, in that precision's arithmetic),
    `eps` and `eps_and_variance` (ε and the learned-variance channels), `classifier_gradient`
    and `num_timesteps`. The network's inputs beyond (x_t, t), the images' classes, are passed
    with each call (`classes=`); `conditioned(classes)` is the same API with them filled in,
    which is what a method receives from the engine.
    """

    #: how the network runs (precision, compilation, layout); None: plain eager float32
    policy = None

    #: spatial sizes must be a multiple of this (e.g. 2**levels for a UNet)
    size_multiple: int = 1
    #: sizes the network was trained for; None when any multiple of `size_multiple` works
    native_size: int | None = None
    #: number of classes of a class-conditional network (None: unconditional)
    num_classes: int | None = None

    def __init__(self, num_timesteps: int = NUM_TIMESTEPS) -> None:
        super().__init__()
        self.num_timesteps = num_timesteps
        # built once per (dtype, device) on first use and kept there; outside the module's
        # state, so that casting the network (`.half()`) never touches a table
        self.__dict__["_tables"] = {}

    # -- the ᾱ tables ---------------------------------------------------------------------
    def _table(self, key: str, dtype: torch.dtype, device, build) -> torch.Tensor:
        device = torch.device(device) if device is not None else self._device()
        full = (key, dtype, device)
        if full not in self._tables:
            self._tables[full] = build().to(device)
        return self._tables[full]

    def _device(self) -> torch.device:
        for tensor in (*self.parameters(), *self.buffers()):
            return tensor.device
        return torch.device("cpu")

    def alphas_cumprod(
        self, dtype: torch.dtype = torch.float32, device: torch.device | str | None = None
    ) -> torch.Tensor:
        """ᾱ_t at index t + 1 for t = -1 … T-1 (ᾱ_{-1} = 1), on `device` (default: the model's).

        float32: DDNM/DDRM's `compute_alpha`; float64: guided-diffusion's NumPy tables (DPS,
        SSD). Built once per dtype and device."""
        return self._table(
            "abar",
            dtype,
            device,
            lambda: alphas_cumprod(linear_betas(self.num_timesteps), dtype),
        )

    def alpha_bar(self, t: int) -> torch.Tensor:
        """ᾱ_t (float32) as a 0-d tensor on the model's device; t = -1 gives 1."""
        return self.alphas_cumprod()[t + 1]

    def _x0_coefficients(self, dtype: torch.dtype, device) -> torch.Tensor:
        """(2, T+1) float32: the two per-timestep factors of `x0_from_eps`."""

        def build() -> torch.Tensor:
            abar = self.alphas_cumprod(dtype, "cpu")
            if dtype == torch.float32:  # √ᾱ and √(1 − ᾱ), float32 roots of float32 values
                return torch.stack([sqrt32(abar), sqrt32(1 - abar)])
            # guided-diffusion: √(1/ᾱ) and √(1/ᾱ − 1) in float64, cast to float32 at use
            return torch.stack([(1 / abar).sqrt(), (1 / abar - 1).sqrt()]).float()

        return self._table("x0", dtype, device, build)

    def x0_from_eps(
        self, x: torch.Tensor, eps: torch.Tensor, t: int, dtype: torch.dtype = torch.float32
    ) -> torch.Tensor:
        """x̂₀ = (x_t − √(1−ᾱ_t) ε) / √ᾱ_t, not clamped, in the arithmetic of the table a method
        asks for: float32 as DDNM/DDRM (`(x − ε·√(1−ᾱ)) / √ᾱ` on float32 ᾱ), float64 as
        guided-diffusion's `_predict_xstart_from_eps` (√(1/ᾱ)·x − √(1/ᾱ−1)·ε with the factors
        computed in float64). The factors are device tables: no host sync per step."""
        c = self._x0_coefficients(dtype, x.device)[:, t + 1]
        if dtype == torch.float32:
            return (x - eps * c[1]) / c[0]
        return c[0] * x - c[1] * eps

    # -- the network ----------------------------------------------------------------------
    def output(
        self,
        x: torch.Tensor,
        t: torch.Tensor,
        classes: torch.Tensor | None = None,
        eager: bool = False,
    ) -> torch.Tensor:
        """The network's raw output for timesteps t (B,): ε, then any variance channels.
        `classes` (B,) are the images' class indices for a class-conditional network (ignored
        by others); `eager` asks for the uncompiled network (the memory probe)."""
        return self(x, t)

    def eps_and_variance(
        self, x: torch.Tensor, t: int, classes: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(ε̂, v) for a batch at one shared timestep t: v holds the learned-variance channels
        (guided-diffusion's `learn_sigma` output, in [-1, 1] between log β̃_t and log β_t), or
        None for a network that predicts ε only."""
        tt = torch.full((x.shape[0],), t, device=x.device, dtype=torch.long)
        out = self.output(x, tt, classes)
        channels = x.shape[1]
        if out.shape[1] == 2 * channels:
            return out[:, :channels], out[:, channels:]
        return out, None

    def eps(self, x: torch.Tensor, t: int, classes: torch.Tensor | None = None) -> torch.Tensor:
        """ε̂(x_t, t) for a batch at one shared timestep t."""
        if classes is None:  # a subclass may override eps_and_variance(x, t) alone
            return self.eps_and_variance(x, t)[0]
        return self.eps_and_variance(x, t, classes)[0]

    # -- class labels and classifier guidance ---------------------------------------------
    def classifier_gradient(
        self, x: torch.Tensor, t: int, classes: torch.Tensor | None = None
    ) -> torch.Tensor | None:
        """s ∇ₓ log p(c | x_t, t) for the images' classes c and the classifier scale s, or None
        when there is no classifier guidance (the default)."""
        return None

    @property
    def needs_labels(self) -> bool:
        """True when the images' own classes are needed (conditional network or classifier)."""
        return False

    def conditioned(self, classes: torch.Tensor | None) -> Conditioned:
        """This denoiser for one batch whose images have the ImageNet classes `classes` (B,), -1
        where unknown: an immutable view that passes them with every call (a denoiser that does
        not need them, `needs_labels` false, gets none). The denoiser itself holds no per-batch
        state, so one network serves every batch, also re-entrantly."""
        return Conditioned(self, classes if self.needs_labels else None)

    def describe(self, device: torch.device | None = None) -> dict:
        """How the network runs, for metrics.json: precision, compile mode, compile seconds."""
        return {"precision": "fp32", "compile": None, "compile_seconds": None}

    def check_execution(self, device: torch.device) -> None:
        """Check, before a job writes anything, that the network can run as configured on
        `device` (a compiler that cannot run: one line, or the eager fallback). Plain eager
        float32 always can."""

    def check_size(self, height: int, width: int) -> None:
        """Raise a ValueError naming the size and the fix when the network cannot take it."""
        m = self.size_multiple
        if height % m or width % m:
            raise ValueError(
                f"image size {height}x{width} is not a multiple of {m}, which "
                f"{type(self).__name__} needs; set dataset.image_size to a multiple of {m}"
            )


class Conditioned:
    """A denoiser with the classes of one batch filled in (`Denoiser.conditioned`): the public
    API of the denoiser, each call passing `classes` (unless the call gives its own). Immutable;
    everything else (`x0_from_eps`, `alphas_cumprod`, `num_timesteps`, …) is the denoiser's."""

    __slots__ = ("classes", "denoiser")

    def __init__(self, denoiser: Denoiser, classes: torch.Tensor | None) -> None:
        object.__setattr__(self, "denoiser", denoiser)
        object.__setattr__(self, "classes", classes)

    def __reduce__(self):
        return Conditioned, (self.denoiser, self.classes)

    def __setattr__(self, name: str, value) -> None:
        raise AttributeError(f"a conditioned denoiser is immutable (setting {name!r})")

    def __getattr__(self, name: str):
        if name in Conditioned.__slots__:  # not set yet (a copy being built): no recursion
            raise AttributeError(name)
        return getattr(self.denoiser, name)

    def __call__(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return self.output(x, t)

    def output(self, x, t, classes=None, eager: bool = False) -> torch.Tensor:
        return self.denoiser.output(x, t, self._classes(classes), eager)

    def eps_and_variance(self, x, t, classes=None):
        return self._call(self.denoiser.eps_and_variance, x, t, classes)

    def eps(self, x, t, classes=None) -> torch.Tensor:
        return self._call(self.denoiser.eps, x, t, classes)

    def classifier_gradient(self, x, t, classes=None) -> torch.Tensor | None:
        return self._call(self.denoiser.classifier_gradient, x, t, classes)

    def conditioned(self, classes: torch.Tensor | None) -> Conditioned:
        return self.denoiser.conditioned(classes)

    def _classes(self, classes: torch.Tensor | None) -> torch.Tensor | None:
        return self.classes if classes is None else classes

    def _call(self, method, x, t, classes):
        classes = self._classes(classes)
        # without classes, the two-argument call that a user's subclass may implement alone
        return method(x, t) if classes is None else method(x, t, classes=classes)
