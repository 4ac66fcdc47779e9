"""Datasets of image files: clean images to degrade (test) or measurements to restore (predict).

Resize policy (`resize`), applied with PIL before conversion to [-1, 1]:
- `center_crop`: crop the central square of side min(W, H), then resize to `image_size`
  (DDNM/DDRM's ImageNet preprocessing: CenterCropLongEdge + Resize);
- `resize`: resize to `image_size` × `image_size` without cropping (DDNM/DDRM's CelebA-HQ);
- `none`: use the file as it is; images of different sizes are batched by size (the data module
  groups them), and with `tiling=mask_shift` any size larger than the model's window works.
`interpolation` is `bilinear` (upstream's choice), `bicubic`, `lanczos` or `nearest`.
Files are decoded by `rnsf.data.images.open_rgb` (EXIF orientation, 16-bit scaling, transparency
composited on the `alpha` background: `white`, `black`, or `refuse`); `verify` decodes every file
before a job writes anything (`rnsf.data.verify`).

`list_file` selects and orders the files: a path, or the name of a list in `lists/` that ships
with rnsf (`imagenet_val_1k`: DDRM's 1,000 ImageNet validation images).

Class labels (for class-conditional models and classifier guidance): the list's second column
when every line has an integer there (`imagenet_val_1k`: `<file> <class>`, as DDRM's
`ImageDataset` reads it), or `labels_file`, lines `<file> <class>` naming files by their path
relative to root or by file name. Images without a label get -1.
"""

from __future__ import annotations

from pathlib import Path

from PIL import Image
from torch.utils.data import Dataset

from rnsf.data.images import ALPHA_POLICIES, IMAGE_EXTENSIONS, open_rgb, pil_to_tensor
from rnsf.data.verify import verify_images
from rnsf.utils.errors import UserError

RESIZE_POLICIES = ("center_crop", "resize", "none")
SPLITS = ("val", "test")
INTERPOLATIONS = {
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "lanczos": Image.Resampling.LANCZOS,
    "nearest": Image.Resampling.NEAREST,
}


#: lists that ship with rnsf, selectable by name in `dataset.list_file`
LISTS_DIR = Path(__file__).with_name("lists")


def package_lists() -> list[str]:
    """Names of the image lists that ship with rnsf (`imagenet_val_1k`, …)."""
    return sorted(p.stem for p in LISTS_DIR.glob("*.txt"))


def resolve_list_file(list_file: str | Path) -> Path:
    """The list file at a path, or the package list of that name (`imagenet_val_1k`)."""
    path = Path(list_file).expanduser()
    if path.is_file():
        return path
    for candidate in (LISTS_DIR / str(list_file), LISTS_DIR / f"{list_file}.txt"):
        if candidate.is_file():
            return candidate
    raise UserError(
        f"dataset.list_file={list_file} is neither a file nor a list that ships with rnsf "
        f"({', '.join(package_lists())}); fix dataset.list_file"
    )


def read_labels(path: Path) -> dict[str, int] | None:
    """{first column: class} of a list whose every line has an integer second column, else None."""
    labels = {}
    for line in path.read_text().splitlines():
        parts = line.split()
        if not parts:
            continue
        if len(parts) < 2 or not parts[1].lstrip("-").isdigit():
            return None
        labels[parts[0]] = int(parts[1])
    return labels or None


def _expectation(expected: str | None, source: str | None) -> str:
    """'expected …, from …; ' for error messages; empty without a hint."""
    if not expected:
        return ""
    return f"expected {expected}" + (f", from {source}" if source else "") + "; "


