"""MetricSuite: the `metrics` config group as one object, checked once at start-up.

Per image: PSNR, SSIM (protocol float|uint8) and LPIPS. Per job: FID and KID over the whole set,
from the saved PNGs, after every image is done. A metric whose weights are missing either stops
the job before any image is restored (`required: true`) or is recorded as null with the reason in
`metric_notes` after one warning; a number is never computed from random weights.
"""

from __future__ import annotations

import logging
import pickle
from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path

import torch
from lightning.pytorch.utilities import rank_zero_only
from omegaconf import DictConfig, OmegaConf
from torch import nn

from rnsf.metrics.distribution import FID_DIMS, MIN_IMAGES, fid_kid
from rnsf.metrics.image import PROTOCOLS, psnr, ssim
from rnsf.metrics.perceptual import LPIPS
from rnsf.metrics.weights import INCEPTION, LPIPS_BACKBONES, WeightFile, missing_message
from rnsf.utils.errors import UserError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LPIPSSpec:
    enabled: bool = False
    required: bool = False
    net: str = "alex"


@dataclass(frozen=True)
class FIDSpec:
    enabled: bool = False
    required: bool = False
    dims: int = 2048


@dataclass(frozen=True)
class KIDSpec:
    enabled: bool = False
    required: bool = False
    subset_size: int = 1000
    subsets: int = 100


def _spec(cls, value, key: str):
    if isinstance(value, cls):
        return value
    value = dict(value or {})
    unknown = set(value) - {f.name for f in fields(cls)}
    if unknown:
        raise UserError(f"metrics.{key} has no key {sorted(unknown)[0]!r}; drop it")
    return cls(**value)


