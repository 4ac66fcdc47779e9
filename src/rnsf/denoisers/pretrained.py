"""Pretrained diffusion networks as rnsf denoisers.

`PretrainedDenoiser` holds a frozen network and runs it in the configured precision, memory
layout and compilation mode; methods and engine see an ordinary `Denoiser` that returns ε in
float32. `load_adm` and `load_ddpm` are what the `model` presets instantiate: read the
checkpoint (`rnsf.denoisers.checkpoints`), build the architecture, load it with `strict=True`.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping
from pathlib import Path

import torch
from torch import nn

from rnsf.denoisers import checkpoints
from rnsf.denoisers.adm import ADMUNet
from rnsf.denoisers.base import Denoiser
from rnsf.denoisers.ddpm import DDPMUNet
from rnsf.utils.errors import UserError

PRECISIONS = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


class PretrainedDenoiser(Denoiser):
    """A frozen ε-network (`net(x, t[, y])`) with run-time options.

    precision: `fp32`, or `fp16` / `bf16` autocast on a GPU (GroupNorm, softmax, the embedding
        MLP and the output head stay in float32, as guided-diffusion's fp16 mode). On the CPU,
        `fp16` falls back to fp32 with a warning; `bf16` uses CPU autocast.
    channels_last: NHWC memory layout for the network and its input on a GPU.
    compile: `torch.compile` the network on first use (`true` = inductor, or a backend name).
    class_label: the ImageNet class index given to a class-conditional network for every image.
    """

    def __init__(
        self,
        net: nn.Module,
        *,
        name: str,
        native_size: int | None,
        precision: str = "fp32",
        channels_last: bool = True,
        compile: bool | str = False,
        class_label: int | None = None,
    ) -> None:
        super().__init__()
        if precision not in PRECISIONS:
            raise UserError(
                f"model.precision={precision!r} is not supported; use one of "
                f"{', '.join(PRECISIONS)}"
            )
        num_classes = getattr(net, "num_classes", None)
        if num_classes is not None and (
            class_label is None or not 0 <= int(class_label) < num_classes
        ):
            raise UserError(
                f"model {name} is class-conditional: set model.class_label to a class index "
                f"in [0, {num_classes - 1}] (got {class_label})"
            )
        if num_classes is None and class_label is not None:
            raise UserError(
                f"model {name} is unconditional; remove model.class_label={class_label}"
            )
        self.net = net.eval().requires_grad_(False)
        self.name = name
        self.precision = precision
        self.channels_last = bool(channels_last)
        self.compile = compile
        self.class_label = None if class_label is None else int(class_label)
        self.size_multiple = net.size_multiple
        self.native_size = native_size
        self._nhwc = False
        self._warned = False
        self.__dict__["_compiled"] = None  # kept out of the module tree and the state dict

    def autocast_dtype(self, device: torch.device) -> torch.dtype | None:
        """The autocast dtype on `device`, or None for plain fp32."""
        if self.precision == "fp32":
            return None
        if device.type == "cuda" or (device.type == "cpu" and self.precision == "bf16"):
            return PRECISIONS[self.precision]
        if not self._warned:
            warnings.warn(
                f"model.precision={self.precision} needs a GPU; {self.name} runs in fp32 on "
                f"{device.type}",
                stacklevel=3,
            )
            self._warned = True
        return None

    def _runner(self) -> Callable:
        if not self.compile:
            return self.net
        if self._compiled is None:
            backend = self.compile if isinstance(self.compile, str) else "inductor"
            self.__dict__["_compiled"] = torch.compile(self.net, backend=backend)
        return self._compiled

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        device = x.device
        if self.channels_last and device.type == "cuda":
            if not self._nhwc:
                self.net.to(memory_format=torch.channels_last)
                self._nhwc = True
            x = x.contiguous(memory_format=torch.channels_last)
        extra = {}
        if self.class_label is not None:
            extra["y"] = torch.full((x.shape[0],), self.class_label, device=device)
        dtype = self.autocast_dtype(device)
        with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
            out = self._runner()(x, t, **extra)
        return out.float().contiguous()


def _load(
    build: Callable[[], nn.Module],
    checkpoint: str | Path,
    *,
    name: str,
    release_file: str | None,
    native_size: int,
    **options,
) -> PretrainedDenoiser:
    known = checkpoints.release(release_file)
    state = checkpoints.read_state_dict(checkpoint, known, f"python -m rnsf.download model={name}")
    with torch.device("meta"):  # no random initialisation: every weight comes from the file
        net = build()
    state = {k: v.float() if v.is_floating_point() else v for k, v in state.items()}
    checkpoints.load_into(net, state, checkpoint, name)
    return PretrainedDenoiser(net, name=name, native_size=native_size, **options)


def load_adm(
    checkpoint: str | Path,
    arch: Mapping,
    *,
    name: str = "adm",
    release: str | None = None,
    precision: str = "fp32",
    channels_last: bool = True,
    compile: bool | str = False,
    class_label: int | None = None,
) -> PretrainedDenoiser:
    """A guided-diffusion UNet (`ADMUNet(**arch)`) with the weights of `checkpoint`."""
    return _load(
        lambda: ADMUNet(**arch),
        checkpoint,
        name=name,
        release_file=release,
        native_size=int(arch.get("image_size", 256)),
        precision=precision,
        channels_last=channels_last,
        compile=compile,
        class_label=class_label,
    )


def load_ddpm(
    checkpoint: str | Path,
    arch: Mapping,
    *,
    name: str = "ddpm",
    release: str | None = None,
    precision: str = "fp32",
    channels_last: bool = True,
    compile: bool | str = False,
) -> PretrainedDenoiser:
    """A DDPM "simple" UNet (`DDPMUNet(**arch)`) with the weights of `checkpoint`."""
    return _load(
        lambda: DDPMUNet(**arch),
        checkpoint,
        name=name,
        release_file=release,
        native_size=int(arch.get("resolution", 256)),
        precision=precision,
        channels_last=channels_last,
        compile=compile,
    )
