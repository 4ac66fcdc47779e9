"""The priors of DDRM and DDNM beyond the paper's four: ddim's LSUN bedroom/cat/church and
CIFAR-10 DDPMs and guided-diffusion's ImageNet 512x512 class-conditional model.

Random weights only: the exact architecture of each preset (key and parameter counts, key
shapes, a strict round trip), a reduced-size forward with the preset's every other option, and
the registry entries with ddim's MD5 checks.
"""

from __future__ import annotations

import hashlib
import os

import pytest
import torch
from hydra import compose, initialize_config_dir

from rnsf import download as dl
from rnsf.denoisers import ADMUNet, DDPMUNet, PretrainedDenoiser, load_adm, load_ddpm
from rnsf.denoisers.checkpoints import RELEASES, Release, load_into
from rnsf.utils.cli import CONF_DIR
from rnsf.utils.errors import UserError

# preset: (network, native size, keys, parameters, {key: shape}): the architecture as rnsf builds
# it (pinned against changes of the code; a real file is checked only when loaded, strict=True).
# From the sources: DDPM (Ho et al. 2020, appendix B) gives 35.7 M parameters for CIFAR10 and
# 114 M for LSUN / CelebA-HQ (test_published_parameter_counts).
PRIORS = {
    "ddpm_lsun_bedroom256": (DDPMUNet, 256, 450, 113_673_219, {"conv_out.weight": (3, 128, 3, 3)}),
    "ddpm_lsun_cat256": (
        DDPMUNet,
        256,
        450,
        113_673_219,
        {"down.4.attn.1.q.weight": (512,) * 2 + (1, 1)},
    ),
    "ddpm_lsun_church256": (DDPMUNet, 256, 450, 113_673_219, {"temb.dense.1.weight": (512, 512)}),
    # 32x32: attention on the 16x16 level (down.1, up.1), no downsampling after level 3
    "ddpm_cifar10_32": (
        DDPMUNet,
        32,
        328,
        35_746_307,
        {
            "down.1.attn.1.proj_out.weight": (256, 256, 1, 1),
            "down.2.downsample.conv.weight": (256, 256, 3, 3),
            "up.1.attn.2.v.weight": (256, 256, 1, 1),
            "up.0.block.2.nin_shortcut.weight": (128, 256, 1, 1),
            "conv_out.weight": (3, 128, 3, 3),
        },
    ),
    # 512x512: a first level at half width (128 channels), attention at 32, 16, 8
    "adm_imagenet512_cond": (
        ADMUNet,
        512,
        645,
        558_997_638,
        {
            "input_blocks.0.0.weight": (128, 3, 3, 3),
            "input_blocks.4.0.skip_connection.weight": (256, 128, 1, 1),
            "label_emb.weight": (1000, 1024),
            "out.2.weight": (6, 128, 3, 3),
        },
    ),
}

# ddim's functions/ckpt_util.py: preset -> (CKPT_MAP path, URL_MAP id, MD5_MAP)
DDIM_FILES = {
    "ddpm_lsun_bedroom256": (
        "ema_diffusion_lsun_bedroom_model/model-2388000.ckpt",
        "b95206528f384185889b",
        "1921fa46b66a3665e450e42f36c2720f",
    ),
    "ddpm_lsun_cat256": (
        "ema_diffusion_lsun_cat_model/model-1761000.ckpt",
        "0701aac3aa69457bbe34",
        "646f23f4821f2459b8bafc57fd824558",
    ),
    "ddpm_lsun_church256": (
        "ema_diffusion_lsun_church_model/model-4432000.ckpt",
        "44ccb50ef3c6436db52e",
        "fdc68a23938c2397caba4a260bc2445f",
    ),
    "ddpm_cifar10_32": (
        "ema_diffusion_cifar10_model/model-790000.ckpt",
        "2e4f01e2d9ee49bab1d5",
        "1fa350b952534ae442b1d5235cce5cd3",
    ),
}


def model_config(name: str, *overrides: str):
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        return compose("config", overrides=[f"model={name}", *overrides]).model


@pytest.mark.parametrize("name", list(PRIORS))
def test_full_size_keys_parameters_and_strict_round_trip(name):
    network, size, n_keys, n_params, shapes = PRIORS[name]
    model = model_config(name)
    torch.manual_seed(0)
    net = network(**model.arch)
    state = net.state_dict()
    assert len(state) == n_keys
    assert sum(p.numel() for p in net.parameters()) == n_params
    for key, shape in shapes.items():
        assert tuple(state[key].shape) == shape, key
    with torch.device("meta"):
        fresh = network(**model.arch)
    load_into(fresh, state, "memory", name)  # strict=True
    assert all(fresh.state_dict()[k].data_ptr() == v.data_ptr() for k, v in state.items())
    wrapped = PretrainedDenoiser(
        fresh, name=name, native_size=size, class_label=model.get("class_label")
    )
    assert wrapped.size_multiple == 2 ** (
        len(model.arch.get("ch_mult") or model.arch.channel_mult) - 1
    )
    del net, fresh, wrapped, state


