"""The benchmark dataset presets: where the files are expected, how they are selected and
preprocessed, and the one-line errors when they are not there."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from PIL import Image

from rnsf.data.folder import ImageFolder, package_lists, resolve_list_file
from rnsf.data.images import pil_to_tensor
from rnsf.utils.errors import UserError

from conftest import ROOT

CONF = ROOT / "conf"
PRESETS = ("celebahq_1k", "imagenet_1k", "ffhq_1k")
#: sha256 of XingangPan/deep-generative-prior scripts/imagenet_val_1k.txt (DDRM's list)
IMAGENET_LIST_SHA256 = "ea8bdfc30918c69a44a408918e739ab10d132a74054677b59096208baf4732cb"


def dataset_config(name: str, *overrides: str):
    with initialize_config_dir(str(CONF), version_base="1.3"):
        return compose("config", overrides=[f"dataset={name}", *overrides]).dataset


def load(name: str, *overrides: str):
    """The preset's datamodule; a UserError raised inside instantiate is re-raised as is."""
    try:
        return instantiate(dataset_config(name, *overrides))
    except Exception as err:
        cause = err
        while cause.__cause__ is not None:
            cause = cause.__cause__
        raise cause from None


def write_image(path, width: int, height: int, seed: int = 0, fmt: str | None = None) -> np.ndarray:
    path.parent.mkdir(parents=True, exist_ok=True)
    array = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    Image.fromarray(array).save(path, format=fmt)
    return array


@pytest.mark.parametrize("name", PRESETS)
def test_preset_defaults_are_explicit(name):
    cfg = dataset_config(name)
    assert cfg.name == name
    assert cfg.image_size == 256 and cfg.interpolation == "bilinear"
    assert cfg.num_images == 1000 and cfg.limit is None
    assert str(cfg.root).startswith("./data/")  # ${paths.data_dir}/...
    assert cfg.expected and cfg.source
    assert cfg.resize == ("center_crop" if name == "imagenet_1k" else "resize")


@pytest.mark.parametrize(
    ("name", "files", "source"),
    [
        ("celebahq_1k", "00000.png ... 00999.png", "celeba_hq.zip"),
        ("imagenet_1k", "ILSVRC2012_val_00000293.JPEG", "image-net.org"),
        ("ffhq_1k", "00000.png ... 00999.png", "NVlabs/ffhq-dataset"),
    ],
)
def test_missing_root_names_the_files_and_their_source(tmp_path, name, files, source):
    root = tmp_path / "nowhere"
    with pytest.raises(UserError) as err:
        load(name, f"dataset.root={root}")
    message = str(err.value)
    assert "\n" not in message
    assert f"dataset folder {root} does not exist" in message
    assert files in message and source in message
    assert message.endswith("set dataset.root=/path/to/them")


def test_package_list_is_ddrms_imagenet_1k():
    path = resolve_list_file("imagenet_val_1k")
    assert "imagenet_val_1k" in package_lists()
    assert resolve_list_file("imagenet_val_1k.txt") == path
    assert hashlib.sha256(path.read_bytes()).hexdigest() == IMAGENET_LIST_SHA256
    lines = path.read_text().splitlines()
    assert len(lines) == 1000
    assert lines[0] == "ILSVRC2012_val_00000293.JPEG 0"
    assert sorted(int(ln.split()[1]) for ln in lines) == list(range(1000))  # one per class
    with pytest.raises(UserError, match=r"imagenet_val_1k.*fix dataset\.list_file"):
        resolve_list_file("imagenet_val_2k")


def _fake_imagenet(root, names, class_folders: bool = False) -> dict[str, np.ndarray]:
    """JPEGs named like ILSVRC2012 validation files; sizes with an odd crop offset."""
    arrays = {}
    for i, name in enumerate(names):
        folder = root / f"n0000000{i}" if class_folders else root
        path = folder / name
        arrays[name] = write_image(path, 300 + 3 * i, 259, seed=i, fmt="JPEG")
    return arrays


def _torchvision_reference(path) -> torch.Tensor:
    """DDNM's ImageNet transform: CenterCropLongEdge, Resize(256), ToTensor, then 2x - 1."""
    from torchvision import transforms

    image = Image.open(path).convert("RGB")
    image = transforms.functional.center_crop(image, min(image.size))
    image = transforms.Resize(256)(image)
    return transforms.ToTensor()(image) * 2 - 1