def list_images(
    root: Path,
    list_file: str | Path | None = None,
    expected: str | None = None,
    source: str | None = None,
) -> list[Path]:
    """The dataset's files: those named in `list_file` (first column, relative to root; bare
    file names are also found in sub-folders, as in ImageNet's class-folder layout), or every
    image under root, sorted by path. `expected` and `source` describe the files and where to
    get them in the error messages."""
    hint = _expectation(expected, source)
    fix = "set dataset.root=/path/to/them" if hint else "set dataset.root to a folder of images"
    if not root.is_dir():
        raise UserError(f"dataset folder {root} does not exist; {hint}{fix}")
    if list_file is not None:
        list_path = resolve_list_file(list_file)
        names = [ln.split()[0] for ln in list_path.read_text().splitlines() if ln.strip()]
        paths = _locate(root, names)
        missing = [p for p in paths if not p.is_file()]
        if missing:
            raise UserError(
                f"{len(missing)} of {len(paths)} files listed in {list_path.name} are missing "
                f"under {root} (first: {missing[0].name}); "
                + (f"{hint}{fix}" if hint else "put them there or fix dataset.root")
            )
    else:
        paths = sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS)
    if not paths:
        raise UserError(
            f"dataset folder {root} holds no images ({', '.join(IMAGE_EXTENSIONS)}); {hint}{fix}"
        )
    return paths


def split_range(n: int, split: str, val_images: int | None) -> tuple[int, int]:
    """[start, stop) of `split` in a set of n images: `val` is the first `val_images` (default
    half, rounded down), `test` the rest; the two never share an image."""
    if split not in SPLITS:
        raise UserError(f"dataset.split={split!r} is unknown; use val, test or null (all images)")
    val = n // 2 if val_images is None else int(val_images)
    if not 1 <= val < n:
        raise UserError(
            f"dataset.val_images={val_images} leaves no images for val or test in a set of {n}; "
            f"set it between 1 and {n - 1}"
        )
    return (0, val) if split == "val" else (val, n)


def _locate(root: Path, names: list[str]) -> list[Path]:
    """root/name for each listed name; a bare file name that is not there is looked up by name
    in root's sub-folders (a missing one stays root/name)."""
    lost = {n for n in names if "/" not in n and not (root / n).is_file()}
    found: dict[str, Path] = {}
    if lost:
        for path in sorted(root.rglob("*")):
            if path.name in lost:
                found.setdefault(path.name, path)
    return [found.get(n, root / n) for n in names]


