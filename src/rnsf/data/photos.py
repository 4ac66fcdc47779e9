"""Real photographs that ship inside pip packages, and the fixed train / demo split.

The built-in prior trains on `TRAIN_PHOTOS`; `DEMO_PHOTOS` are held out and cut into the demo set
(`make_demo_images`). Every photo loads offline: scikit-image's bundled data, scikit-learn's
sample images and matplotlib's sample data.

`python -m rnsf.data.photos DIR` writes the whole photos the prior never saw (`HELD_OUT_PHOTOS`)
to DIR as PNGs: a small folder dataset of real photos (`dataset=folder dataset.root=DIR`).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

#: photos held out from training; the demo images are cut from these only
DEMO_PHOTOS: tuple[str, ...] = ("astronaut", "coffee", "flower")

#: photos the built-in prior is trained on (fixed; never overlaps DEMO_PHOTOS)
TRAIN_PHOTOS: tuple[str, ...] = (
    "camera",
    "chelsea",
    "rocket",
    "hubble_deep_field",
    "immunohistochemistry",
    "retina",
    "coins",
    "moon",
    "clock",
    "page",
    "text",
    "brick",
    "grass",
    "gravel",
    "china",
    "grace_hopper",
    "cat",
    "horse",
)

#: every photo the prior never saw: the demo's sources and scikit-image's stereo motorcycle
#: (left view)
HELD_OUT_PHOTOS: tuple[str, ...] = (*DEMO_PHOTOS, "motorcycle")

#: short side of a demo photo after resizing; demo crops are DEMO_CROP pixels square
DEMO_SHORT_SIDE = 128
DEMO_CROP = 64


def _skimage(name: str) -> Callable[[], np.ndarray]:
    def load() -> np.ndarray:
        from skimage import data

        return getattr(data, name)()

    return load


def _sklearn(filename: str) -> Callable[[], np.ndarray]:
    def load() -> np.ndarray:
        from sklearn.datasets import load_sample_image

        return load_sample_image(filename)

    return load


def _matplotlib(filename: str) -> Callable[[], np.ndarray]:
    def load() -> np.ndarray:
        import matplotlib.cbook
        from PIL import Image

        with matplotlib.cbook.get_sample_data(filename) as f:
            return np.asarray(Image.open(f).convert("RGB"))

    return load


def _motorcycle() -> np.ndarray:
    from skimage import data

    return data.stereo_motorcycle()[0]


_LOADERS: dict[str, Callable[[], np.ndarray]] = {
    "china": _sklearn("china.jpg"),
    "flower": _sklearn("flower.jpg"),
    "grace_hopper": _matplotlib("grace_hopper.jpg"),
    "motorcycle": _motorcycle,
}


def load_photo(name: str) -> np.ndarray:
    """One package photo as an RGB uint8 array (H, W, 3); grey photos are replicated."""
    image = _LOADERS.get(name, _skimage(name))()
    image = np.asarray(image)
    if image.dtype != np.uint8:
        image = (255 * (image.astype(np.float64) / max(float(image.max()), 1e-12))).astype(np.uint8)
    if image.ndim == 2:
        image = np.repeat(image[..., None], 3, axis=-1)
    return np.ascontiguousarray(image[..., :3])


def make_demo_images() -> dict[str, np.ndarray]:
    """The demo set: DEMO_CROP² crops on a grid over each held-out photo, resized to
    DEMO_SHORT_SIDE on its short side (PIL bicubic). Names are `<photo>_<row>_<col>`."""
    from PIL import Image

    crops: dict[str, np.ndarray] = {}
    for name in DEMO_PHOTOS:
        image = Image.fromarray(load_photo(name))
        scale = DEMO_SHORT_SIDE / min(image.size)
        size = (round(image.width * scale), round(image.height * scale))
        array = np.asarray(image.resize(size, Image.Resampling.BICUBIC))
        rows, cols = array.shape[0] // DEMO_CROP, array.shape[1] // DEMO_CROP
        top = (array.shape[0] - rows * DEMO_CROP) // 2
        left = (array.shape[1] - cols * DEMO_CROP) // 2
        for r in range(rows):
            for c in range(cols):
                y, x = top + r * DEMO_CROP, left + c * DEMO_CROP
                crops[f"{name}_{r}_{c}"] = array[y : y + DEMO_CROP, x : x + DEMO_CROP].copy()
    return crops


def write_held_out_photos(out: Path) -> list[Path]:
    """`HELD_OUT_PHOTOS`, whole and as loaded, as `<name>.png` in `out`."""
    from PIL import Image

    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for name in HELD_OUT_PHOTOS:
        path = out / f"{name}.png"
        Image.fromarray(load_photo(name)).save(path)
        paths.append(path)
    return paths


if __name__ == "__main__":
    import sys

    if len(sys.argv) != 2:
        sys.exit("usage: python -m rnsf.data.photos DIR   (writes the held-out photos to DIR)")
    for written in write_held_out_photos(Path(sys.argv[1])):
        print(written)
