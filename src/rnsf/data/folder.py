"""Datasets of image files: clean images to degrade (test) or measurements to restore (predict).

Resize policy (`resize`), applied with PIL before conversion to [-1, 1]:
- `center_crop`: crop the central square of side min(W, H), then resize to `image_size`
  (DDNM/DDRM's ImageNet preprocessing: CenterCropLongEdge + Resize);
- `resize`: resize to `image_size` × `image_size` without cropping (DDNM/DDRM's CelebA-HQ);
- `none`: use the file as it is (every image of a batch must then have the same size).
`interpolation` is `bilinear` (upstream's choice), `bicubic`, `lanczos` or `nearest`.
"""

from __future__ import annotations

from pathlib import Path

from PIL import Image
from torch.utils.data import Dataset

from rnsf.data.images import IMAGE_EXTENSIONS, open_rgb, pil_to_tensor
from rnsf.utils.errors import UserError

RESIZE_POLICIES = ("center_crop", "resize", "none")
INTERPOLATIONS = {
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "lanczos": Image.Resampling.LANCZOS,
    "nearest": Image.Resampling.NEAREST,
}


def list_images(root: Path, list_file: str | Path | None = None) -> list[Path]:
    """The dataset's files: those named in `list_file` (first column, relative to root), or
    every image under root, sorted by path."""
    if not root.is_dir():
        raise UserError(
            f"dataset folder {root} does not exist; set dataset.root to a folder of images"
        )
    if list_file is not None:
        list_path = Path(list_file)
        if not list_path.is_file():
            raise UserError(f"dataset list file {list_path} does not exist; fix dataset.list_file")
        names = [ln.split()[0] for ln in list_path.read_text().splitlines() if ln.strip()]
        paths = [root / n for n in names]
        missing = [p for p in paths if not p.is_file()]
        if missing:
            raise UserError(
                f"{len(missing)} of {len(paths)} files listed in {list_path} are missing under "
                f"{root} (first: {missing[0].name}); put them there or fix dataset.root"
            )
    else:
        paths = sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS)
    if not paths:
        raise UserError(
            f"dataset folder {root} holds no images ({', '.join(IMAGE_EXTENSIONS)}); "
            "set dataset.root to a folder of images"
        )
    return paths


class ImageFolder(Dataset):
    """Items are {"image": (3, H, W) in [-1, 1], "index": int, "name": str}. `index` is the
    position in the full sorted/listed dataset, so seeds do not depend on `limit` or sharding."""

    def __init__(
        self,
        root: str | Path,
        image_size: int | None = 256,
        resize: str = "center_crop",
        interpolation: str = "bilinear",
        list_file: str | Path | None = None,
        limit: int | None = None,
    ) -> None:
        if resize not in RESIZE_POLICIES:
            raise UserError(f"dataset.resize={resize!r} is unknown; use one of {RESIZE_POLICIES}")
        if interpolation not in INTERPOLATIONS:
            raise UserError(
                f"dataset.interpolation={interpolation!r} is unknown; use one of "
                f"{tuple(INTERPOLATIONS)}"
            )
        if resize != "none" and not image_size:
            raise UserError(f"dataset.resize={resize} needs dataset.image_size")
        self.root = Path(root).expanduser()
        self.paths = list_images(self.root, list_file)
        if limit is not None:
            if limit < 1:
                raise UserError(f"dataset.limit must be >= 1, got {limit}")
            self.paths = self.paths[:limit]
        self.image_size, self.resize, self.interpolation = image_size, resize, interpolation
        self.names = _unique_names(self.paths, self.root)

    def __len__(self) -> int:
        return len(self.paths)

    def load(self, path: Path) -> Image.Image:
        image = open_rgb(path)
        size, method = self.image_size, INTERPOLATIONS[self.interpolation]
        if self.resize == "center_crop":
            side = min(image.size)
            left, top = (image.width - side) // 2, (image.height - side) // 2
            image = image.crop((left, top, left + side, top + side))
        if self.resize != "none" and image.size != (size, size):
            image = image.resize((size, size), method)
        return image

    def __getitem__(self, i: int) -> dict:
        return {"image": pil_to_tensor(self.load(self.paths[i])), "index": i, "name": self.names[i]}

    def first_size(self) -> tuple[int, int]:
        """(H, W) of the first item after preprocessing, for up-front checks."""
        if self.resize != "none":
            return self.image_size, self.image_size
        width, height = self.load(self.paths[0]).size
        return height, width

    def verify(self) -> None:
        """Open every file's header so that a corrupt file fails before any restoration."""
        for path in self.paths:
            try:
                with Image.open(path) as image:
                    image.verify()
            except Exception as err:  # PIL raises many types for broken files
                raise UserError(
                    f"cannot read image {path} ({type(err).__name__}); replace or remove the file"
                ) from None


def _unique_names(paths: list[Path], root: Path) -> list[str]:
    """Output names: the file stem, or the relative path with '__' when stems repeat."""
    stems = [p.stem for p in paths]
    if len(set(stems)) == len(stems):
        return stems
    return [str(p.relative_to(root).with_suffix("")).replace("/", "__") for p in paths]
