"""The pretrained networks: architecture (keys, parameters, embeddings, attention layout),
checkpoint reading and its errors, the precision wrapper, and the downloader.

Random weights only: these tests check plumbing and exact architecture facts, never outputs of
the real checkpoints.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import pickle
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.errors import InstantiationException
from hydra.utils import instantiate

from rnsf import download as dl
from rnsf.denoisers import ADMUNet, DDPMUNet, PretrainedDenoiser, adm, ddpm, load_adm, load_ddpm
from rnsf.denoisers.checkpoints import RELEASES, Release, load_into, read_state_dict
from rnsf.utils.cli import CONF_DIR
from rnsf.utils.errors import UserError

from conftest import ROOT, SMALL_ADM, SMALL_DDPM, run_py

# reduced widths with every feature of the full networks (attention, up/down, skips): CPU-cheap

# preset: (network, state-dict keys, parameters, {key: shape} from specs §2.4 / §3.3)
PRESETS = {
    "adm_imagenet256": (
        ADMUNet,
        566,
        552_814_086,
        {
            "input_blocks.10.1.qkv.weight": (1536, 512, 1),
            "input_blocks.1.0.emb_layers.1.weight": (512, 1024),
            "middle_block.0.emb_layers.1.weight": (2048, 1024),
            "output_blocks.2.0.skip_connection.weight": (1024, 2048, 1, 1),
            "output_blocks.2.2.in_layers.0.weight": (1024,),
            "output_blocks.11.1.in_layers.0.weight": (512,),
            "out.2.weight": (6, 256, 3, 3),
        },
    ),
    "adm_imagenet256_cond": (
        ADMUNet,
        567,
        553_838_086,
        {"label_emb.weight": (1000, 1024), "out.2.weight": (6, 256, 3, 3)},
    ),
    "adm_ffhq256": (
        ADMUNet,
        362,
        93_563_910,
        {"input_blocks.0.0.weight": (128, 3, 3, 3), "out.2.weight": (6, 128, 3, 3)},
    ),
    "ddpm_celebahq256": (
        DDPMUNet,
        450,
        113_673_219,
        {
            "temb.dense.0.weight": (512, 128),
            "down.0.downsample.conv.weight": (128, 128, 3, 3),
            "down.4.attn.0.q.weight": (512, 512, 1, 1),
            "up.4.attn.2.k.weight": (512, 512, 1, 1),
            "up.5.upsample.conv.weight": (512, 512, 3, 3),
            "conv_out.weight": (3, 128, 3, 3),
        },
    ),
}


def preset(name: str, *overrides: str):
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        return compose("config", overrides=[f"model={name}", *overrides])


# -- architecture -------------------------------------------------------------------------
@pytest.mark.parametrize("name", list(PRESETS))
def test_full_size_preset_keys_parameters_and_strict_round_trip(name):
    network, n_keys, n_params, shapes = PRESETS[name]
    cfg = preset(name)
    torch.manual_seed(0)
    net = network(**cfg.model.arch)  # random weights at full size (seconds, ~2 GB for ADM)
    state = net.state_dict()
    assert len(state) == n_keys
    assert sum(p.numel() for p in net.parameters()) == n_params
    for key, shape in shapes.items():
        assert tuple(state[key].shape) == shape, key
    assert not list(net.buffers())
    with torch.device("meta"):
        fresh = network(**cfg.model.arch)
    load_into(fresh, state, "memory", name)  # strict=True
    loaded = fresh.state_dict()
    assert all(loaded[k].data_ptr() == state[k].data_ptr() for k in state)
    wrapped = PretrainedDenoiser(
        fresh,
        name=name,
        native_size=256,
        class_label=cfg.model.get("class_label"),
    )
    assert (wrapped.native_size, wrapped.size_multiple) == (256, 32)
    assert set(wrapped.state_dict()) == {f"net.{k}" for k in state}
    del net, fresh, wrapped, state


def test_preset_paths_and_options():
    for name in PRESETS:
        model = preset(name, "paths.checkpoint_dir=/ckpt").model
        assert model.checkpoint == f"/ckpt/{model.release}"
        assert model.release in RELEASES
        assert model.precision == "auto" and model.channels_last and model.compile == "auto"
        assert model.checkpointing is False
    cond = preset("adm_imagenet256_cond", "paths.checkpoint_dir=/ckpt").model
    assert cond.class_label is None and cond.classifier_scale == 1.0
    assert cond.classifier.checkpoint == "/ckpt/256x256_classifier.pt"
    assert cond.classifier.release in RELEASES
    assert preset("adm_imagenet256", "model.checkpoint=/x.pt").model.net.checkpoint == "/x.pt"


@pytest.mark.parametrize("t", [0, 1, 17, 500, 999])
@pytest.mark.parametrize("dim", [8, 128, 9])
def test_adm_timestep_embedding_is_cos_first_with_half_divisor(t, dim):
    emb = adm.timestep_embedding(torch.tensor([t]), dim)[0].double()
    half = dim // 2
    freqs = [math.exp(-math.log(10000) * k / half) for k in range(half)]
    expected = [math.cos(t * f) for f in freqs] + [math.sin(t * f) for f in freqs]
    expected += [0.0] * (dim % 2)
    torch.testing.assert_close(emb, torch.tensor(expected, dtype=torch.float64), atol=2e-4, rtol=0)


@pytest.mark.parametrize("t", [0, 1, 17, 500, 999])
@pytest.mark.parametrize("dim", [8, 128, 9])
def test_ddpm_timestep_embedding_is_sin_first_with_half_minus_one_divisor(t, dim):
    emb = ddpm.timestep_embedding(torch.tensor([t]), dim)[0].double()
    half = dim // 2
    freqs = [math.exp(-math.log(10000) * k / (half - 1)) for k in range(half)]
    expected = [math.sin(t * f) for f in freqs] + [math.cos(t * f) for f in freqs]
    expected += [0.0] * (dim % 2)
    torch.testing.assert_close(emb, torch.tensor(expected, dtype=torch.float64), atol=2e-4, rtol=0)


def test_legacy_attention_is_head_major_and_differs_from_new_order():
    torch.manual_seed(0)
    block = adm.AttentionBlock(64, num_head_channels=16, legacy_order=True)
    qkv = torch.randn(2, 3 * 64, 10)
    heads, ch = 4, 16
    # reference: [q0 k0 v0 | q1 k1 v1 | …], softmax(q·k / √ch) over keys
    q, k, v = qkv.view(2, heads, 3, ch, 10).unbind(2)
    w = torch.softmax(torch.einsum("bhct,bhcs->bhts", q, k) / math.sqrt(ch), dim=-1)
    expected = torch.einsum("bhts,bhcs->bhct", w, v).reshape(2, 64, 10)
    torch.testing.assert_close(block.attention(qkv), expected, atol=1e-5, rtol=1e-5)
    block.legacy_order = False
    q, k, v = (z.view(2, heads, ch, 10) for z in qkv.chunk(3, dim=1))
    w = torch.softmax(torch.einsum("bhct,bhcs->bhts", q, k) / math.sqrt(ch), dim=-1)
    new = torch.einsum("bhts,bhcs->bhct", w, v).reshape(2, 64, 10)
    torch.testing.assert_close(block.attention(qkv), new, atol=1e-5, rtol=1e-5)
    assert not torch.allclose(new, expected, atol=1e-3)


@pytest.mark.parametrize(
    ("network", "arch", "channels"), [(ADMUNet, SMALL_ADM, 6), (DDPMUNet, SMALL_DDPM, 3)]
)
def test_reduced_forward_shapes_determinism_and_batch_independence(network, arch, channels):
    torch.manual_seed(0)
    net = network(**arch).eval()
    for p in net.parameters():  # upstream zero-initialises some output convs; make all live
        torch.nn.init.normal_(p, std=0.05)
    assert any(isinstance(m, adm.AttentionBlock | ddpm.AttnBlock) for m in net.modules())
    x, t = torch.randn(2, 3, 32, 32), torch.tensor([3, 900])
    with torch.no_grad():
        out = net(x, t)
        assert out.shape == (2, channels, 32, 32) and out.dtype == torch.float32
        assert torch.equal(out, net(x, t))
        torch.testing.assert_close(net(x[1:], t[1:]), out[1:], atol=1e-5, rtol=1e-4)
        assert not torch.allclose(net(x, t.flip(0)), out)  # the timestep matters


def test_class_label_reaches_the_network_and_is_required():
    torch.manual_seed(0)
    net = ADMUNet(**SMALL_ADM, num_classes=10)
    torch.nn.init.normal_(net.label_emb.weight)
    x, t = torch.randn(1, 3, 32, 32), torch.tensor([100])
    outs = [PretrainedDenoiser(net, name="c", native_size=32, class_label=c)(x, t) for c in (1, 2)]
    assert not torch.allclose(*outs)
    for bad in (10, -1):
        with pytest.raises(UserError, match="class_label"):
            PretrainedDenoiser(net, name="c", native_size=32, class_label=bad)
    per_image = PretrainedDenoiser(net, name="c", native_size=32)  # classes from the dataset
    with pytest.raises(UserError, match="class-conditional"):
        per_image(x, t)
    assert torch.equal(per_image(x, t, classes=torch.tensor([2])), outs[1])
    assert torch.equal(per_image.conditioned(torch.tensor([2]))(x, t), outs[1])
    with pytest.raises(UserError, match="unconditional"):
        PretrainedDenoiser(ADMUNet(**SMALL_ADM), name="u", native_size=32, class_label=3)


# -- checkpoint files ---------------------------------------------------------------------
@pytest.fixture
def small_adm_state():
    torch.manual_seed(1)
    return ADMUNet(**SMALL_ADM).state_dict()


def _equal(denoiser: PretrainedDenoiser, state: dict) -> bool:
    return all(torch.equal(denoiser.net.state_dict()[k], v) for k, v in state.items())


def test_loads_plain_prefixed_and_ddim_list_formats(tmp_path, small_adm_state):
    torch.manual_seed(2)
    ema = ADMUNet(**SMALL_ADM).state_dict()
    optimizer = {"state": {}, "param_groups": [{"lr": 2e-5, "params": [0, 1]}]}
    files = {
        "plain.pt": (small_adm_state, small_adm_state),
        "prefixed.pt": ({f"module.{k}": v for k, v in small_adm_state.items()}, small_adm_state),
        "ddim_ema.pth": ([small_adm_state, optimizer, 10, 5000, ema], ema),
        "ddim_no_ema.pth": ([small_adm_state, optimizer, 10, 5000], small_adm_state),
    }
    for file, (payload, expected) in files.items():
        torch.save(payload, tmp_path / file)
        model = load_adm(tmp_path / file, SMALL_ADM, name="small")
        assert _equal(model, expected), file
        assert not any(p.requires_grad for p in model.parameters())
        assert not any(p.is_meta for p in model.parameters())


def test_ddpm_state_dict_file_round_trip(tmp_path):
    torch.manual_seed(3)
    net = DDPMUNet(**SMALL_DDPM)
    torch.save(net.state_dict(), tmp_path / "celeba.ckpt")
    model = load_ddpm(tmp_path / "celeba.ckpt", SMALL_DDPM, name="small")
    x, t = torch.randn(1, 3, 32, 32), torch.tensor([250])
    with torch.no_grad():
        assert torch.equal(model(x, t), net(x, t))
    assert model.eps(x, 250).shape == (1, 3, 32, 32)


def test_missing_file_names_path_url_size_and_hash(tmp_path):
    path = tmp_path / "nowhere" / "256x256_diffusion_uncond.pt"
    with pytest.raises(UserError) as err:
        load_adm(path, SMALL_ADM, name="adm_imagenet256", release="256x256_diffusion_uncond.pt")
    message = str(err.value)
    known = RELEASES["256x256_diffusion_uncond.pt"]
    for part in (str(path), known.url, known.size, known.sha256, "rnsf.download"):
        assert part in message
    assert "\n" not in message


def test_architecture_mismatch_names_the_first_keys(tmp_path, small_adm_state):
    torch.save(small_adm_state, tmp_path / "adm.pt")
    with pytest.raises(UserError) as err:
        load_ddpm(tmp_path / "adm.pt", SMALL_DDPM, name="ddpm_small")
    message = str(err.value)
    assert "does not fit model ddpm_small" in message and "\n" not in message
    assert "missing keys (temb.dense.0.weight" in message
    assert "unexpected keys (time_embed.0.weight" in message
    wider = {**SMALL_ADM, "learn_sigma": False}
    shapes = r"2 mis-shaped \(out\.2\.weight \(file \(6, 32, 3, 3\), model \(3, 32, 3, 3\)\), out"
    with pytest.raises(UserError, match=shapes):
        load_adm(tmp_path / "adm.pt", wider, name="adm_small")


def test_unreadable_and_unsafe_files_are_refused(tmp_path):
    html = tmp_path / "celeba_hq.ckpt"
    html.write_text("<?xml version='1.0'?><Error><Code>AccessDenied</Code></Error>")
    with pytest.raises(UserError, match="HTML/XML, an error page saved by a failed download"):
        load_ddpm(html, SMALL_DDPM)
    torch.save(DDPMUNet(**SMALL_DDPM).state_dict(), tmp_path / "full.pt")
    (tmp_path / "cut.pt").write_bytes((tmp_path / "full.pt").read_bytes()[:100_000])
    with pytest.raises(UserError, match=r"100,000 bytes; .*truncated or not a PyTorch checkpoint"):
        load_ddpm(tmp_path / "cut.pt", SMALL_DDPM)
    marker = tmp_path / "executed"
    evil = tmp_path / "evil.pt"
    with open(evil, "wb") as f:  # a pickle that would run code when unpickled unsafely
        pickle.dump(_Exploit(str(marker)), f)
    with pytest.raises(UserError, match="weights-only loading refuses it") as err:
        read_state_dict(evil)
    assert "\n" not in str(err.value)
    assert not marker.exists()
    torch.save({"epoch": 3}, tmp_path / "odd.pt")
    with pytest.raises(UserError, match="neither a state dict"):
        read_state_dict(tmp_path / "odd.pt")


class _Exploit:
    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


def test_bad_checkpoint_fails_through_hydra_instantiation(tmp_path):
    cfg = preset("adm_ffhq256", f"model.checkpoint={tmp_path / 'ffhq_10m.pt'}")
    with pytest.raises(InstantiationException) as err:
        instantiate(cfg.model.net)
    assert isinstance(err.value.__cause__, UserError)
    assert RELEASES["ffhq_10m.pt"].url in str(err.value.__cause__)


# -- the wrapper: precision, compile, gradients ---------------------------------------------
@pytest.fixture
def small_model(tmp_path, small_adm_state):
    torch.save(small_adm_state, tmp_path / "small.pt")
    return lambda **kw: load_adm(tmp_path / "small.pt", SMALL_ADM, name="small", **kw)


def test_precision_wrapper_returns_float32(small_model):
    x, t = torch.randn(1, 3, 32, 32), torch.tensor([10])
    with torch.no_grad():
        ref = small_model()(x, t)
        half = small_model(precision="fp16")
        with pytest.warns(UserWarning, match="fp16 needs a GPU"):
            out = half(x, t)
        assert out.dtype == torch.float32 and torch.equal(out, ref)  # fp32 fall-back
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            half(x, t)  # warned once only
        bf16 = small_model(precision="bf16")(x, t)
    assert bf16.dtype == torch.float32
    assert not torch.equal(bf16, ref) and torch.allclose(bf16, ref, atol=0.2, rtol=0.1)
    with pytest.raises(UserError, match=r"model\.precision='fp8'"):
        small_model(precision="fp8")


def test_compile_option_compiles_the_network_once(small_model, monkeypatch):
    calls = []

    def fake_compile(net, backend, mode, dynamic):
        assert dynamic is False  # static shapes: a short batch is padded
        calls.append((net, backend))
        return lambda *args, **kwargs: net(*args, **kwargs) + 1  # marks the compiled path

    monkeypatch.setattr(torch, "compile", fake_compile)
    x, t = torch.randn(1, 3, 32, 32), torch.tensor([5])
    plain = small_model()
    with torch.no_grad():
        ref = plain(x, t)
        assert not calls
        for backend, option in (("inductor", True), ("eager", "eager")):
            model = small_model(compile=option)
            torch.testing.assert_close(model(x, t), ref + 1)
            model(x, t)
            assert calls[-1] == (model.net, backend)
            assert set(model.state_dict()) == set(plain.state_dict())
    assert len(calls) == 2  # once per model, on first use


def test_input_gradient_through_attention_with_frozen_parameters(small_model):
    model = small_model()
    assert not any(p.requires_grad for p in model.parameters())
    x = torch.randn(1, 3, 32, 32, requires_grad=True)
    with torch.enable_grad():
        out = model(x, torch.tensor([500]))
        x0 = (x - 0.7 * out[:, :3]) / 0.7
        (grad,) = torch.autograd.grad((x0 - 0.1).flatten(1).norm(dim=1).sum(), x)
    assert grad.shape == x.shape and torch.isfinite(grad).all() and grad.abs().sum() > 0
    assert all(p.grad is None for p in model.parameters())


# -- download -------------------------------------------------------------------------------
@pytest.fixture
def served(tmp_path):
    """A 3 MiB 'checkpoint' at a file:// URL and its registry entry."""
    data = os.urandom(3 * 2**20 + 17)
    src = tmp_path / "server" / "weights.pt"
    src.parent.mkdir()
    src.write_bytes(data)
    known = Release(
        file="weights.pt",
        url=src.as_uri(),
        source="tests",
        size="3 MB",
        num_bytes=len(data),
        sha256=hashlib.sha256(data).hexdigest(),
    )
    return known, data