class ImageFolder(Dataset):
    """Items are {"image": (3, H, W) in [-1, 1], "index": int, "name": str}. `index` is the
    position in the full sorted/listed dataset, so seeds do not depend on `limit` or sharding.

    `num_images` fixes a benchmark's size: the first `num_images` files are the dataset and fewer
    is an error; `split` (`val` | `test`) then keeps one of two disjoint index ranges of it, the
    first `val_images` (default half) or the rest, so that a schedule tuned on `val` is scored on
    images it never saw; `limit` then keeps the first N (a quick look at a benchmark). Indices
    stay those of the whole set.
    `expected` and `source` say which files belong under root and where to get them; the errors
    about a missing folder or missing files quote them.
    """

    def __init__(
        self,
        root: str | Path,
        image_size: int | None = 256,
        resize: str = "center_crop",
        interpolation: str = "bilinear",
        list_file: str | Path | None = None,
        limit: int | None = None,
        num_images: int | None = None,
        expected: str | None = None,
        source: str | None = None,
        alpha: str = "white",
        split: str | None = None,
        val_images: int | None = None,
        labels_file: str | Path | None = None,
    ) -> None:
        if alpha not in ALPHA_POLICIES:
            raise UserError(f"dataset.alpha={alpha!r} is unknown; use one of {ALPHA_POLICIES}")
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
        self.paths = list_images(self.root, list_file, expected, source)
        self.labels = self._labels(list_file, labels_file)
        if num_images is not None:
            if len(self.paths) < num_images:
                hint = _expectation(expected, source)
                raise UserError(
                    f"dataset folder {self.root} holds {len(self.paths)} images, the benchmark "
                    f"has {num_images}; {hint}set dataset.root=/path/to/them (or "
                    "dataset.num_images=null to use the images that are there)"
                )
            self.paths = self.paths[:num_images]
            self.labels = self.labels[:num_images]
        self.split, self.val_images, self.split_range = split, val_images, None
        self.offset = 0  # index of the first item in the whole set
        if split is not None:
            self.split_range = split_range(len(self.paths), split, val_images)
            self.offset = self.split_range[0]
            self.paths = self.paths[slice(*self.split_range)]
            self.labels = self.labels[slice(*self.split_range)]
        if limit is not None:
            if limit < 1:
                raise UserError(f"dataset.limit must be >= 1, got {limit}")
            self.paths = self.paths[:limit]
            self.labels = self.labels[:limit]
        self.image_size, self.resize, self.interpolation = image_size, resize, interpolation
        self.alpha = alpha
        self.file_sizes: list[tuple[int, int]] | None = None  # (H, W) of each file, by verify()
        self.list_file = None if list_file is None else str(list_file)
        self.labels_file = None if labels_file is None else str(labels_file)
        self.num_images, self.limit = num_images, limit
        self.names = _unique_names(self.paths, self.root)

    def __len__(self) -> int:
        return len(self.paths)

    def _labels(self, list_file, labels_file) -> list[int]:
        """Each path's class (-1 when unknown), from `labels_file` or the list's second column."""
        if labels_file is not None:
            path = Path(labels_file).expanduser()
            if not path.is_file():
                raise UserError(f"dataset.labels_file={labels_file} does not exist; fix the path")
            table = read_labels(path)
            if table is None:
                raise UserError(
                    f"dataset.labels_file={labels_file} is not a list of '<file> <class>' lines "
                    "with an integer class on every line; fix the file"
                )
        elif list_file is not None:
            table = read_labels(resolve_list_file(list_file)) or {}
        else:
            table = {}
        labels = []
        for p in self.paths:
            relative = p.relative_to(self.root).as_posix() if p.is_relative_to(self.root) else ""
            labels.append(table.get(relative, table.get(p.name, -1)))
        return labels

    @property
    def has_labels(self) -> bool:
        """True when every image has a class label."""
        return bool(self.labels) and min(self.labels) >= 0

    def load(self, path: Path) -> Image.Image:
        image = open_rgb(path, self.alpha)
        size, method = self.image_size, INTERPOLATIONS[self.interpolation]
        if self.resize == "center_crop":
            # torchvision's center_crop(img, min(img.size)) as DDNM's CenterCropLongEdge
            # (datasets/imagenet_subset.py): offsets rounded half to even, not floored
            side = min(image.size)
            left, top = round((image.width - side) / 2), round((image.height - side) / 2)
            image = image.crop((left, top, left + side, top + side))
        if self.resize != "none" and image.size != (size, size):
            image = image.resize((size, size), method)
        return image

    def __getitem__(self, i: int) -> dict:
        image = pil_to_tensor(self.load(self.paths[i]))
        return {
            "image": image,
            "index": self.offset + i,
            "name": self.names[i],
            "label": self.labels[i],
        }

    def sizes(self) -> list[tuple[int, int]]:
        """(H, W) of every item after preprocessing (the files are verified first)."""
        if self.resize != "none":
            return [(self.image_size, self.image_size)] * len(self.paths)
        if self.file_sizes is None:
            self.verify()
        return list(self.file_sizes)

    def first_size(self) -> tuple[int, int]:
        """(H, W) of the first item after preprocessing, for up-front checks."""
        return self.sizes()[0]

    def verify(self) -> None:
        """Decode every file completely (in parallel, cached by path, size and mtime), so that a
        corrupt, truncated or refused file fails before any restoration or job file."""
        if self.file_sizes is None:
            self.file_sizes = verify_images(self.paths, self.alpha)


def _unique_names(paths: list[Path], root: Path) -> list[str]:
    """Output names: the file stem, or the relative path with '__' when stems repeat."""
    stems = [p.stem for p in paths]
    if len(set(stems)) == len(stems):
        return stems
    return [str(p.relative_to(root).with_suffix("")).replace("/", "__") for p in paths]