@pytest.mark.parametrize("class_folders", [False, True], ids=["flat", "class-folders"])
def test_imagenet_preset_loads_the_listed_files_center_cropped(tmp_path, class_folders):
    names = [f"ILSVRC2012_val_{n:08d}.JPEG" for n in (293, 236, 2338)]
    root = tmp_path / "val"
    _fake_imagenet(root, [*names, "ILSVRC2012_val_00000001.JPEG"], class_folders)
    listing = tmp_path / "short.txt"
    listing.write_text("".join(f"{n} {i}\n" for i, n in enumerate(names)))
    data = load(
        "imagenet_1k",
        f"dataset.root={root}",
        f"dataset.list_file={listing}",
        "dataset.num_images=3",
    )
    ds = data.dataset
    assert ds.names == [n.removesuffix(".JPEG") for n in names]  # list order, unlisted left out
    for i in range(3):
        item = ds[i]
        assert item["image"].shape == (3, 256, 256) and item["index"] == i
        # the crop offset (300 + 3i - 259) / 2 rounds half to even, as torchvision does
        torch.testing.assert_close(item["image"], _torchvision_reference(ds.paths[i]))
    info = data.describe()
    assert info["resize"] == "center_crop" and info["interpolation"] == "bilinear"
    assert info["list_file"] == str(listing)
    assert info["num_images"] == 3 and info["limit"] is None


def test_imagenet_missing_files_name_the_first_and_the_source(tmp_path):
    root = tmp_path / "val"
    _fake_imagenet(root, ["ILSVRC2012_val_00000293.JPEG"])
    with pytest.raises(UserError) as err:
        load("imagenet_1k", f"dataset.root={root}")
    message = str(err.value)
    assert "\n" not in message
    assert "999 of 1000 files listed in imagenet_val_1k.txt are missing" in message
    assert "first: ILSVRC2012_val_00000236.JPEG" in message
    assert "ILSVRC2012_img_val.tar" in message and "dataset.root=" in message


def test_celebahq_preset_resizes_whole_faces_without_cropping(tmp_path):
    root = tmp_path / "celeba_hq" / "face"  # DDNM's layout: one sub-folder level
    arrays = [write_image(root / f"{i:05d}.png", 96, 80, seed=i) for i in (2, 0, 1)]
    data = load("celebahq_1k", f"dataset.root={tmp_path / 'celeba_hq'}", "dataset.num_images=3")
    assert data.dataset.names == ["00000", "00001", "00002"]
    expected = Image.fromarray(arrays[1]).resize((256, 256), Image.Resampling.BILINEAR)
    torch.testing.assert_close(data.dataset[0]["image"], pil_to_tensor(expected))
    info = data.describe()
    assert info["resize"] == "resize" and info["interpolation"] == "bilinear"
    assert info["image_size"] == 256
    assert info["list_file"] is None


def test_too_few_images_for_a_benchmark_is_one_line(tmp_path):
    for i in range(3):
        write_image(tmp_path / f"{i:05d}.png", 8, 8, seed=i)
    with pytest.raises(UserError) as err:
        load("celebahq_1k", f"dataset.root={tmp_path}")
    message = str(err.value)
    assert "\n" not in message
    assert "holds 3 images, the benchmark has 1000" in message
    assert "celeba_hq.zip" in message and "dataset.num_images=null" in message
    assert len(load("celebahq_1k", f"dataset.root={tmp_path}", "dataset.num_images=null").dataset)


def test_ffhq_preset_takes_the_first_n_in_path_order(tmp_path):
    # the official layout: images1024x1024/<thousands>/<index>.png
    for index in (1000, 2, 0, 999, 1):
        write_image(tmp_path / f"{index // 1000 * 1000:05d}" / f"{index:05d}.png", 16, 16, index)
    data = load("ffhq_1k", f"dataset.root={tmp_path}", "dataset.num_images=4")
    assert data.dataset.names == ["00000", "00001", "00002", "00999"]
    quick = load("ffhq_1k", f"dataset.root={tmp_path}", "dataset.num_images=4", "dataset.limit=2")
    assert quick.dataset.names == ["00000", "00001"]
    assert [quick.dataset[i]["index"] for i in range(2)] == [0, 1]
    assert quick.describe()["num_images"] == 4 and quick.describe()["limit"] == 2
    assert data.dataset[0]["image"].shape == (3, 256, 256)


def test_image_folder_without_hints_keeps_the_generic_messages(tmp_path):
    with pytest.raises(UserError, match=r"does not exist; set dataset\.root to a folder of images"):
        ImageFolder(tmp_path / "nowhere")
    with pytest.raises(UserError, match=r"holds 0 images|holds no images"):
        ImageFolder(tmp_path, num_images=2)