def test_the_lsun_presets_share_celebahq_architecture():
    celeba = model_config("ddpm_celebahq256").arch
    for name in ("ddpm_lsun_bedroom256", "ddpm_lsun_cat256", "ddpm_lsun_church256"):
        assert model_config(name).arch == celeba
    cifar = model_config("ddpm_cifar10_32").arch
    assert (cifar.resolution, list(cifar.ch_mult), cifar.dropout) == (32, [1, 2, 2, 2], 0.1)
    assert list(cifar.attn_resolutions) == [16] and cifar.num_res_blocks == 2
    adm512 = model_config("adm_imagenet512_cond")
    assert adm512.arch.image_size == 512 and adm512.arch.num_classes == 1000
    assert list(adm512.arch.channel_mult) == [0.5, 1, 1, 2, 2, 4, 4]
    assert list(adm512.arch.attention_resolutions) == [32, 16, 8]
    assert adm512.class_label is None  # each image's own class, as adm_imagenet256_cond
    assert adm512.classifier.release == "512x512_classifier.pt"
    assert adm512.classifier.release in RELEASES and adm512.classifier.arch.image_size == 512


def _reduced(name: str):
    """The preset's architecture at a quarter of the width and 32x32 or 64x64 images (attention,
    every level, up/down sampling and the class embedding kept), with live random weights."""
    network, size, *_ = PRIORS[name]
    arch = dict(model_config(name).arch)
    if network is DDPMUNet:
        arch.update(ch=32, resolution=32)  # attention at 16: the second level
        size = 32
    else:
        arch.update(model_channels=64, image_size=64, attention_resolutions=[8, 4, 2])
        size = 64
    torch.manual_seed(0)
    net = network(**arch).eval()
    for p in net.parameters():  # upstream zero-initialises some output convs; make all live
        torch.nn.init.normal_(p, std=0.05)
    return net, arch, size


@pytest.mark.parametrize("name", list(PRIORS))
def test_reduced_size_forward_through_the_preset_loader(tmp_path, name):
    net, arch, size = _reduced(name)
    path = tmp_path / model_config(name).release
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(net.state_dict(), path)
    loader = load_ddpm if isinstance(net, DDPMUNet) else load_adm
    options = {"class_label": 3} if arch.get("num_classes") else {}
    model = loader(path, arch, name=name, release=model_config(name).release, **options)
    x, t = torch.randn(2, 3, size, size), torch.tensor([10, 900])
    with torch.no_grad():
        out = model(x, t)
        extra = {"y": torch.full((2,), 3)} if options else {}
        assert torch.equal(out, net(x, t, **extra))
        assert out.shape == (2, 6 if isinstance(net, ADMUNet) else 3, size, size)
        assert torch.isfinite(out).all()
        assert not torch.allclose(out, model(x, t.flip(0)))  # the timestep matters


@pytest.mark.parametrize("name", list(DDIM_FILES))
def test_registry_entries_are_ddims_urls_paths_and_md5s(name, tmp_path):
    path, key, md5 = DDIM_FILES[name]
    model = model_config(name, f"paths.checkpoint_dir={tmp_path}")
    assert model.release == path
    assert model.checkpoint == f"{tmp_path}/{path}"  # ddim's cache layout under checkpoint_dir
    known = RELEASES[path]
    assert known.url == f"https://heibox.uni-heidelberg.de/f/{key}/?dl=1"
    assert known.md5 == md5 and known.sha256 is None
    with pytest.raises(UserError) as err:
        load_ddpm(model.checkpoint, model.arch, name=name, release=path)
    message = str(err.value)
    for part in (model.checkpoint, known.url, f"md5 {md5}", f"model={name}"):
        assert part in message
    assert "\n" not in message


def test_adm512_registry_entry_and_download_target(tmp_path):
    model = model_config("adm_imagenet512_cond", f"paths.checkpoint_dir={tmp_path}")
    known = RELEASES[model.release]
    assert known.url.endswith("/diffusion/jul-2021/512x512_diffusion.pt")
    assert dl.resolve(["model=adm_imagenet512_cond", f"paths.checkpoint_dir={tmp_path}"]) == (
        known,
        tmp_path / "512x512_diffusion.pt",
    )


@pytest.fixture
def served_md5(tmp_path):
    data = os.urandom(2**20 + 5)
    src = tmp_path / "server" / "model-1.ckpt"
    src.parent.mkdir()
    src.write_bytes(data)
    return Release(
        file="ema_x_model/model-1.ckpt",
        url=src.as_uri(),
        source="tests",
        size="1 MB",
        md5=hashlib.md5(data).hexdigest(),
    ), data


