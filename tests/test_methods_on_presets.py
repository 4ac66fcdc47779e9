"""ΠGDM, RED-diff, DiffPIR and DAPS on every kind of prior preset: reduced-width ADM and DDPM
networks saved to a checkpoint and loaded through their `model=` presets, a diffusers UNet2DModel
through `model=diffusers`, the built-in prior, and the class-conditional ADM given each image's
class through `conditioned(labels)`, as the engine does; noiseless and noisy.

DAPS hands the network float timesteps and ΠGDM differentiates through it (with activation
checkpointing on ADM): each network must take both. Plus the four end to end, as one sweep
through `run.py` and one job through the installed `rnsf` command.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate

from rnsf.methods import DAPS, DiffPIR, PiGDM, REDDiff
from rnsf.operators import BicubicSR, Task
from rnsf.utils.cli import CONF_DIR
from rnsf.utils.random import image_generators

from conftest import ROOT, SMALL_ADM, SMALL_DDPM, run_py

#: two steps each; DAPS: 2 annealing levels of one ODE step, 3 Langevin steps per level
METHODS = {
    "pigdm": lambda: PiGDM(steps=2),
    "reddiff": lambda: REDDiff(steps=2),
    "diffpir": lambda: DiffPIR(steps=2),
    "daps": lambda: DAPS(steps=2, ode_steps=1, langevin_steps=3),
}


def _overrides(prefix: str, arch: dict) -> list[str]:
    def value(v):
        return "[" + ",".join(map(str, v)) + "]" if isinstance(v, tuple | list) else str(v)

    return [f"{prefix}.{k}={value(v)}" for k, v in arch.items()]


def _preset(name: str, *overrides: str):
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        cfg = compose("config", overrides=[f"model={name}", "model.precision=fp32", *overrides])
    return cfg.model


def _live(net: torch.nn.Module) -> None:
    """Random weights everywhere (upstream zero-initialises some output convolutions)."""
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.05)


def _saved(preset: str, network, tmp: Path, *overrides: str):
    """The preset's network at reduced width, saved to a checkpoint at random weights and loaded
    back through the preset's own loader (`model.net`)."""
    model = _preset(preset, *overrides)
    net = network(**model.arch)
    _live(net)
    path = tmp / f"{model.name}.pt"
    torch.save(net.state_dict(), path)
    return instantiate(_preset(preset, f"model.checkpoint={path}", *overrides).net)


@pytest.fixture(scope="module")
def images(small_set) -> torch.Tensor:
    """Two 16x16 images: every network here takes 16 (multiples of 2, 4 or 8)."""
    return torch.nn.functional.avg_pool2d(small_set[:2], 2)


@pytest.fixture(scope="module")
def networks(tmp_path_factory) -> dict:
    """name -> (denoiser as a method receives it, its class labels or None)."""
    from rnsf.denoisers import ADMUNet, DDPMUNet

    tmp = tmp_path_factory.mktemp("presets")
    adm = _overrides("model.arch", SMALL_ADM)
    ddpm = _overrides("model.arch", SMALL_DDPM)
    found = {
        # ΠGDM backpropagates through it with activation checkpointing (`model.checkpointing`)
        "adm": _saved("adm_ffhq256", ADMUNet, tmp, *adm, "model.checkpointing=true"),
        "adm_plain": _saved("adm_ffhq256", ADMUNet, tmp, *adm),  # the same weights, no recompute
        "adm_cond": _saved("adm_imagenet256_cond", ADMUNet, tmp, *adm, "model.classifier_scale=0"),
        # with classifier guidance (a reduced noisy classifier of its own checkpoint)
        "adm_guided": _saved(
            "adm_imagenet256_cond", ADMUNet, tmp, *adm, *_classifier(tmp), "model.name=guided"
        ),
        "ddpm": _saved("ddpm_cifar10_32", DDPMUNet, tmp, *ddpm),
        "tiny": instantiate(_preset("tiny").net),
    }
    if _has_diffusers():
        from test_hub import LINEAR, SMALL, diffusers_config, live, save_model

        save_model(tmp / "hub", arch=SMALL)
        found["diffusers"] = instantiate(_preset("diffusers", f"model.path={tmp / 'hub'}").net)
        lib = pytest.importorskip("diffusers")  # a class-conditional UNet2DModel
        unet = live(lib.UNet2DModel(**diffusers_config(SMALL), num_class_embeds=10))
        unet.save_pretrained(tmp / "hub_cond")
        lib.DDPMScheduler(**LINEAR).save_pretrained(tmp / "hub_cond")
        path = f"model.path={tmp / 'hub_cond'}"
        found["diffusers_cond"] = instantiate(_preset("diffusers", path).net)
        assert found["diffusers_cond"].needs_labels
    labels = torch.tensor([3, 7])
    assert found["adm_cond"].needs_labels
    assert found["adm_guided"].classifier is not None
    conditional = ("adm_cond", "adm_guided", "diffusers_cond")
    return {k: (v, labels if k in conditional else None) for k, v in found.items()}


