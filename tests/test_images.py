"""Decoding of every kind of image file, and the up-front verification (full decode, cache)."""

from __future__ import annotations

import os
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from rnsf.data import verify
from rnsf.data.folder import ImageFolder
from rnsf.data.images import open_rgb
from rnsf.utils.errors import UserError


@pytest.fixture(autouse=True)
def cache_dir(tmp_path, monkeypatch):
    """Every test gets its own verification cache."""
    folder = tmp_path / "cache"
    monkeypatch.setenv("RNSF_CACHE_DIR", str(folder))
    return folder


def write_png16_rgb(path, array: np.ndarray) -> None:
    """A 16-bit RGB PNG (PIL cannot write one): IHDR bit depth 16, colour type 2."""
    height, width, _ = array.shape
    raw = b"".join(b"\x00" + array[y].astype(">u2").tobytes() for y in range(height))

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(kind + data) & 0xFFFFFFFF
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)

    header = struct.pack(">IIBBBBB", width, height, 16, 2, 0, 0, 0)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(raw))
        + chunk(b"IEND", b"")
    )


def test_16_bit_grey_is_scaled_not_clipped(tmp_path):
    values = np.linspace(0, 65535, 32 * 32).round().astype(np.uint16).reshape(32, 32)
    Image.fromarray(values).save(tmp_path / "g16.png")
    assert Image.open(tmp_path / "g16.png").mode == "I;16"
    rgb = np.asarray(open_rgb(tmp_path / "g16.png"))
    expected = np.round(values * (255 / 65535)).astype(np.uint8)
    for c in range(3):
        np.testing.assert_array_equal(rgb[..., c], expected)
    assert 120 < rgb.mean() < 135  # a ramp: mid-grey on average, not 99.6 % white


def test_16_bit_rgb_keeps_the_high_byte(tmp_path):
    rng = np.random.default_rng(0)
    values = rng.integers(0, 65536, (16, 24, 3), dtype=np.uint16)
    write_png16_rgb(tmp_path / "rgb16.png", values)
    rgb = np.asarray(open_rgb(tmp_path / "rgb16.png"))
    np.testing.assert_array_equal(rgb, (values >> 8).astype(np.uint8))


@pytest.mark.parametrize(("policy", "background"), [("white", 255), ("black", 0)])
def test_alpha_is_composited_on_the_stated_background(tmp_path, policy, background):
    rgba = np.zeros((8, 8, 4), np.uint8)
    rgba[..., 0] = 200  # red everywhere, also under the transparent pixels
    rgba[:4, :, 3] = 255  # top half opaque
    rgba[4:, :, 3] = 0  # bottom half fully transparent
    rgba[4:, :4, 3] = 128  # half-transparent corner
    Image.fromarray(rgba, "RGBA").save(tmp_path / "a.png")
    rgb = np.asarray(open_rgb(tmp_path / "a.png", policy)).astype(int)
    assert (rgb[:4] == [200, 0, 0]).all()
    assert (rgb[4:, 4:] == background).all()
    half = rgb[4:, :4]
    expected = np.round(np.array([200, 0, 0]) * 128 / 255 + background * 127 / 255)
    assert np.abs(half - expected).max() <= 1


def test_alpha_refuse_names_the_file_and_opaque_alpha_passes(tmp_path):
    rgba = np.full((8, 8, 4), 255, np.uint8)
    Image.fromarray(rgba, "RGBA").save(tmp_path / "opaque.png")
    assert np.asarray(open_rgb(tmp_path / "opaque.png", "refuse")).shape == (8, 8, 3)
    rgba[0, 0, 3] = 0
    Image.fromarray(rgba, "RGBA").save(tmp_path / "hole.png")
    with pytest.raises(UserError, match=r"hole\.png has transparent pixels.*dataset\.alpha"):
        open_rgb(tmp_path / "hole.png", "refuse")


def test_palette_transparency_and_grey_alpha(tmp_path):
    palette = Image.new("P", (4, 4), 0)
    palette.putpalette([0, 0, 255, 255, 0, 0] + [0] * 762)
    palette.putpixel((0, 0), 1)
    palette.save(tmp_path / "p.png", transparency=0)  # index 0 (blue) is transparent
    rgb = np.asarray(open_rgb(tmp_path / "p.png", "black"))
    assert tuple(rgb[0, 0]) == (255, 0, 0) and (rgb[1:] == 0).all()
    plain = Image.new("P", (4, 4), 1)
    plain.putpalette([0, 0, 255, 255, 0, 0] + [0] * 762)
    plain.save(tmp_path / "plain.png")
    assert (np.asarray(open_rgb(tmp_path / "plain.png")) == [255, 0, 0]).all()
    la = Image.fromarray(np.dstack([np.full((4, 4), 50, np.uint8), np.zeros((4, 4), np.uint8)]))
    la.save(tmp_path / "la.png")
    assert Image.open(tmp_path / "la.png").mode == "LA"
    assert (np.asarray(open_rgb(tmp_path / "la.png")) == 255).all()


