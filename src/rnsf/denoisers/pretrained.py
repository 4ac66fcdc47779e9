"""Pretrained diffusion networks as rnsf denoisers.

`PretrainedDenoiser` is a frozen network (`net(x, t[, y])`, loaded with a strict state dict)
that returns ε and the variance channels in float32; how the network runs (precision, layout,
compilation) is its `ExecutionPolicy` (`rnsf.denoisers.execution`), and the images' classes
come with each call. `load_adm` and `load_ddpm` are what the `model` presets instantiate: read
the checkpoint (`rnsf.denoisers.checkpoints`), build the architecture, load it with
`strict=True`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from pathlib import Path

import torch
from torch import nn

from rnsf.denoisers import checkpoints
from rnsf.denoisers.adm import ADMUNet
from rnsf.denoisers.base import Denoiser
from rnsf.denoisers.classifier import NoisyClassifier, guidance_gradient
from rnsf.denoisers.ddpm import DDPMUNet
from rnsf.denoisers.execution import (  # noqa: F401 - the names callers import from here
    COMPILE_MODES,
    PRECISIONS,
    ExecutionPolicy,
    resolve_compile,
    resolve_precision,
)
from rnsf.utils.errors import UserError
from rnsf.utils.schema import RUNTIME_SCHEMA

log = logging.getLogger(__name__)


class PretrainedDenoiser(Denoiser):
    """A frozen ε-network (`net(x, t[, y])`) run by an `ExecutionPolicy`.

    runtime: the run-time options of `ExecutionPolicy` (precision, channels_last, compile,
        checkpointing), or `policy`, an `ExecutionPolicy` built by the caller.
    class_label: one ImageNet class index given to a class-conditional network for every image;
        None (the default) takes each image's own class, passed with each call (`classes=`,
        or `conditioned(classes)`: the engine passes every batch's dataset labels).
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
        class_label: int | None = None,
        classifier: nn.Module | None = None,
        classifier_scale: float = 0.0,
        policy: ExecutionPolicy | None = None,
        **runtime,
    ) -> None:
        super().__init__()
        if policy is None:
            policy = ExecutionPolicy(name=name, **runtime)
        elif runtime:
            raise TypeError(f"give either policy or run-time options, not both ({runtime})")
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
        self.policy = policy
        self.net = policy.prepare(net)
        self.name = name
        self.class_label = None if class_label is None else int(class_label)
        self.num_classes = num_classes
        self.classifier = (
            classifier.eval().requires_grad_(False)
            if classifier is not None and classifier_scale
            else None
        )
        self.classifier_scale = float(classifier_scale)
        self.size_multiple = net.size_multiple
        self.native_size = native_size

    def describe(self, device: torch.device | None = None) -> dict:
        """What metrics.json records: the precision and compile mode in effect on `device`
        (default: the model's), and the compiling calls' seconds once they have run."""
        return self.policy.describe(device or self._device())

    def check_execution(self, device: torch.device) -> None:
        """Try the compiler the network will use on `device` (`ExecutionPolicy.check`)."""
        self.policy.check(device)

    def forward(
        self, x: torch.Tensor, t: torch.Tensor, classes: torch.Tensor | None = None
    ) -> torch.Tensor:
        return self.output(x, t, classes)

    def output(self, x, t, classes=None, eager: bool = False) -> torch.Tensor:
        extra = {"y": self.classes(x, classes)} if self.num_classes is not None else {}
        return self.policy.run(self.net, x, t, extra, eager=eager)

    @property
    def needs_labels(self) -> bool:
        """True when the images' own classes are needed (conditional network or classifier)."""
        return self.class_label is None and (
            self.num_classes is not None or self.classifier is not None
        )

    def classes(self, x: torch.Tensor, classes: torch.Tensor | None) -> torch.Tensor:
        """The class index of each image of the batch x: `class_label`, or `classes`."""
        if self.class_label is not None:
            return torch.full((x.shape[0],), self.class_label, device=x.device, dtype=torch.long)
        if classes is None or len(classes) != x.shape[0] or bool((classes < 0).any()):
            raise UserError(
                f"model {self.name} is class-conditional and some images have no class; use a "
                "dataset with labels (dataset=imagenet_1k, or dataset.labels_file=FILE for a "
                "folder) or set model.class_label=N for every image"
            )
        return classes.to(device=x.device, dtype=torch.long)

    def classifier_gradient(
        self, x: torch.Tensor, t: int, classes: torch.Tensor | None = None
    ) -> torch.Tensor | None:
        if self.classifier is None:
            return None
        dtype = self.policy.autocast_dtype(x.device)
        labels = self.classes(x, classes)
        with torch.autocast(x.device.type, dtype=dtype, enabled=dtype is not None):
            grad = guidance_gradient(self.classifier, x, t, labels, self.classifier_scale)
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
    class_label: int | None = None,
    classifier: Mapping | None = None,
    classifier_scale: float = 0.0,
    **runtime,
) -> PretrainedDenoiser:
    """A guided-diffusion UNet (`ADMUNet(**arch)`) with the weights of `checkpoint`; with
    `classifier` ({checkpoint, release, arch}) and a non-zero `classifier_scale`, also the
    noisy-image classifier for classifier guidance (scale 0 loads none). `runtime`: the
    options of `ExecutionPolicy` (precision, channels_last, compile, checkpointing)."""
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
        class_label=class_label,
        classifier=guide,
        classifier_scale=classifier_scale,
        policy=ExecutionPolicy(name=name, **runtime),
    )


def load_ddpm(
    checkpoint: str | Path,
    arch: Mapping,
    *,
    name: str = "ddpm",
    release: str | None = None,
    **runtime,
) -> PretrainedDenoiser:
    """A DDPM "simple" UNet (`DDPMUNet(**arch)`) with the weights of `checkpoint`; `runtime`:
    the options of `ExecutionPolicy`."""
    return _load(
        lambda: DDPMUNet(**arch),
        checkpoint,
        name=name,
        release_file=release,
        native_size=int(arch.get("resolution", 256)),
        policy=ExecutionPolicy(name=name, **runtime),
    )


# the run-time options are checked where the config gives them to a loader (`model.net.*`)
load_adm.config_schema = RUNTIME_SCHEMA
load_ddpm.config_schema = RUNTIME_SCHEMA