def _classifier(tmp: Path) -> list[str]:
    """The overrides of a reduced-width noisy classifier for the 16x16 test images (its attention
    pool is built for one size), saved at random weights."""
    from rnsf.denoisers.classifier import NoisyClassifier

    arch = dict(image_size=16, model_channels=32, num_head_channels=32, channel_mult=(1, 2))
    arch["attention_resolutions"] = (8,)
    net = NoisyClassifier(**arch)
    _live(net)
    torch.save(net.state_dict(), tmp / "classifier.pt")
    return [
        f"model.classifier.checkpoint={tmp / 'classifier.pt'}",
        *_overrides("model.classifier.arch", arch),
    ]


def _has_diffusers() -> bool:
    try:
        import diffusers  # noqa: F401
    except ImportError:
        return False
    return True


#: the guided preset: `test_classifier_guidance_reaches_pigdm_and_reddiff_only`
NETWORKS = ["adm", "adm_cond", "ddpm", "diffusers", "diffusers_cond", "tiny"]


def _restore(method, network, labels, x, sigma, indices=(0, 1)):
    gens = image_generators(0, indices)
    task = Task("sr4", BicubicSR(4), sigma=sigma)
    op, y = task.measure(x, gens)
    method.check(op, task.sigma_model)
    denoiser = network.conditioned(labels)  # what the engine hands a method
    return method.restore(y, op, denoiser, image_generators(0, indices), sigma_y=task.sigma_model)


@pytest.mark.parametrize("sigma", [0.0, 0.05], ids=["noiseless", "noisy"])
@pytest.mark.parametrize("network", NETWORKS)
@pytest.mark.parametrize("name", list(METHODS))
def test_method_runs_on_the_preset(name, network, sigma, networks, images):
    if network not in networks:
        pytest.skip("the optional diffusers extra is not installed")
    net, labels = networks[network]
    x = images
    out = _restore(METHODS[name](), net, labels, x, sigma)
    assert out.shape == x.shape and out.dtype == torch.float32
    assert torch.isfinite(out).all()
    assert not out.requires_grad
    assert not any(p.requires_grad for p in net.parameters())  # the network stays frozen
    assert not any(p.grad is not None for p in net.parameters())
    assert not torch.allclose(out[0], out[1])


@pytest.mark.parametrize("name", list(METHODS))
def test_class_conditional_result_is_independent_of_batch_size(name, networks, images):
    """Each image keeps its own class and its own generator in any batch."""
    net, labels = networks["adm_cond"]
    x = images
    batch = _restore(METHODS[name](), net, labels, x, 0.05)
    single = _restore(METHODS[name](), net, labels[1:], x[1:], 0.05, indices=(1,))
    torch.testing.assert_close(batch[1:], single, atol=1e-4, rtol=1e-4)
    other = _restore(METHODS[name](), net, labels.flip(0)[1:], x[1:], 0.05, indices=(1,))
    assert not torch.allclose(other, single)  # the class reaches the network


