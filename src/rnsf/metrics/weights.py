"""Where the pretrained weights of the metrics live, and the one-line message when one is missing.

LPIPS loads its ImageNet backbone through torchvision and torch-fidelity its Inception-v3 through
torch.hub; both look in `$TORCH_HOME/hub/checkpoints/<file>` (default `~/.cache/torch`) and
download only when the file is absent. torch.hub checks a file's hash only when it downloads it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
import torchvision.models as tvm
from torch_fidelity.feature_extractor_inceptionv3 import URL_INCEPTION_V3


@dataclass(frozen=True)
class WeightFile:
    """A pretrained file that torch.hub keeps under `checkpoints/`, and where it comes from."""

    what: str
    url: str

    @property
    def name(self) -> str:
        return self.url.rsplit("/", 1)[-1]

    @property
    def path(self) -> Path:
        return checkpoint_dir() / self.name


def checkpoint_dir() -> Path:
    """torch.hub's checkpoint folder, `$TORCH_HOME/hub/checkpoints` (read at every call)."""
    return Path(torch.hub.get_dir()) / "checkpoints"


def missing_message(missing: dict[WeightFile, list[str]]) -> str:
    """One line for required metrics whose files are absent: the files, the folder they belong
    in, how to obtain them, and the way out (`missing`: file → the config keys that need it)."""
    files = ", ".join(f"{f.name} ({f.what}, for {', '.join(keys)})" for f, keys in missing.items())
    urls = " ".join(f.url for f in missing)
    keys = ", ".join(f"{k}.required=false" for keys in missing.values() for k in keys)
    return (
        f"missing metric weights in {checkpoint_dir()}: {files}; on a machine with internet "
        f"download {urls} into that folder (or point TORCH_HOME at a folder whose hub/checkpoints "
        f"holds them), or set {keys}"
    )


#: the torchvision backbones of lpips.LPIPS(net=...) (lpips/pretrained_networks.py loads them with
#: `tv.<model>(pretrained=True)`, i.e. the IMAGENET1K_V1 weights)
LPIPS_BACKBONES = {
    "alex": WeightFile("ImageNet AlexNet", tvm.AlexNet_Weights.IMAGENET1K_V1.url),
    "vgg": WeightFile("ImageNet VGG16", tvm.VGG16_Weights.IMAGENET1K_V1.url),
    "squeeze": WeightFile("ImageNet SqueezeNet 1.1", tvm.SqueezeNet1_1_Weights.IMAGENET1K_V1.url),
}

#: torch-fidelity's port of the TF Inception-v3 of FID (2015-12-05), used for FID and KID
INCEPTION = WeightFile("FID Inception-v3", URL_INCEPTION_V3)