class MetricSuite(nn.Module):
    """The metrics of a job. Built once (`from_config`), before the trainer starts: it checks the
    weight files and loads LPIPS, which then follows the LightningModule to its device.

    `mode='predict'` has no ground truth, so only the consistency is left (computed elsewhere);
    set-level metrics need the PNGs, hence `save_images=True`.
    """

    def __init__(
        self,
        protocol: str = "float",
        lpips: LPIPSSpec | Mapping | None = None,
        fid: FIDSpec | Mapping | None = None,
        kid: KIDSpec | Mapping | None = None,
        mode: str = "test",
        save_images: bool = True,
    ) -> None:
        super().__init__()
        if protocol not in PROTOCOLS:
            raise UserError(f"metrics.protocol={protocol!r} is unknown; use one of {PROTOCOLS}")
        self.protocol = protocol
        self.lpips_spec = _spec(LPIPSSpec, lpips, "lpips")
        self.fid_spec, self.kid_spec = _spec(FIDSpec, fid, "fid"), _spec(KIDSpec, kid, "kid")
        if self.lpips_spec.net not in LPIPS_BACKBONES:
            raise UserError(
                f"metrics.lpips.net={self.lpips_spec.net!r} is unknown; "
                f"use one of {sorted(LPIPS_BACKBONES)}"
            )
        if self.fid_spec.dims not in FID_DIMS:
            raise UserError(
                f"metrics.fid.dims={self.fid_spec.dims} is not an Inception feature size; "
                f"use one of {FID_DIMS} (2048 is the standard FID)"
            )
        if self.kid_spec.subset_size < 2 or self.kid_spec.subsets < 1:
            raise UserError(
                f"metrics.kid.subset_size={self.kid_spec.subset_size} and subsets="
                f"{self.kid_spec.subsets} must be ≥ 2 and ≥ 1"
            )
        #: why a metric is null in metrics.json, by metric
        self.notes: dict[str, str] = {}
        self.lpips: LPIPS | None = None
        self.inception: Path | None = None
        self._check(mode, save_images)

    @classmethod
    def from_config(
        cls, cfg: DictConfig | Mapping, mode: str = "test", save_images: bool = True
    ) -> MetricSuite:
        """The suite of a `metrics` config group (conf/metrics/*.yaml)."""
        if isinstance(cfg, DictConfig):
            cfg = OmegaConf.to_container(cfg, resolve=True)
        cfg = dict(cfg)
        unknown = set(cfg) - {"protocol", "lpips", "fid", "kid"}
        if unknown:
            raise UserError(f"metrics has no key {sorted(unknown)[0]!r}; drop it")
        return cls(**cfg, mode=mode, save_images=save_images)

    # -- start-up checks ----------------------------------------------------------------
    def _check(self, mode: str, save_images: bool) -> None:
        """Stop on a missing required weight file, or note the metric as not computed."""
        wanted = {
            "lpips": self.lpips_spec,
            "fid": self.fid_spec,
            "kid": self.kid_spec,
        }
        skipped: dict[str, str] = {}
        missing: dict[WeightFile, list[str]] = {}
        for key, spec in wanted.items():
            if not spec.enabled:
                self.notes[key] = f"disabled (metrics.{key}.enabled=false)"
            elif mode != "test":
                self.notes[key] = f"{mode} mode has no ground truth"
            elif key != "lpips" and not save_images:
                reason = f"metrics.{key} reads the saved PNGs; set save_images=true"
                if spec.required:
                    raise UserError(f"{reason} (or metrics.{key}.required=false)")
                skipped[key] = self.notes[key] = reason
            else:
                weights = LPIPS_BACKBONES[self.lpips_spec.net] if key == "lpips" else INCEPTION
                if weights.path.is_file():
                    continue
                if spec.required:
                    missing.setdefault(weights, []).append(f"metrics.{key}")
                    continue
                skipped[key] = self.notes[key] = (
                    f"{weights.name} not in {weights.path.parent}; download {weights.url}"
                )
        if missing:
            raise UserError(missing_message(missing))
        if skipped:
            _warn_once("not computed: " + "; ".join(f"{k} ({r})" for k, r in skipped.items()))
        if "lpips" not in self.notes:
            backbone = LPIPS_BACKBONES[self.lpips_spec.net].path
            self.lpips = _load(lambda: LPIPS(self.lpips_spec.net), backbone)
        if any(k not in self.notes for k in ("fid", "kid")):
            # read the file once now: a damaged one fails here, not after hours of sampling
            _load(
                lambda: torch.load(INCEPTION.path, map_location="cpu", weights_only=True),
                INCEPTION.path,
            )
            self.inception = INCEPTION.path

    # -- per image ----------------------------------------------------------------------
    @property
    def per_image_keys(self) -> list[str]:
        """The per-image columns this suite fills in test mode."""
        return ["psnr", "ssim"] + (["lpips"] if self.lpips is not None else [])

    def per_image(self, pred: torch.Tensor, target: torch.Tensor) -> dict[str, torch.Tensor]:
        """Scores per image, (B,) each, of restorations against targets in [-1, 1]."""
        scores = {
            "psnr": psnr(pred, target, self.protocol),
            "ssim": ssim(pred, target, self.protocol),
        }
        if self.lpips is not None:
            scores["lpips"] = self.lpips(pred, target, self.protocol)
        return scores

    # -- per job ------------------------------------------------------------------------
    def summary(self, output_dir: Path, names: list[str], device: torch.device) -> dict:
        """The set-level part of metrics.json: FID and KID of `images/restored/<name>.png`
        against `images/target/<name>.png` over all `names`, their bookkeeping, the protocol
        and a note for every metric left out. Call once, after every image is written."""
        n = len(names)
        active = [k for k in ("fid", "kid") if k not in self.notes]
        if active and n < MIN_IMAGES:
            for key in active:
                self.notes[key] = f"needs at least {MIN_IMAGES} images, the job has {n}"
            active = []
        keys = ("fid", "kid", "kid_std", "fid_images", "fid_dims", "kid_subset_size", "kid_subsets")
        out: dict = dict.fromkeys(keys)
        if active:
            subset = min(self.kid_spec.subset_size, n)
            folder = Path(output_dir) / "images"
            out.update(
                fid_kid(
                    [folder / "restored" / f"{name}.png" for name in names],
                    [folder / "target" / f"{name}.png" for name in names],
                    self.inception,
                    fid="fid" in active,
                    kid="kid" in active,
                    fid_dims=self.fid_spec.dims,
                    kid_subset_size=subset,
                    kid_subsets=self.kid_spec.subsets,
                    cuda=device.type == "cuda",
                )
            )
            out["fid_images"] = n
            if "fid" in active:
                out["fid_dims"] = self.fid_spec.dims
            if "kid" in active:
                out["kid_subset_size"], out["kid_subsets"] = subset, self.kid_spec.subsets
        out["metric_protocol"] = self.protocol
        out["lpips_net"] = self.lpips_spec.net if self.lpips is not None else None
        out["metric_notes"] = dict(self.notes)
        return out


@rank_zero_only
def _warn_once(message: str) -> None:
    log.warning(message)


def _load(build, path: Path):
    """Run `build`; a weight file that cannot be read is a UserError naming it."""
    try:
        return build()
    except (RuntimeError, OSError, EOFError, ValueError, pickle.UnpicklingError) as err:
        raise UserError(
            f"cannot load {path} ({type(err).__name__}: {str(err).splitlines()[0]}); "
            "the file is damaged or not the expected network: delete it and obtain it again"
        ) from None
