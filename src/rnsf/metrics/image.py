"""Per-image quality and consistency scores (torchmetrics for PSNR and SSIM).

Protocol `float`: PSNR and SSIM on [0, 1] floats after clamping, as DDRM/DDNM compute them;
`uint8`: both images rounded to 8 bits first, as a PNG-based evaluation sees them.
"""

from __future__ import annotations

import torch
from torchmetrics.functional.image import (
    peak_signal_noise_ratio,
    structural_similarity_index_measure,
)

from rnsf.operators.base import LinearOperator

PROTOCOLS = ("float", "uint8")


def to_unit(x: torch.Tensor, protocol: str = "float") -> torch.Tensor:
    """[-1, 1] → [0, 1], clamped; with `uint8`, rounded to multiples of 1/255."""
    if protocol not in PROTOCOLS:
        raise ValueError(f"metrics.protocol={protocol!r} is unknown; use one of {PROTOCOLS}")
    x = ((x.float() + 1) / 2).clamp(0, 1)
    return (x * 255).round() / 255 if protocol == "uint8" else x


def psnr(pred: torch.Tensor, target: torch.Tensor, protocol: str = "float") -> torch.Tensor:
    """PSNR in dB per image (B,), 10 log10(1 / MSE) over C·H·W values in [0, 1]."""
    return peak_signal_noise_ratio(
        to_unit(pred, protocol),
        to_unit(target, protocol),
        data_range=1.0,
        reduction="none",
        dim=(1, 2, 3),
    )


def ssim(pred: torch.Tensor, target: torch.Tensor, protocol: str = "float") -> torch.Tensor:
    """SSIM per image (B,), Gaussian window 11, σ 1.5, on [0, 1]."""
    return structural_similarity_index_measure(
        to_unit(pred, protocol), to_unit(target, protocol), data_range=1.0, reduction="none"
    )


def consistency(x: torch.Tensor, y: torch.Tensor, operator: LinearOperator) -> torch.Tensor:
    """Measurement consistency per image (B,): the root-mean-square of A x − y over y's entries,
    in [0, 1] pixel units (half the [-1, 1] value), for x the clamped restoration. A method that
    enforces A x = y scores ≈ 0 on noise-free y; with noise, σ_y is the scale to compare with."""
    residual = operator.A(x.clamp(-1, 1)) - y
    return residual.flatten(1).pow(2).mean(1).sqrt() / 2