def _leftovers(folder: Path) -> list[str]:
    return [p.name for p in folder.iterdir()] if folder.exists() else []


def test_download_verifies_and_renames_into_place(tmp_path, served):
    known, data = served
    dest = tmp_path / "ckpt" / "weights.pt"
    assert dl.download(known, dest, progress=False) == dest
    assert dest.read_bytes() == data
    assert _leftovers(dest.parent) == ["weights.pt"]
    dl.download(known, dest, progress=False)  # present and verified: kept
    dest.write_bytes(b"x" + data[1:])
    with pytest.raises(UserError, match="--force"):
        dl.download(known, dest, progress=False)


@pytest.mark.parametrize("field", ["sha256", "num_bytes"])
def test_download_with_wrong_hash_or_size_leaves_nothing(tmp_path, served, field):
    known, _ = served
    bad = {"sha256": "0" * 64, "num_bytes": known.num_bytes + 1}[field]
    known = Release(**{**known.__dict__, field: bad})
    dest = tmp_path / "ckpt" / "weights.pt"
    with pytest.raises(UserError, match=r"could not download weights\.pt") as err:
        dl.download(known, dest, progress=False)
    assert ("sha256" if field == "sha256" else "bytes") in str(err.value)
    assert _leftovers(dest.parent) == []


