"""FID and KID over a whole image set, through torch-fidelity, from the saved PNGs."""

from __future__ import annotations

from pathlib import Path

import torch_fidelity
from torch_fidelity.datasets import ImagesPathDataset

#: the fewest images FID (a covariance) and unbiased KID (m (m − 1) pairs) are defined for
MIN_IMAGES = 2
#: the Inception feature sizes FID can use (pytorch-fid's `--dims`); 2048 is the standard FID
FID_DIMS = (64, 192, 768, 2048)


def fid_kid(
    restored: list[Path],
    targets: list[Path],
    weights: Path,
    fid: bool = True,
    kid: bool = True,
    fid_dims: int = 2048,
    kid_subset_size: int = 1000,
    kid_subsets: int = 100,
    cuda: bool = False,
    batch_size: int = 64,
) -> dict[str, float]:
    """FID and/or KID between the restored images and the targets (8-bit image files).

    Both sets go through torch-fidelity's Inception-v3 (`weights`: its
    `weights-inception-2015-12-05-6726825d.pth`, the TF FID network). FID compares Gaussians of
    the `fid_dims`-d features (2048: the pool features of the standard FID; its cost grows as
    dims³); KID averages `kid_subsets` polynomial-kernel MMDs of the 2048-d features over random
    subsets of `kid_subset_size` ≤ N images. Nothing is cached to disk. Returns `fid`, `kid`,
    `kid_std` for the metrics asked for.
    """
    n = len(restored)
    if n != len(targets) or n < MIN_IMAGES:
        raise ValueError(f"FID/KID need two sets of ≥ {MIN_IMAGES} images, got {n}, {len(targets)}")
    if fid and fid_dims not in FID_DIMS:
        raise ValueError(f"FID dims {fid_dims} must be one of {FID_DIMS}")
    if kid and not 2 <= kid_subset_size <= n:
        raise ValueError(f"KID subset size {kid_subset_size} must lie in [2, {n}]")
    scores = torch_fidelity.calculate_metrics(
        input1=ImagesPathDataset([str(p) for p in restored]),
        input2=ImagesPathDataset([str(p) for p in targets]),
        fid=fid,
        kid=kid,
        kid_subset_size=kid_subset_size,
        kid_subsets=kid_subsets,
        feature_extractor="inception-v3-compat",
        feature_layer_fid=str(fid_dims),
        feature_layer_kid="2048",
        feature_extractor_weights_path=str(weights),
        cuda=cuda,
        batch_size=batch_size,
        cache=False,
        save_cpu_ram=True,
        verbose=False,
    )
    out = {}
    if fid:
        out["fid"] = scores[torch_fidelity.KEY_METRIC_FID]
    if kid:
        out["kid"] = scores[torch_fidelity.KEY_METRIC_KID_MEAN]
        out["kid_std"] = scores[torch_fidelity.KEY_METRIC_KID_STD]
    return out
