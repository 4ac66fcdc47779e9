"""Image quality metrics."""

from rnsf.metrics.image import consistency, psnr, ssim, to_unit

__all__ = ["consistency", "psnr", "ssim", "to_unit"]