def test_interrupted_download_leaves_nothing(tmp_path, served, monkeypatch):
    known, _ = served

    class Interrupting:
        def __init__(self, **kwargs):
            pass

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

        def update(self, n):
            raise KeyboardInterrupt

    monkeypatch.setattr(dl, "tqdm", Interrupting)
    dest = tmp_path / "ckpt" / "weights.pt"
    with pytest.raises(KeyboardInterrupt):
        dl.download(known, dest, progress=False)
    assert _leftovers(dest.parent) == []


def test_download_falls_back_to_a_mirror(tmp_path, served):
    known, data = served
    known = Release(
        **{**known.__dict__, "url": (tmp_path / "gone.pt").as_uri(), "mirrors": (known.url,)}
    )
    dest = tmp_path / "ckpt" / "weights.pt"
    dl.download(known, dest, progress=False)
    assert dest.read_bytes() == data


def test_download_command_resolves_the_preset(tmp_path, served, monkeypatch, capsys):
    known, data = served
    monkeypatch.setitem(
        dl.RELEASES,
        "256x256_diffusion_uncond.pt",
        Release(**{**known.__dict__, "file": "256x256_diffusion_uncond.pt"}),
    )
    dl.main(["model=adm_imagenet256", f"paths.checkpoint_dir={tmp_path / 'c'}", "--quiet"])
    path = tmp_path / "c" / "256x256_diffusion_uncond.pt"
    assert path.read_bytes() == data
    assert str(path) in capsys.readouterr().out
    with pytest.raises(SystemExit) as exit_:
        dl.main(["model=tiny"])
    assert exit_.value.code == 2
    assert "has no checkpoint to download" in capsys.readouterr().err