def test_download_checks_md5_and_keeps_the_relative_path(tmp_path, served_md5):
    known, data = served_md5
    dest = tmp_path / "ckpt" / known.file
    dl.download(known, dest, progress=False)
    assert dest.read_bytes() == data
    dl.download(known, dest, progress=False)  # present, MD5 verified: kept
    dest.write_bytes(data[:-1] + b"\0")
    with pytest.raises(UserError, match=r"has md5 .*--force"):
        dl.download(known, dest, progress=False)
    bad = Release(**{**known.__dict__, "md5": "0" * 32})
    other = tmp_path / "other" / known.file
    with pytest.raises(UserError, match=r"md5 .* expected 0{32}; nothing was written"):
        dl.download(bad, other, progress=False)
    assert not list(other.parent.iterdir())


def test_download_command_by_preset_puts_the_file_in_ddims_layout(
    tmp_path, served_md5, monkeypatch
):
    known, data = served_md5
    path = DDIM_FILES["ddpm_cifar10_32"][0]
    monkeypatch.setitem(dl.RELEASES, path, Release(**{**known.__dict__, "file": path}))
    dl.main(["model=ddpm_cifar10_32", f"paths.checkpoint_dir={tmp_path / 'c'}", "--quiet"])
    assert (tmp_path / "c" / path).read_bytes() == data


def test_the_512_classifier_at_random_weights(tmp_path):
    """OpenAI's 512x512_classifier.pt through the preset: 281 keys, 54,448,360 parameters (a first
    level at half width, attention at 32, 16 and 8 pixels = input blocks 13-14, 16-17, 19-20, an
    8x8 attention pool), loaded strict from a file of random weights."""
    from rnsf.denoisers.classifier import NoisyClassifier
    from rnsf.denoisers.pretrained import load_classifier

    classifier = model_config("adm_imagenet512_cond", f"paths.checkpoint_dir={tmp_path}").classifier
    assert classifier.checkpoint == f"{tmp_path}/512x512_classifier.pt"
    assert RELEASES[classifier.release].url.endswith("/diffusion/jul-2021/512x512_classifier.pt")
    torch.manual_seed(0)
    net = NoisyClassifier(**classifier.arch)
    state = net.state_dict()
    assert len(state) == 281
    assert sum(p.numel() for p in net.parameters()) == 54_448_360
    assert tuple(state["input_blocks.0.0.weight"].shape) == (64, 3, 3, 3)
    assert tuple(state["out.2.positional_embedding"].shape) == (512, 65)
    assert tuple(state["out.2.c_proj.weight"].shape) == (1000, 512, 1)
    attention = {
        int(k.split(".")[1]) for k in state if k.startswith("input_blocks.") and "qkv" in k
    }
    assert attention == {13, 14, 16, 17, 19, 20}
    torch.save(state, classifier.checkpoint)
    loaded = load_classifier(classifier.checkpoint, classifier.arch, release=classifier.release)
    assert all(torch.equal(loaded.state_dict()[k], v) for k, v in state.items())
    del net, loaded, state
    # reduced width and size, the 512 level structure kept: logits that depend on t
    small = dict(classifier.arch, model_channels=64, num_head_channels=32, image_size=128,
                 channel_mult=[0.5, 1, 1, 2, 2, 4, 4], attention_resolutions=[8, 4, 2])  # fmt: skip
    reduced = NoisyClassifier(**small).eval()
    x = torch.randn(1, 3, 128, 128)
    with torch.no_grad():
        a, b = reduced(x, torch.tensor([10])), reduced(x, torch.tensor([900]))
    assert a.shape == (1, 1000) and torch.isfinite(a).all() and not torch.allclose(a, b)


def test_published_parameter_counts():
    """The counts the sources give: DDPM's paper (appendix B) 35.7 M for CIFAR10 and 114 M for
    LSUN and CelebA-HQ; the exact size of the published `256x256_diffusion_uncond.pt`, float32
    values plus a little pickle framing."""
    assert round(PRIORS["ddpm_cifar10_32"][3] / 1e5) == 357
    for name in ("ddpm_lsun_bedroom256", "ddpm_lsun_cat256", "ddpm_lsun_church256"):
        assert round(PRIORS[name][3] / 1e6) == 114
    with torch.device("meta"):
        adm = ADMUNet(**model_config("adm_imagenet256").arch)
    params = sum(p.numel() for p in adm.parameters())
    framing = RELEASES["256x256_diffusion_uncond.pt"].num_bytes - 4 * params
    assert 0 < framing < 200_000, framing