def test_pigdm_with_activation_checkpointing_gives_the_same_result(networks, images, monkeypatch):
    """`model.checkpointing=true`: ΠGDM's backward pass recomputes each ADM block's activations
    (torch.utils.checkpoint runs) and restores exactly what the plain network does."""
    calls = []
    checkpoint = torch.utils.checkpoint.checkpoint

    def counted(*args, **kwargs):
        calls.append(1)
        return checkpoint(*args, **kwargs)

    monkeypatch.setattr(torch.utils.checkpoint, "checkpoint", counted)
    recomputed = _restore(METHODS["pigdm"](), networks["adm"][0], None, images, 0.05)
    assert calls  # the checkpointed blocks ran
    count = len(calls)
    plain = _restore(METHODS["pigdm"](), networks["adm_plain"][0], None, images, 0.05)
    assert len(calls) == count  # and the plain network's do not
    torch.testing.assert_close(recomputed, plain, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("name", list(METHODS))
def test_classifier_guidance_reaches_pigdm_and_reddiff_only(name, networks, images):
    """The guided preset has the conditional one's weights (the same random draw) plus a
    classifier: ΠGDM and RED-diff guide ε with it, DiffPIR and DAPS (no guidance upstream)
    ignore it."""
    guided, labels = networks["adm_guided"]
    plain, _ = networks["adm_cond"]
    weights = zip(guided.net.parameters(), plain.net.parameters(), strict=True)
    assert all(torch.equal(a, b) for a, b in weights)
    with_guide = _restore(METHODS[name](), guided, labels, images, 0.05)
    without = _restore(METHODS[name](), plain, labels, images, 0.05)
    assert with_guide.shape == images.shape and torch.isfinite(with_guide).all()
    assert torch.equal(with_guide, without) == (name in ("diffpir", "daps"))


@pytest.mark.slow
@pytest.mark.parametrize("name", ["pigdm", "daps"])
def test_compiled_and_padded_network_gives_the_eager_result(name, networks, images):
    """The compiled path (`model.compile=eager`: dynamo's graph capture without code generation)
    takes DAPS's float timesteps and ΠGDM's backward pass, and a batch smaller than the traced
    one (padded to it) restores as the eager network does."""
    plain, _ = networks["tiny"]
    compiled = instantiate(_preset("tiny", "model.compile=eager").net)
    assert compiled.policy.compile == "eager"
    both = _restore(METHODS[name](), compiled, None, images, 0.05)
    single = _restore(METHODS[name](), compiled, None, images[1:], 0.05, indices=(1,))
    policy = compiled.policy
    assert policy.compile_seconds is not None and policy.fallback is None  # it ran compiled
    reference = _restore(METHODS[name](), plain, None, images, 0.05)
    torch.testing.assert_close(both, reference, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(single, reference[1:], atol=1e-4, rtol=1e-4)


# -- end to end --------------------------------------------------------------------------------
@pytest.mark.slow
def test_sweep_of_the_four_through_run_py(tmp_path):
    sweep = tmp_path / "sweep"
    result = run_py(
        [
            "-m",
            "method=pigdm,diffpir,reddiff,daps",
            "debug=tiny",
            "dataset.limit=1",
            "task.sigma=0.05",
            f"hydra.sweep.dir={sweep}",
        ]
    )
    assert result.returncode == 0, result.stderr[-3000:]
    found = {}
    for metrics_file in sweep.glob("*/metrics.json"):
        metrics = json.loads(metrics_file.read_text())
        found[metrics["method"]] = metrics["nfe"]
    # debug=tiny: method.steps=5; DAPS: one level of five ODE steps
    assert found == {"pigdm": 5, "diffpir": 5, "reddiff": 5, "daps": 5}, found


@pytest.mark.slow
def test_daps_through_the_installed_command(tmp_path):
    rnsf = shutil.which("rnsf") or str(Path(sys.executable).with_name("rnsf"))
    if not Path(rnsf).is_file():
        pytest.skip("the rnsf command is not installed")
    env = {**os.environ, "WANDB_MODE": "offline", "HYDRA_FULL_ERROR": "0"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT / "src"), env.get("PYTHONPATH")]))
    job = tmp_path / "job"
    result = subprocess.run(
        [
            rnsf,
            "method=daps",
            "debug=tiny",
            "task.sigma=0.05",
            "method.langevin_steps=5",
            "dataset.limit=1",
            f"hydra.run.dir={job}",
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads((job / "metrics.json").read_text())
    assert (metrics["method"], metrics["nfe"], metrics["task"]) == ("daps", 5, "sr4")
    assert metrics["n_images"] == 1


@pytest.mark.slow
def test_sweep_on_a_reduced_class_conditional_preset_with_labels(tmp_path):
    """run.py -m over the four and σ ∈ {0, 0.05} on `model=adm_imagenet256_cond` shrunk to 32x32
    images, each image's class from a labels file (the engine's `conditioned(labels)`)."""
    from PIL import Image

    from rnsf.denoisers import ADMUNet

    arch = _overrides("model.arch", SMALL_ADM)
    _saved("adm_imagenet256_cond", ADMUNet, tmp_path, *arch, "model.classifier_scale=0")
    images = tmp_path / "images"
    images.mkdir()
    for name, colour in (("a.png", (120, 60, 30)), ("b.png", (20, 90, 200))):
        Image.new("RGB", (32, 32), colour).save(images / name)
    (tmp_path / "labels.txt").write_text("a.png 207\nb.png 3\n")
    sweep = tmp_path / "sweep"
    result = run_py(
        [
            "-m",
            "method=pigdm,reddiff,diffpir,daps",
            "task.sigma=0,0.05",
            "debug=tiny",
            "model=adm_imagenet256_cond",
            *arch,
            f"model.checkpoint={tmp_path / 'adm_imagenet256_cond.pt'}",
            "model.classifier_scale=0",
            "dataset=folder",
            f"dataset.root={images}",
            f"dataset.labels_file={tmp_path / 'labels.txt'}",
            "dataset.image_size=32",
            "save_images=false",
            f"hydra.sweep.dir={sweep}",
        ],
        WANDB_MODE="disabled",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    found = {}
    for metrics_file in sweep.glob("*/metrics.json"):
        metrics = json.loads(metrics_file.read_text())
        assert metrics["n_images"] == 2 and metrics["model"] == "adm_imagenet256_cond"
        found[metrics["method"], metrics["sigma"]] = metrics["nfe"]
    assert found == {(m, s): 5 for m in METHODS for s in (0.0, 0.05)}, found


@pytest.mark.slow
@pytest.mark.parametrize(("preset", "sigma"), [("ddpm", "0.05"), ("diffusers", "0")])
def test_sweep_on_a_reduced_ddpm_and_a_diffusers_folder(preset, sigma, tmp_path):
    """run.py -m over the four on `model=ddpm_cifar10_32` shrunk (noisy) and on a diffusers
    UNet2DModel folder (noiseless), 32x32 demo images."""
    from rnsf.denoisers import DDPMUNet

    if preset == "ddpm":
        arch = _overrides("model.arch", SMALL_DDPM)
        _saved("ddpm_cifar10_32", DDPMUNet, tmp_path, *arch)
        model = ["model=ddpm_cifar10_32", *arch, f"model.checkpoint={tmp_path}/ddpm_cifar10_32.pt"]
    else:
        if not _has_diffusers():
            pytest.skip("the optional diffusers extra is not installed")
        from test_hub import save_model

        save_model(tmp_path / "hub")
        model = ["model=diffusers", f"model.path={tmp_path / 'hub'}"]
    sweep = tmp_path / "sweep"
    result = run_py(
        [
            "-m",
            "method=pigdm,reddiff,diffpir,daps",
            f"task.sigma={sigma}",
            "debug=tiny",
            *model,
            "dataset.resize=center_crop",
            "dataset.image_size=32",
            "save_images=false",
            f"hydra.sweep.dir={sweep}",
        ],
        WANDB_MODE="disabled",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    found = {}
    for metrics_file in sweep.glob("*/metrics.json"):
        metrics = json.loads(metrics_file.read_text())
        assert metrics["n_images"] == 2 and metrics["sigma"] == float(sigma)
        found[metrics["method"]] = metrics["nfe"]
    assert found == dict.fromkeys(METHODS, 5), found