def test_download_command_rejects_a_file_with_the_wrong_hash(tmp_path, served):
    """The real registry entry, a random file behind --url: refused, nothing written."""
    known, _ = served
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "rnsf.download",
            "model=adm_imagenet256",
            f"model.checkpoint={tmp_path / 'c' / 'adm.pt'}",
            "--url",
            known.url,
            "--quiet",
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=300,
    )
    assert result.returncode == 2
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("error: could not download 256x256_diffusion_uncond.pt")
    assert "2,211,383,297" in last
    assert _leftovers(tmp_path / "c") == []


# -- end to end -----------------------------------------------------------------------------
@pytest.mark.slow
def test_run_py_with_a_reduced_adm_checkpoint(tmp_path):
    """run.py with model=adm_imagenet256 shrunk to 64x64 images and 32 channels: the preset's
    loader, the engine's size checks and a sampler, end to end."""
    arch = dict(image_size=64, model_channels=32, num_res_blocks=1, attention_resolutions=[16, 8])
    torch.manual_seed(0)
    full = dict(preset("adm_imagenet256").model.arch)
    torch.save(ADMUNet(**{**full, **arch}).state_dict(), tmp_path / "small.pt")
    overrides = [f"model.arch.{k}={v}".replace(" ", "") for k, v in arch.items()]
    common = [
        "model=adm_imagenet256",
        *overrides,
        "dataset.limit=1",
        "method=ddnm",
        "method.steps=2",
        "logger=none",
        "save_images=false",
    ]
    ok = run_py(
        [*common, f"model.checkpoint={tmp_path / 'small.pt'}", f"hydra.run.dir={tmp_path}/a"],
        WANDB_MODE="disabled",
    )
    assert ok.returncode == 0, ok.stderr[-2000:]
    assert "ddnm | sr4 | demo | 1 images" in ok.stdout
    metrics = json.loads((tmp_path / "a" / "metrics.json").read_text())
    # model.precision=auto and model.compile=auto are the exact, eager path on the CPU
    assert (metrics["precision"], metrics["compile"], metrics["compile_seconds"]) == (
        "fp32",
        None,
        None,
    )
    missing = run_py(
        [*common, f"model.checkpoint={tmp_path / 'no.pt'}", f"hydra.run.dir={tmp_path}/b"],
        WANDB_MODE="disabled",
    )
    assert missing.returncode == 2
    assert missing.stderr.strip().splitlines() == [
        f"error: checkpoint not found: {tmp_path / 'no.pt'}; download "
        f"{RELEASES['256x256_diffusion_uncond.pt'].describe()} "
        "(python -m rnsf.download model=adm_imagenet256), or set model.checkpoint=PATH"
    ]
