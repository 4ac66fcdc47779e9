"""Pretrained diffusion networks as rnsf denoisers.

`PretrainedDenoiser` holds a frozen network and runs it in the configured precision, memory
layout and compilation mode; methods and engine see an ordinary `Denoiser` that returns ε in
float32. `load_adm` and `load_ddpm` are what the `model` presets instantiate: read the
checkpoint (`rnsf.denoisers.checkpoints`), build the architecture, load it with `strict=True`.
"""

from __future__ import annotations

import logging
import time
import warnings
from collections.abc import Callable, Mapping
from pathlib import Path

import torch
from torch import nn

from rnsf.denoisers import checkpoints
from rnsf.denoisers.adm import ADMUNet
from rnsf.denoisers.base import Denoiser
from rnsf.denoisers.classifier import NoisyClassifier, guidance_gradient
from rnsf.denoisers.ddpm import DDPMUNet
from rnsf.utils.errors import UserError

log = logging.getLogger(__name__)

PRECISIONS = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
#: torch.compile modes (inductor); `auto` picks reduce-overhead (CUDA graphs) on a GPU
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")
_OFF = (None, False, "false", "off", "none")


def resolve_precision(precision: str, device: torch.device) -> str:
    """`auto`: bf16 on a GPU that has it (fp16 on older GPUs), fp32 elsewhere."""
    if precision != "auto":
        return precision
    if device.type != "cuda":
        return "fp32"
    return "bf16" if torch.cuda.is_bf16_supported() else "fp16"


def resolve_compile(option: bool | str | None, device: torch.device) -> dict | None:
    """The `torch.compile` arguments of a `compile` option, or None for eager.

    false: eager. true / `default` / another mode name: inductor in that mode. `auto`:
    inductor with CUDA graphs (`reduce-overhead`) on a GPU, eager elsewhere. Any other string is
    a backend name (`eager`, `aot_eager`, …) in its default mode.
    """
    if option in _OFF:
        return None
    if option == "auto":
        return {"backend": "inductor", "mode": "reduce-overhead"} if device.type == "cuda" else None
    if option is True or option in ("true", "on"):
        return {"backend": "inductor", "mode": "default"}
    if option in COMPILE_MODES:
        return {"backend": "inductor", "mode": option}
    return {"backend": str(option), "mode": None}


