"""Image files in and out: [-1, 1] tensors inside, 8-bit PNGs outside."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from rnsf.utils.errors import UserError

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".ppm")


def open_rgb(path: Path) -> Image.Image:
    """The image at `path` in RGB; a corrupt or unreadable file is a UserError naming it."""
    try:
        with Image.open(path) as image:
            image.load()
            return image.convert("RGB")
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as err:
        raise UserError(
            f"cannot read image {path} ({type(err).__name__}: {err}); "
            "replace or remove the file, or list the good files in dataset.list_file"
        ) from None


def pil_to_tensor(image: Image.Image) -> torch.Tensor:
    """RGB PIL image → (3, H, W) float32 in [-1, 1]."""
    array = np.asarray(image, dtype=np.float32)
    return torch.from_numpy(array).permute(2, 0, 1) / 127.5 - 1.0


def to_uint8(x: torch.Tensor) -> np.ndarray:
    """(C, H, W) in [-1, 1] → (H, W, 3) uint8, clamped and rounded (grey replicated)."""
    x = ((x.detach().float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).cpu()
    if x.shape[0] == 1:
        x = x.expand(3, -1, -1)
    return x.permute(1, 2, 0).numpy()


def save_png(x: torch.Tensor, path: Path) -> None:
    """Write a [-1, 1] image atomically (temp file + rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    Image.fromarray(to_uint8(x)).save(tmp, format="PNG")
    tmp.replace(path)