def test_cmyk_jpeg_becomes_rgb(tmp_path):
    Image.new("CMYK", (16, 16), (0, 255, 255, 0)).save(tmp_path / "c.jpg", quality=95)
    assert Image.open(tmp_path / "c.jpg").mode == "CMYK"
    rgb = np.asarray(open_rgb(tmp_path / "c.jpg")).astype(int)
    assert np.abs(rgb - [255, 0, 0]).max() <= 3


def test_exif_orientation_is_applied(tmp_path):
    stored = np.zeros((20, 40, 3), np.uint8)  # 40 wide, 20 high: left red, right blue
    stored[:, :20, 0] = 255
    stored[:, 20:, 2] = 255
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90° clockwise to display", as phones write
    Image.fromarray(stored).save(tmp_path / "phone.jpg", exif=exif, quality=95)
    rgb = np.asarray(open_rgb(tmp_path / "phone.jpg")).astype(int)
    assert rgb.shape == (40, 20, 3)  # upright: 20 wide, 40 high
    assert rgb[:18, :, 0].min() > 200 and rgb[:18, :, 2].max() < 60  # the left half is on top
    assert rgb[22:, :, 2].min() > 200 and rgb[22:, :, 0].max() < 60
    assert verify.inspect(tmp_path / "phone.jpg")["height"] == 40


def test_float_images_are_refused(tmp_path):
    Image.fromarray(np.zeros((4, 4), np.float32)).save(tmp_path / "f.tif")
    with pytest.raises(UserError, match=r"f\.tif holds 32-bit floats"):
        open_rgb(tmp_path / "f.tif")


def write_jpegs(folder, n: int = 3, size: int = 64) -> list:
    folder.mkdir(exist_ok=True)
    rng = np.random.default_rng(1)
    paths = []
    for i in range(n):
        path = folder / f"im{i}.jpg"
        Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(path)
        paths.append(path)
    return paths


def truncate(path, keep: float = 0.6) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


def test_verification_decodes_every_file_completely(tmp_path):
    paths = write_jpegs(tmp_path / "imgs")
    truncate(paths[1])
    with Image.open(paths[1]) as image:
        image.verify()  # a header check passes: the old up-front check missed this file
    dataset = ImageFolder(tmp_path / "imgs", image_size=None, resize="none")
    with pytest.raises(UserError) as err:
        dataset.verify()
    message = str(err.value)
    assert "\n" not in message and "im1.jpg" in message and "truncated" in message
    truncate(paths[2])
    with pytest.raises(UserError, match=r"im1\.jpg.*\(2 of 3 files cannot be read\)"):
        verify.verify_images(paths)


def test_verification_is_cached_by_path_size_and_mtime(tmp_path, monkeypatch, cache_dir):
    paths = write_jpegs(tmp_path / "imgs", n=4)
    assert verify.verify_images(paths, workers=2) == [(64, 64)] * 4
    assert verify.cache_file() == cache_dir / "verified_images.json"
    assert verify.cache_file().is_file()
    calls = []
    real = verify.inspect
    monkeypatch.setattr(verify, "inspect", lambda p: calls.append(p.name) or real(p))
    assert verify.verify_images(paths) == [(64, 64)] * 4
    assert calls == []  # a rerun decodes nothing
    stat = paths[2].stat()
    os.utime(paths[2], ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    verify.verify_images(paths)
    assert calls == ["im2.jpg"]  # a touched file is checked again
    truncate(paths[3])  # same mtime is not enough: the size changed
    os.utime(paths[3], ns=(stat.st_atime_ns, paths[3].stat().st_mtime_ns))
    with pytest.raises(UserError, match=r"im3\.jpg"):
        verify.verify_images(paths)


def test_transparency_is_cached_and_refused_on_rerun(tmp_path):
    rgba = np.zeros((8, 8, 4), np.uint8)
    Image.fromarray(rgba, "RGBA").save(tmp_path / "t.png")
    assert verify.verify_images([tmp_path / "t.png"], "white") == [(8, 8)]
    with pytest.raises(UserError, match="transparent pixels"):
        verify.verify_images([tmp_path / "t.png"], "refuse")


def test_unwritable_cache_is_ignored(tmp_path, monkeypatch):
    (tmp_path / "file").write_text("")
    monkeypatch.setenv("RNSF_CACHE_DIR", str(tmp_path / "file" / "cache"))
    paths = write_jpegs(tmp_path / "imgs", n=1)
    assert verify.verify_images(paths) == [(64, 64)]