class PretrainedDenoiser(Denoiser):
    """A frozen ε-network (`net(x, t[, y])`) with run-time options.

    precision: `auto` (bf16 on a GPU, fp32 on the CPU), `fp32` (exact), or `fp16` / `bf16`
        autocast (GroupNorm statistics and the attention softmax accumulate in float32, the
        embedding MLP and the output head run in float32, as guided-diffusion's fp16 mode). On
        the CPU, `fp16` falls back to fp32 with a warning; `bf16` uses CPU autocast.
    channels_last: NHWC memory layout for the network and its input on a GPU.
    compile: `torch.compile` the network on first use (`resolve_compile`): `auto` (CUDA graphs
        on a GPU, eager on the CPU; plain inductor when the first call needs gradients, as in
        DPS), false, true, a mode name or a backend name. Shapes stay static: a batch smaller
        than the largest one seen is padded to it, so neither a last, short batch nor a new
        timestep (a tensor input) compiles again. The first compiled call's time is kept in
        `compile_seconds`.
    checkpointing: recompute each block's activations in the backward pass (DPS) instead of
        keeping them: less memory per image for ~1 more forward per step.
    class_label: one ImageNet class index given to a class-conditional network for every image;
        None (the default) takes each image's own class from the dataset (`bind`).
    classifier, classifier_scale: a noisy-image classifier for classifier guidance and its scale
        s (DDRM's and DDNM's `classifier_scale`); `classifier_gradient` returns s ∇ₓ log p(c | x_t)
        for each image's class c. Scale 0 disables it.
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
        checkpointing: bool = False,
        class_label: int | None = None,
        classifier: nn.Module | None = None,
        classifier_scale: float = 0.0,
    ) -> None:
        super().__init__()
        if precision not in (*PRECISIONS, "auto"):
            raise UserError(
                f"model.precision={precision!r} is not supported; use one of "
                f"auto, {', '.join(PRECISIONS)}"
            )
        if compile not in _OFF and compile is not True and not isinstance(compile, str):
            raise UserError(
                f"model.compile={compile!r} is not supported; use auto, false, true, one of "
                f"{', '.join(COMPILE_MODES)} or a torch.compile backend name"
            )
        num_classes = getattr(net, "num_classes", None)
        if (
            num_classes is not None
            and class_label is not None
            and not 0 <= class_label < num_classes
        ):
            raise UserError(
                f"model.class_label={class_label} is not a class index of model {name}; use "
                f"0 … {num_classes - 1}, or null for each image's class from the dataset"
            )
        if num_classes is None and class_label is not None:
            raise UserError(
                f"model {name} is unconditional; remove model.class_label={class_label}"
            )
        self.net = net.eval().requires_grad_(False)
        if checkpointing:
            if not hasattr(net, "checkpointing"):
                raise UserError(f"model {name} does not support model.checkpointing")
            net.checkpointing = True
        self.name = name
        self.precision = precision
        self.channels_last = bool(channels_last)
        self.compile = compile
        self.class_label = None if class_label is None else int(class_label)
        self.num_classes = num_classes
        self.classifier = (
            classifier.eval().requires_grad_(False)
            if classifier is not None and classifier_scale
            else None
        )
        self.classifier_scale = float(classifier_scale)
        self.labels: torch.Tensor | None = None  # the classes of the bound batch
        self.size_multiple = net.size_multiple
        self.native_size = native_size
        self.compile_seconds: float | None = None
        self.compile_mode: str | None = None  # the mode (or backend) in use once compiled
        self._nhwc = False
        self._warned = False
        self._batch = 0  # the batch size the compiled network was traced for
        self.__dict__["_compiled"] = None  # kept out of the module tree and the state dict

    def autocast_dtype(self, device: torch.device) -> torch.dtype | None:
        """The autocast dtype on `device`, or None for plain fp32."""
        precision = resolve_precision(self.precision, device)
        if precision == "fp32":
            return None
        if device.type == "cuda" or (device.type == "cpu" and precision == "bf16"):
            return PRECISIONS[precision]
        if not self._warned:
            warnings.warn(
                f"model.precision={precision} needs a GPU; {self.name} runs in fp32 on "
                f"{device.type}",
                stacklevel=3,
            )
            self._warned = True
        return None

    def describe(self, device: torch.device | None = None) -> dict:
        """What metrics.json records: the precision and compile mode in effect on `device`
        (default: the model's), and the first compiled call's seconds once it has run."""
        device = device or self._device()
        dtype = self.autocast_dtype(device)
        names = {v: k for k, v in PRECISIONS.items()}
        compiled = resolve_compile(self.compile, device)
        mode = self.compile_mode
        if mode is None and compiled is not None:
            mode = compiled["mode"] or compiled["backend"]
        return {
            "precision": names[dtype] if dtype is not None else "fp32",
            "compile": mode,
            "compile_seconds": self.compile_seconds,
        }

    def _compiled_net(self, device: torch.device) -> Callable | None:
        options = resolve_compile(self.compile, device)
        if options is None:
            return None
        if self._compiled is None:
            if self.compile == "auto" and torch.is_grad_enabled():
                options["mode"] = "default"  # gradients through the network: no CUDA graphs
            self.compile_mode = options["mode"] or options["backend"]
            mode = None if options["mode"] == "default" else options["mode"]
            self.__dict__["_compiled"] = torch.compile(
                self.net, backend=options["backend"], mode=mode, dynamic=False
            )
        return self._compiled

    def uses_channels_last(self, device: torch.device) -> bool:
        """NHWC on a GPU, where cuDNN's convolutions prefer it; the CPU stays NCHW (exact)."""
        return self.channels_last and device.type == "cuda"

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        device = x.device
        if self.uses_channels_last(device):
            if not self._nhwc:
                self.net.to(memory_format=torch.channels_last)
                self._nhwc = True
            x = x.contiguous(memory_format=torch.channels_last)
        extra = {}
        if self.num_classes is not None:
            extra["y"] = self.classes(x)
        dtype = self.autocast_dtype(device)
        compiled = self._compiled_net(device)
        with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
            if compiled is None:
                out = self.net(x, t, **extra)
            else:
                out = self._run_compiled(compiled, x, t, extra)
        return out.float().contiguous()

    def _run_compiled(self, compiled: Callable, x, t, extra: dict) -> torch.Tensor:
        """The compiled network on a batch padded to the traced size (static shapes)."""
        batch = x.shape[0]
        first = self.compile_seconds is None or batch > self._batch
        self._batch = max(self._batch, batch)
        if batch < self._batch:
            pad = self._batch - batch
            x = torch.cat([x, x[-1:].expand(pad, *x.shape[1:])])
            t = torch.cat([t, t[-1:].expand(pad)])
            extra = {k: torch.cat([v, v[-1:].expand(pad)]) for k, v in extra.items()}
            if self._nhwc:  # the traced strides: a new layout would compile again
                x = x.contiguous(memory_format=torch.channels_last)
        if self.compile_mode == "reduce-overhead":
            torch.compiler.cudagraph_mark_step_begin()
        start = time.perf_counter()
        out = compiled(x, t, **extra)
        if first:
            if x.device.type == "cuda":
                torch.cuda.synchronize(x.device)
            seconds = time.perf_counter() - start
            self.compile_seconds = (self.compile_seconds or 0.0) + seconds
            log.info("compiled %s (%s) in %.1f s", self.name, self.compile_mode, seconds)
        # CUDA graphs reuse their output memory on the next call: keep a copy
        return out[:batch].clone() if self.compile_mode == "reduce-overhead" else out[:batch]

    @property
    def needs_labels(self) -> bool:
        """True when the images' own classes are needed (conditional network or classifier)."""
        return self.class_label is None and (
            self.num_classes is not None or self.classifier is not None
        )

    def bind(self, labels: torch.Tensor | None) -> PretrainedDenoiser:
        """Take `labels` as the classes of the batch restored next (the engine binds every
        batch's before restoring it); the denoiser itself is returned, with its compiled network
        and tables."""
        if self.needs_labels:
            self.labels = labels
        return self

    def classes(self, x: torch.Tensor) -> torch.Tensor:
        """The class index of each image of the batch x: `class_label`, or the bound labels."""
        if self.class_label is not None:
            return torch.full((x.shape[0],), self.class_label, device=x.device, dtype=torch.long)
        labels = self.labels
        if labels is None or len(labels) != x.shape[0] or bool((labels < 0).any()):
            raise UserError(
                f"model {self.name} is class-conditional and some images have no class; use a "
                "dataset with labels (dataset=imagenet_1k, or dataset.labels_file=FILE for a "
                "folder) or set model.class_label=N for every image"
            )
        return labels.to(device=x.device, dtype=torch.long)

    def classifier_gradient(self, x: torch.Tensor, t: int) -> torch.Tensor | None:
        if self.classifier is None:
            return None
        dtype = self.autocast_dtype(x.device)
        with torch.autocast(x.device.type, dtype=dtype, enabled=dtype is not None):
            grad = guidance_gradient(self.classifier, x, t, self.classes(x), self.classifier_scale)
        return grad.float()


def _read_network(
    build: Callable[[], nn.Module],
    checkpoint: str | Path,
    *,
    name: str,
    release_file: str | None,
    preset: str,
) -> nn.Module:
    """Build the architecture on the meta device and load the file into it, strictly."""
    known = checkpoints.release(release_file)
    hint = f"python -m rnsf.download model={preset}"
    state = checkpoints.read_state_dict(checkpoint, known, hint)
    with torch.device("meta"):  # no random initialisation: every weight comes from the file
        net = build()
    state = {k: v.float() if v.is_floating_point() else v for k, v in state.items()}
    checkpoints.load_into(net, state, checkpoint, name)
    return net


def _load(
    build: Callable[[], nn.Module],
    checkpoint: str | Path,
    *,
    name: str,
    release_file: str | None,
    native_size: int,
    **options,
) -> PretrainedDenoiser:
    net = _read_network(build, checkpoint, name=name, release_file=release_file, preset=name)
    return PretrainedDenoiser(net, name=name, native_size=native_size, **options)


def load_classifier(
    checkpoint: str | Path,
    arch: Mapping,
    *,
    release: str | None = None,
    preset: str = "adm_imagenet256_cond",
) -> NoisyClassifier:
    """guided-diffusion's noisy-image classifier (`NoisyClassifier(**arch)`) with the weights of
    `checkpoint`, read and loaded like the diffusion networks (weights only, `strict=True`)."""
    return _read_network(
        lambda: NoisyClassifier(**arch),
        checkpoint,
        name=f"{preset}'s classifier",
        release_file=release,
        preset=preset,
    )


def load_adm(
    checkpoint: str | Path,
    arch: Mapping,
    *,
    name: str = "adm",
    release: str | None = None,
    precision: str = "fp32",
    channels_last: bool = True,
    compile: bool | str = False,
    checkpointing: bool = False,
    class_label: int | None = None,
    classifier: Mapping | None = None,
    classifier_scale: float = 0.0,
) -> PretrainedDenoiser:
    """A guided-diffusion UNet (`ADMUNet(**arch)`) with the weights of `checkpoint`; with
    `classifier` ({checkpoint, release, arch}) and a non-zero `classifier_scale`, also the
    noisy-image classifier for classifier guidance (scale 0 loads none)."""
    guide = None
    if classifier is not None and classifier_scale:
        guide = load_classifier(
            classifier["checkpoint"],
            classifier["arch"],
            release=classifier.get("release"),
            preset=name,
        )
    return _load(
        lambda: ADMUNet(**arch),
        checkpoint,
        name=name,
        release_file=release,
        native_size=int(arch.get("image_size", 256)),
        precision=precision,
        channels_last=channels_last,
        compile=compile,
        checkpointing=checkpointing,
        class_label=class_label,
        classifier=guide,
        classifier_scale=classifier_scale,
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
    checkpointing: bool = False,
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
        checkpointing=checkpointing,
    )
