from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from rnsf.data.folder import ImageFolder
from rnsf.data.photos import DEMO_PHOTOS, TRAIN_PHOTOS
from rnsf.utils.errors import UserError

from conftest import ROOT


def _write(path, w, h, value=128):
    path.parent.mkdir(parents=True, exist_ok=True)
    array = np.full((h, w, 3), value, np.uint8)
    array[:, : w // 2] = 255 - value
    Image.fromarray(array).save(path)


def test_center_crop_and_resize_policies(tmp_path):
    _write(tmp_path / "a.png", 120, 80, value=30)
    crop = ImageFolder(tmp_path, image_size=32, resize="center_crop")[0]["image"]
    plain = ImageFolder(tmp_path, image_size=32, resize="resize")[0]["image"]
    asis = ImageFolder(tmp_path, image_size=None, resize="none")[0]["image"]
    assert crop.shape == plain.shape == (3, 32, 32)
    assert asis.shape == (3, 80, 120)
    assert crop.min() >= -1 and crop.max() <= 1
    # the central 80x80 square keeps the split in the middle; the plain resize too
    assert crop[0, 16, 4] > 0 and crop[0, 16, 28] < 0


def test_list_file_limit_and_indices(tmp_path):
    for name in ("c", "a", "b"):
        _write(tmp_path / "imgs" / f"{name}.png", 8, 8)
    assert ImageFolder(tmp_path / "imgs", 8).names == ["a", "b", "c"]
    listing = tmp_path / "list.txt"
    listing.write_text("c.png 0\nb.png 1\n")
    ds = ImageFolder(tmp_path / "imgs", 8, list_file=listing, limit=1)
    assert ds.names == ["c"] and len(ds) == 1 and ds[0]["index"] == 0
    listing.write_text("c.png\nmissing.png\n")
    with pytest.raises(UserError, match=r"missing\.png"):
        ImageFolder(tmp_path / "imgs", 8, list_file=listing)


def test_repeated_stems_get_unique_names(tmp_path):
    _write(tmp_path / "x" / "im.png", 8, 8)
    _write(tmp_path / "y" / "im.png", 8, 8)
    assert ImageFolder(tmp_path, 8).names == ["x__im", "y__im"]


def test_bad_policy_is_a_user_error(tmp_path):
    _write(tmp_path / "a.png", 8, 8)
    with pytest.raises(UserError, match=r"dataset\.resize='crop' is unknown"):
        ImageFolder(tmp_path, 8, resize="crop")


def test_demo_set_is_held_out_from_training():
    assert not set(DEMO_PHOTOS) & set(TRAIN_PHOTOS)
    names = ImageFolder(ROOT / "src/rnsf/data/demo", None, resize="none").names
    assert len(names) == 16
    assert {n.rsplit("_", 2)[0] for n in names} == set(DEMO_PHOTOS)


def test_held_out_photos_are_written_whole_and_were_never_trained_on(tmp_path):
    from rnsf.data.photos import HELD_OUT_PHOTOS, load_photo

    assert set(DEMO_PHOTOS) <= set(HELD_OUT_PHOTOS)
    assert not set(HELD_OUT_PHOTOS) & set(TRAIN_PHOTOS)
    out = tmp_path / "photos"
    subprocess.run([sys.executable, "-m", "rnsf.data.photos", str(out)], check=True)
    folder = ImageFolder(out, 128, resize="center_crop")
    assert folder.names == sorted(HELD_OUT_PHOTOS)
    motorcycle = np.asarray(Image.open(out / "motorcycle.png"))
    assert motorcycle.shape == (500, 741, 3)
    assert np.array_equal(motorcycle, load_photo("motorcycle"))


def test_demo_images_are_reproducible_from_the_photos():
    from rnsf.data.photos import make_demo_images

    crops = make_demo_images()
    shipped = np.asarray(Image.open(ROOT / "src/rnsf/data/demo/coffee_1_2.png"))
    assert np.array_equal(crops["coffee_1_2"], shipped)
