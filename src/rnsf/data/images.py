"""Image files in and out: [-1, 1] tensors inside, 8-bit PNGs outside.

Decoding (`open_rgb`) turns every file PIL reads into the RGB picture a viewer shows:
- the EXIF orientation is applied (phone photos are stored sideways with a rotation tag);
- 16-bit greyscale (`I;16`, `I`) is scaled to 8 bits, v ↦ round(255 v / 65535), never clipped;
  16-bit RGB is read by PIL at 8-bit precision (its high byte, v ↦ ⌊v / 256⌋);
- transparency (RGBA, LA, palette or colour-key transparency) is composited on a stated
  background, `alpha="white"` (default) or `"black"`; `alpha="refuse"` makes such a file an error.
  A file whose alpha is opaque everywhere is simply read as RGB;
- palette, CMYK, 1-bit and other modes are converted to RGB by PIL; 32-bit float images are
  refused (their range is not defined).
Every problem is a UserError naming the file.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from rnsf.utils.errors import UserError

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".ppm")
#: backgrounds transparent pixels are composited on (`alpha`), and the policy that refuses them
ALPHA_BACKGROUNDS = {"white": (255, 255, 255), "black": (0, 0, 0)}
ALPHA_POLICIES = (*ALPHA_BACKGROUNDS, "refuse")
_SIXTEEN_BIT_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I")
_ALPHA_MODES = ("RGBA", "LA", "PA", "RGBa", "La")
#: what PIL raises for broken files
READ_ERRORS = (UnidentifiedImageError, OSError, ValueError, SyntaxError, EOFError)


def open_rgb(path: Path, alpha: str = "white") -> Image.Image:
    """The image at `path` as RGB, fully decoded (see the module docstring); a corrupt, truncated
    or unreadable file is a UserError naming it."""
    try:
        with Image.open(path) as image:
            image.load()  # the whole file: a truncated one fails here, not later
            return to_rgb(image, alpha, path)
    except READ_ERRORS as err:
        raise unreadable(path, err) from None


def unreadable(path: Path, err: Exception) -> UserError:
    """The one-line error for a file PIL cannot decode."""
    return UserError(
        f"cannot read image {path} ({type(err).__name__}: {err}); "
        "replace or remove the file, or list the good files in dataset.list_file"
    )


def to_rgb(image: Image.Image, alpha: str = "white", path: Path | str = "image") -> Image.Image:
    """`image` upright and in RGB, with 16-bit values scaled and transparency composited."""
    if alpha not in ALPHA_POLICIES:
        raise UserError(f"dataset.alpha={alpha!r} is unknown; use one of {ALPHA_POLICIES}")
    image = ImageOps.exif_transpose(image)
    if image.mode in _SIXTEEN_BIT_MODES:
        image = Image.fromarray(_sixteen_to_eight(np.asarray(image), path))
    elif image.mode == "F":
        raise UserError(
            f"image {path} holds 32-bit floats, whose range is not defined; "
            "save it as an 8- or 16-bit PNG"
        )
    if image.mode in _ALPHA_MODES or "transparency" in image.info:
        image = _drop_alpha(image.convert("RGBA"), alpha, path)
    return image.convert("RGB")


def has_transparency(image: Image.Image) -> bool:
    """Whether any pixel of `image` is not fully opaque."""
    if image.mode not in _ALPHA_MODES and "transparency" not in image.info:
        return False
    return image.convert("RGBA").getchannel("A").getextrema()[0] < 255


def _sixteen_to_eight(values: np.ndarray, path) -> np.ndarray:
    """16-bit grey values in [0, 65535] to 8 bits by scaling (round(255 v / 65535))."""
    low, high = int(values.min()), int(values.max())
    if low < 0 or high > 65535:
        raise UserError(
            f"image {path} holds integers in [{low}, {high}], outside 16 bits; "
            "save it as an 8- or 16-bit PNG"
        )
    return np.round(values.astype(np.float64) * (255 / 65535)).astype(np.uint8)


def _drop_alpha(rgba: Image.Image, alpha: str, path) -> Image.Image:
    """Composite an RGBA image on the background `alpha` names (or refuse it)."""
    if rgba.getchannel("A").getextrema()[0] == 255:
        return rgba.convert("RGB")
    if alpha == "refuse":
        raise UserError(
            f"image {path} has transparent pixels; set dataset.alpha=white or "
            "dataset.alpha=black to composite it on that background, or remove the alpha channel"
        )
    background = Image.new("RGBA", rgba.size, (*ALPHA_BACKGROUNDS[alpha], 255))
    return Image.alpha_composite(background, rgba).convert("RGB")


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
