"""The published checkpoints rnsf knows, and reading a checkpoint file into a network.

Reading never executes a file's pickle (`torch.load(weights_only=True)`), accepts the three
layouts the public files come in, and loads with `strict=True`: a missing file, an unreadable
file or a file of another architecture is a one-line `UserError`; there is no fall-back to
random weights (DPS's loader prints and continues with random weights, its `unet.py` L87-90).
"""

from __future__ import annotations

import re
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from rnsf.utils.errors import UserError


@dataclass(frozen=True)
class Release:
    """A published checkpoint: where it comes from and what the file must be."""

    file: str  # the upstream file name
    url: str  # the official address (tried first)
    source: str  # who publishes it, for the docs
    size: str  # human-readable size, for messages
    num_bytes: int | None = None  # exact size, checked after a download when known
    sha256: str | None = None  # checked after a download when known
    md5: str | None = None  # checked after a download when known (ddim's MD5_MAP gives only MD5)
    mirrors: tuple[str, ...] = ()  # tried in order when the official address fails
    note: str = ""

    @property
    def urls(self) -> tuple[str, ...]:
        return (self.url, *self.mirrors)

    def describe(self) -> str:
        if self.sha256:
            digest = f"sha256 {self.sha256}"
        else:
            digest = f"md5 {self.md5}" if self.md5 else "no published hash"
        return f"{self.file} ({self.size}, {digest}) from {self.url}"


_OPENAI = "https://openaipublic.blob.core.windows.net/diffusion/jul-2021"
_HEIBOX = "https://heibox.uni-heidelberg.de/f"
# ddim's converted DDPM checkpoints (pesser/pytorch_diffusion), as DDRM and DDNM fetch them:
# functions/ckpt_util.py URL_MAP (address), CKPT_MAP (relative path, kept as the file name here so
# that ddim's cache folder `diffusion_models_converted` works as paths.checkpoint_dir) and MD5_MAP.
_DDIM_SOURCE = "ermongroup/ddim functions/ckpt_util.py (also DDRM, DDNM): `{}` of URL_MAP"

#: Keyed by upstream file name (a preset's `model.release`).
RELEASES: dict[str, Release] = {
    r.file: r
    for r in (
        Release(
            file="256x256_diffusion_uncond.pt",
            url=f"{_OPENAI}/256x256_diffusion_uncond.pt",
            source="openai/guided-diffusion README: ImageNet 256x256, unconditional",
            size="2.21 GB",
            # OpenAI publishes no hash; these are the byte count and SHA-256 that independent
            # download tools (e.g. Disco Diffusion's model map) verify this file against.
            num_bytes=2_211_383_297,
            sha256="a37c32fffd316cd494cf3f35b339936debdc1576dad13fe57c42399a5dbc78b1",
        ),
        Release(
            file="256x256_diffusion.pt",
            url=f"{_OPENAI}/256x256_diffusion.pt",
            source="openai/guided-diffusion README: ImageNet 256x256, class-conditional",
            size="2.22 GB",
        ),
        Release(
            file="256x256_classifier.pt",
            url=f"{_OPENAI}/256x256_classifier.pt",
            source=(
                "openai/guided-diffusion README: ImageNet 256x256 noisy classifier, the guidance "
                "of DDRM configs/imagenet_256_cc.yml and DDNM's hq_demo"
            ),
            size="216 MB",  # 54,096,360 float32 parameters; OpenAI publishes no size or hash
        ),
        Release(
            file="512x512_classifier.pt",
            url=f"{_OPENAI}/512x512_classifier.pt",
            source=(
                "openai/guided-diffusion README: ImageNet 512x512 noisy classifier, the guidance "
                "of DDRM configs/imagenet_512_cc.yml"
            ),
            size="218 MB",  # 54,448,360 float32 parameters; OpenAI publishes no size or hash
        ),
        Release(
            file="ffhq_10m.pt",
            url="https://huggingface.co/deepinv/diffunet/resolve/main/diffusion_ffhq_10m.pt",
            source=(
                "DPS2022/diffusion-posterior-sampling README (Google Drive folder "
                "1jElnRoFv7b31fG0v6pTSQkelbSX3xGZh); direct copy from the deepinv model hub"
            ),
            size="374 MB",
            note="the official copy is a Google Drive folder, which needs a browser or gdown",
        ),
        Release(
            file="celeba_hq.ckpt",
            url="https://image-editing-test-12345.s3-us-west-2.amazonaws.com/checkpoints/celeba_hq.ckpt",
            source=(
                "ermongroup/SDEdit README (also DDRM, DDNM, SSD); the S3 address answers "
                "AccessDenied since 2023, DDNM's README points to Google Drive id "
                "1wSoA5fm_d6JBZk4RZ1SzWLMgev4WqH21"
            ),
            size="455 MB",
            mirrors=(
                "https://huggingface.co/gwang-kim/DiffusionCLIP-CelebA_HQ/resolve/main/celeba_hq.ckpt",
            ),
        ),
        Release(
            file="512x512_diffusion.pt",
            url=f"{_OPENAI}/512x512_diffusion.pt",
            source="openai/guided-diffusion README: ImageNet 512x512, class-conditional",
            size="≈ 2.24 GB",  # 558,997,638 fp32 parameters
        ),
        *(
            Release(
                file=f"ema_diffusion_{name}_model/model-{step}.ckpt",
                url=f"{_HEIBOX}/{key}/?dl=1",
                source=_DDIM_SOURCE.format(f"ema_{name}"),
                size=size,
                md5=md5,
            )
            for name, step, key, md5, size in (
                (
                    "lsun_bedroom",
                    2388000,
                    "b95206528f384185889b",
                    "1921fa46b66a3665e450e42f36c2720f",
                    "≈ 455 MB",
                ),
                (
                    "lsun_cat",
                    1761000,
                    "0701aac3aa69457bbe34",
                    "646f23f4821f2459b8bafc57fd824558",
                    "≈ 455 MB",
                ),
                (
                    "lsun_church",
                    4432000,
                    "44ccb50ef3c6436db52e",
                    "fdc68a23938c2397caba4a260bc2445f",
                    "≈ 455 MB",
                ),
                (
                    "cifar10",
                    790000,
                    "2e4f01e2d9ee49bab1d5",
                    "1fa350b952534ae442b1d5235cce5cd3",
                    "≈ 143 MB",
                ),
            )
        ),
    )
}


def release(file: str | None) -> Release | None:
    """The registry entry of an upstream file name, or None (unknown or not given)."""
    return RELEASES.get(file) if file else None


def read_state_dict(
    path: str | Path, known: Release | None = None, download_hint: str = ""
) -> dict:
    """The network weights in a checkpoint file, as a flat {key: tensor} dict.

    Layouts: a plain state dict (OpenAI, SDEdit, DPS); the same with a `module.` prefix
    (saved from DataParallel); ddim's training list `[model, optimizer, epoch, step(, ema)]`
    (`ermongroup/ddim runners/diffusion.py` L196-215), whose EMA weights are used when present,
    as ddim's sampler does with `model.ema: true`.
    """
    path = Path(path)
    if not path.is_file():
        where = f"; download {known.describe()}" if known else ""
        hint = f" ({download_hint})" if known and download_hint else ""
        raise UserError(f"checkpoint not found: {path}{where}{hint}, or set model.checkpoint=PATH")
    try:
        # memory-map zip-format files: the weights are copied into the network once
        mmap = zipfile.is_zipfile(path)
        payload = torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except Exception as err:  # corrupt, truncated, an HTML error page, or unsafe pickle
        raise UserError(f"cannot read checkpoint {path} ({_why(path, err)})") from None
    state = _weights(payload)
    if state is None:
        raise UserError(
            f"checkpoint {path} holds a {type(payload).__name__} that is neither a state dict "
            "nor ddim's [model, optimizer, epoch, step, ema] list; save model.state_dict()"
        )
    if state and all(k.startswith("module.") for k in state):
        state = {k[len("module.") :]: v for k, v in state.items()}
    return state


def _why(path: Path, err: Exception) -> str:
    """Why torch.load refused a file, in one clause with its remedy."""
    size = f"{path.stat().st_size:,} bytes"
    with open(path, "rb") as f:
        if f.read(64).lstrip().startswith(b"<"):
            return f"{size} of HTML/XML, an error page saved by a failed download; download again"
    text = " ".join(str(err).split())
    if "WeightsUnpickler error:" in text:
        rest = text.split("WeightsUnpickler error:", 1)[1].strip()
        detail = re.split(r"\. | Check the documentation", rest)[0]
        return (
            f"{size}; weights-only loading refuses it: {detail}; rnsf never runs a "
            "checkpoint's code, save the network's state_dict() instead"
        )
    detail = text.split(". ")[0] or type(err).__name__
    return f"{size}; {detail}; the file is truncated or not a PyTorch checkpoint, download again"


def _weights(payload) -> dict | None:
    if isinstance(payload, list | tuple):
        dicts = [p for p in payload if _is_state_dict(p)]
        if len(payload) >= 4 and _is_state_dict(payload[0]):
            ema = payload[4] if len(payload) > 4 and _is_state_dict(payload[4]) else None
            return dict(ema if ema is not None else payload[0])
        return dict(dicts[0]) if len(dicts) == 1 else None
    return dict(payload) if _is_state_dict(payload) else None


def _is_state_dict(obj) -> bool:
    return (
        isinstance(obj, Mapping)
        and bool(obj)
        and all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items())
    )


def load_into(
    net: nn.Module, state: Mapping[str, torch.Tensor], path: str | Path, name: str
) -> None:
    """Copy `state` into `net` with `strict=True`, or raise a one-line UserError naming the first
    missing, unexpected and mis-shaped keys. A network built on the meta device takes the
    tensors themselves (`assign=True`)."""
    expected = net.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    misshaped = [
        f"{k} (file {tuple(state[k].shape)}, model {tuple(v.shape)})"
        for k, v in expected.items()
        if k in state and state[k].shape != v.shape
    ]
    if missing or unexpected or misshaped:
        parts = []
        for label, keys in (("missing", missing), ("unexpected", unexpected)):
            if keys:
                parts.append(f"{len(keys)} {label} keys ({_first(keys)})")
        if misshaped:
            parts.append(f"{len(misshaped)} mis-shaped ({_first(misshaped, 2)})")
        raise UserError(
            f"checkpoint {path} does not fit model {name}: {'; '.join(parts)}; pick the "
            "model preset of this file or fix its architecture options"
        )
    assign = any(p.is_meta for p in net.parameters())
    net.load_state_dict(state, strict=True, assign=assign)


def _first(items: list[str], n: int = 3) -> str:
    more = f", … {len(items) - n} more" if len(items) > n else ""
    return ", ".join(items[:n]) + more
