"""Class-conditional ImageNet as DDRM runs it: per-image labels, OpenAI's noisy classifier and
classifier guidance inside DDRM's (and DDNM's) update."""

from __future__ import annotations

import math

import pytest
import torch
from omegaconf import OmegaConf

from rnsf.data.folder import ImageFolder
from rnsf.denoisers import (
    ADMUNet,
    GaussianPrior,
    NoisyClassifier,
    PretrainedDenoiser,
    load_adm,
    load_classifier,
)
from rnsf.denoisers.classifier import guidance_gradient
from rnsf.diffusion import sqrt32
from rnsf.methods import DDNM, DDRM
from rnsf.operators import AverageSR, Task
from rnsf.utils.errors import UserError
from rnsf.utils.random import image_generators

from conftest import ROOT

SMALL = {"model_channels": 32, "num_head_channels": 32}


def test_full_classifier_keys_and_parameters():
    """The 256x256_classifier.pt architecture as rnsf builds it: 249 keys, 54,096,360 parameters
    (pinned here; OpenAI publishes no count, and the real file is checked only when loaded)."""
    with torch.device("meta"):
        net = NoisyClassifier()
    state = net.state_dict()
    assert len(state) == 249
    assert sum(p.numel() for p in net.parameters()) == 54_096_360
    shapes = {k: tuple(v.shape) for k, v in state.items()}
    assert shapes["time_embed.0.weight"] == (512, 128)
    assert shapes["input_blocks.0.0.weight"] == (128, 3, 3, 3)
    assert shapes["out.2.positional_embedding"] == (512, 65)  # 8x8 positions + the mean
    assert shapes["out.2.qkv_proj.weight"] == (1536, 512, 1)
    assert shapes["out.2.c_proj.weight"] == (1000, 512, 1)
    assert shapes["middle_block.1.qkv.weight"] == (1536, 512, 1)
    # attention on the 32, 16 and 8 pixel feature maps: input blocks 10-11, 13-14 and 16-17
    attention = {
        int(k.split(".")[1])
        for k in state
        if k.startswith("input_blocks.") and k.endswith(".qkv.weight")
    }
    assert attention == {10, 11, 13, 14, 16, 17}
    assert "label_emb.weight" not in state


def test_classifier_preset_is_parametric_in_the_image_size():
    cfg = OmegaConf.load(ROOT / "conf" / "model" / "adm_imagenet256_cond.yaml")
    assert cfg.classifier.arch.channel_mult is None
    with torch.device("meta"):
        big = NoisyClassifier(image_size=512)
    assert tuple(big.out[2].positional_embedding.shape) == (512, 65)
    with pytest.raises(ValueError, match="image_size 100"):
        NoisyClassifier(image_size=100)


def test_reduced_width_forward_and_strict_round_trip(tmp_path):
    torch.manual_seed(0)
    net = NoisyClassifier(image_size=256, **SMALL).eval()
    x = torch.randn(1, 3, 256, 256)
    with torch.no_grad():
        a = net(x, torch.tensor([10]))
        b = net(x, torch.tensor([900]))
    assert a.shape == (1, 1000) and torch.isfinite(a).all()
    assert not torch.allclose(a, b)  # the timestep reaches the logits
    path = tmp_path / "classifier.pt"
    torch.save(net.state_dict(), path)
    loaded = load_classifier(path, {"image_size": 256, **SMALL})
    with torch.no_grad():
        assert torch.equal(loaded(x, torch.tensor([10])), a)
    with pytest.raises(UserError, match="does not fit"):
        load_classifier(path, {"image_size": 256, "model_channels": 64})


def test_guidance_gradient_is_the_scaled_gradient_of_the_log_probability():
    torch.manual_seed(0)
    net = NoisyClassifier(image_size=64, **SMALL).eval().requires_grad_(False)
    x = torch.randn(2, 3, 64, 64)
    labels = torch.tensor([3, 997])
    with torch.inference_mode():  # as inside the engine's test loop
        grad = guidance_gradient(net, x, 500, labels, scale=2.0)
    assert grad.shape == x.shape and grad.abs().sum() > 0
    # the same by hand, one image at a time: the batch does not couple the images
    for b in range(2):
        xb = x[b : b + 1].clone().requires_grad_(True)
        logp = torch.log_softmax(net(xb, torch.tensor([500])), dim=-1)[0, labels[b]]
        (ref,) = torch.autograd.grad(logp, xb)
        assert torch.allclose(grad[b : b + 1], 2.0 * ref, atol=1e-6, rtol=1e-5)
    # a finite difference along the gradient agrees with it
    d = grad[:1] / grad[:1].norm()
    h = 1e-2

    def logp(z):
        with torch.no_grad():
            return torch.log_softmax(net(z, torch.tensor([500])), dim=-1)[0, 3].double()

    slope = (logp(x[:1] + h * d) - logp(x[:1] - h * d)) / (2 * h)
    assert math.isclose(slope.item(), (grad[:1] / 2.0 * d).sum().item(), rel_tol=2e-2)


class Guided(GaussianPrior):
    """A Gaussian prior with a fixed 'classifier gradient', to check the update's formula."""

    def __init__(self, g):
        super().__init__(0.0, 0.5)
        self.g = g

    def classifier_gradient(self, x, t):
        return self.g.expand_as(x)


class Shifted(GaussianPrior):
    """The same guided ε, computed by hand: ε − √(1−ᾱ_t) g with upstream's float32 root."""

    def __init__(self, g):
        super().__init__(0.0, 0.5)
        self.g = g

    def eps_and_variance(self, x, t):
        eps, _ = super().eps_and_variance(x, t)
        root = sqrt32(1 - self.alphas_cumprod(torch.float32, "cpu")[t + 1]).item()
        return eps - root * self.g.expand_as(x), None


@pytest.mark.parametrize("method", [DDRM(steps=5), DDNM(steps=5)], ids=["ddrm", "ddnm"])
def test_guidance_enters_the_update_as_upstreams_cls_fn(method):
    x = torch.linspace(-0.5, 0.5, 3 * 16 * 16).reshape(1, 3, 16, 16)
    op, y = Task("sr4_avg", AverageSR(4), sigma=0.05).measure(x, image_generators(0, [0]))
    g = torch.linspace(-1, 1, 3 * 16 * 16).reshape(1, 3, 16, 16)
    sigma = 0.1
    guided = method.restore(y, op, Guided(g), image_generators(0, [0]), sigma_y=sigma)
    by_hand = method.restore(y, op, Shifted(g), image_generators(0, [0]), sigma_y=sigma)
    plain = method.restore(y, op, GaussianPrior(0.0, 0.5), image_generators(0, [0]), sigma_y=sigma)
    assert torch.equal(guided, by_hand)
    assert (guided - plain).abs().max() > 1e-3


def _conditional(tmp_path, classifier_scale=1.0, class_label=None):
    torch.manual_seed(0)
    arch = {
        "image_size": 32,
        "model_channels": 32,
        "channel_mult": [1, 2],
        "num_res_blocks": 1,
        "attention_resolutions": [16],
        "num_head_channels": 32,
        "num_classes": 1000,
    }
    path = tmp_path / "cond.pt"
    torch.save(ADMUNet(**arch).state_dict(), path)
    classifier_arch = {"image_size": 64, **SMALL}
    cpath = tmp_path / "cls.pt"
    torch.save(NoisyClassifier(**classifier_arch).state_dict(), cpath)
    classifier = {"checkpoint": cpath, "release": None, "arch": classifier_arch}
    return load_adm(
        path,
        arch,
        name="cond",
        class_label=class_label,
        classifier=classifier,
        classifier_scale=classifier_scale,
    )


def test_conditional_model_takes_each_images_label(tmp_path):
    model = _conditional(tmp_path)
    assert isinstance(model, PretrainedDenoiser) and model.needs_labels
    x = torch.randn(2, 3, 64, 64)
    with pytest.raises(UserError, match="class-conditional and some images have no class"):
        model.eps(x, 10)  # no classes given
    with pytest.raises(UserError, match="class"):
        model.conditioned(torch.tensor([5, -1])).eps(x, 10)  # one image without a label
    both = model.eps(x, 10, classes=torch.tensor([5, 7]))
    one = model.conditioned(torch.tensor([7])).eps(x[1:], 10)
    assert torch.allclose(both[1:], one, atol=1e-5)  # image 1 has its own class, 7
    assert not torch.allclose(both[:1], model.eps(x[:1], 10, classes=torch.tensor([7])))
    view = model.conditioned(torch.tensor([5, 7]))
    assert torch.equal(view.eps(x, 10), both)
    assert torch.equal(view.eps_and_variance(x, 10)[0], both)
    assert view.classifier_gradient(x, 10).shape == x.shape
    torch.testing.assert_close(
        view.classifier_gradient(x, 10), model.classifier_gradient(x, 10, torch.tensor([5, 7]))
    )
    fixed = _conditional(tmp_path, class_label=7)
    assert not fixed.needs_labels and fixed.eps(x[:1], 10).shape == (1, 3, 64, 64)


def test_conditioning_is_a_view_and_the_denoiser_holds_no_batch_state(tmp_path):
    """`conditioned(classes)` fills in each call's classes; the denoiser is never changed, so
    two batches' views can be used in turn (or re-entrantly) on one network."""
    model = _conditional(tmp_path, classifier_scale=0.0)
    x = torch.randn(2, 3, 64, 64)
    state = dict(vars(model))
    first, second = model.conditioned(torch.tensor([1, 2])), model.conditioned(torch.tensor([3, 4]))
    a, b, a_again = first.eps(x, 10), second.eps(x, 10), first.eps(x, 10)
    assert torch.equal(a, a_again) and not torch.allclose(a, b)
    assert vars(model) == state and not hasattr(model, "labels") and not hasattr(model, "bind")
    with pytest.raises(AttributeError, match="immutable"):
        first.classes = torch.tensor([0, 0])
    # the public API samplers use, through the view
    assert first.num_timesteps == model.num_timesteps
    assert torch.equal(first.alphas_cumprod(), model.alphas_cumprod())
    eps = first.eps(x, 10)
    assert torch.equal(first.x0_from_eps(x, eps, 10), model.x0_from_eps(x, eps, 10))
    # an unconditional denoiser takes no classes: the view passes none
    assert GaussianPrior(0.0, 0.5).conditioned(torch.tensor([1, 2])).classes is None


def test_scale_zero_loads_no_classifier(tmp_path):
    model = _conditional(tmp_path, classifier_scale=0.0)
    assert model.classifier is None
    view = model.conditioned(torch.tensor([1]))
    assert view.classifier_gradient(torch.zeros(1, 3, 64, 64), 5) is None


def test_labels_from_the_list_and_from_a_labels_file(tmp_path):
    from PIL import Image

    for name in ("a.png", "b.png", "sub/c.png"):
        (tmp_path / name).parent.mkdir(exist_ok=True)
        Image.new("RGB", (8, 8)).save(tmp_path / name)
    listed = tmp_path / "list.txt"
    listed.write_text("b.png 12\nc.png 4\n")
    ds = ImageFolder(tmp_path, image_size=8, resize="none", list_file=listed)
    assert ds.labels == [12, 4] and ds.has_labels and ds[1]["label"] == 4
    labels = tmp_path / "labels.txt"
    labels.write_text("a.png 1\nsub/c.png 3\n")
    ds = ImageFolder(tmp_path, image_size=8, resize="none", labels_file=labels)
    assert ds.labels == [1, -1, 3] and not ds.has_labels
    assert ImageFolder(tmp_path, image_size=8, resize="none").labels == [-1, -1, -1]
    labels.write_text("a.png one\n")
    with pytest.raises(UserError, match="labels_file"):
        ImageFolder(tmp_path, image_size=8, resize="none", labels_file=labels)


def test_the_imagenet_list_carries_the_classes():
    from rnsf.data.folder import read_labels, resolve_list_file

    table = read_labels(resolve_list_file("imagenet_val_1k"))
    assert len(table) == 1000 and sorted(set(table.values())) == list(range(1000))
    assert table["ILSVRC2012_val_00000293.JPEG"] == 0


def test_a_conditional_model_without_labels_stops_at_start_up():
    from types import SimpleNamespace

    from rnsf.engine.checks import check_labels

    cfg = OmegaConf.create({"model": {"name": "adm_imagenet256_cond"}})
    unlabelled = SimpleNamespace(name="demo", dataset=SimpleNamespace(has_labels=False))
    needs = SimpleNamespace(needs_labels=True)
    with pytest.raises(UserError, match="adm_imagenet256_cond needs each image's ImageNet class"):
        check_labels(cfg, unlabelled, needs)
    check_labels(cfg, unlabelled, SimpleNamespace(needs_labels=False))
    check_labels(cfg, SimpleNamespace(name="x", dataset=SimpleNamespace(has_labels=True)), needs)


def test_download_fetches_the_network_and_its_classifier():
    from rnsf.download import resolve_all

    found = resolve_all(["model=adm_imagenet256_cond", "paths.checkpoint_dir=/ckpt"])
    assert [(r.file, str(p)) for r, p in found] == [
        ("256x256_diffusion.pt", "/ckpt/256x256_diffusion.pt"),
        ("256x256_classifier.pt", "/ckpt/256x256_classifier.pt"),
    ]
    assert found[1][0].url.endswith("/diffusion/jul-2021/256x256_classifier.pt")
    alone = resolve_all(["model=adm_imagenet256_cond", "model.classifier_scale=0"])
    assert [r.file for r, _ in alone] == ["256x256_diffusion.pt"]
    assert [r.file for r, _ in resolve_all(["model=adm_imagenet256"])] == [
        "256x256_diffusion_uncond.pt"
    ]


def test_the_ddrm_imagenet_cc_experiment_composes():
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("config", overrides=["experiment=ddrm_imagenet256_cc"])
    assert cfg.method._target_.endswith("DDRM") and cfg.method.steps == 20
    assert (cfg.method.eta, cfg.method.eta_b) == (0.85, 1.0)
    assert cfg.model.name == "adm_imagenet256_cond" and cfg.model.classifier_scale == 1.0
    assert cfg.model.class_label is None and cfg.model.net.classifier.release == (
        "256x256_classifier.pt"
    )
    assert cfg.dataset.name == "imagenet_1k" and cfg.task.name == "sr4_avg"
    assert cfg.metrics.protocol == "float"


@pytest.mark.slow
def test_run_py_with_a_reduced_conditional_model_labels_and_guidance(tmp_path):
    """run.py with adm_imagenet256_cond shrunk to 64x64 images: each image's class from a labels
    file, the classifier loaded from its own checkpoint, DDRM with guidance; and the start-up
    error when the folder has no labels."""
    from hydra import compose, initialize_config_dir
    from PIL import Image

    from conftest import run_py

    arch = dict(image_size=64, model_channels=32, num_res_blocks=1, attention_resolutions=[16, 8])
    with initialize_config_dir(str(ROOT / "conf"), version_base="1.3"):
        full = dict(compose("config", overrides=["model=adm_imagenet256_cond"]).model.arch)
    torch.manual_seed(0)
    torch.save(ADMUNet(**{**full, **arch}).state_dict(), tmp_path / "cond.pt")
    torch.save(NoisyClassifier(image_size=64, **SMALL).state_dict(), tmp_path / "cls.pt")
    images = tmp_path / "images"
    images.mkdir()
    Image.new("RGB", (64, 64), (120, 60, 30)).save(images / "a.png")
    (tmp_path / "labels.txt").write_text("a.png 207\n")
    overrides = [f"model.arch.{k}={v}".replace(" ", "") for k, v in arch.items()]
    common = [
        "model=adm_imagenet256_cond",
        *overrides,
        f"model.checkpoint={tmp_path / 'cond.pt'}",
        f"model.classifier.checkpoint={tmp_path / 'cls.pt'}",
        "model.classifier.arch.model_channels=32",
        "model.classifier.arch.num_head_channels=32",
        "dataset=folder",
        f"dataset.root={images}",
        "dataset.image_size=64",
        "task=sr4_avg",
        "method=ddrm",
        "method.steps=2",
        "logger=none",
        "save_images=false",
    ]
    ok = run_py(
        [*common, f"dataset.labels_file={tmp_path / 'labels.txt'}", f"hydra.run.dir={tmp_path}/a"],
        WANDB_MODE="disabled",
    )
    assert ok.returncode == 0, ok.stderr[-2000:]
    assert "ddrm | sr4_avg | folder | 1 images" in ok.stdout
    unlabelled = run_py([*common, f"hydra.run.dir={tmp_path}/b"], WANDB_MODE="disabled")
    assert unlabelled.returncode == 2
    assert (
        unlabelled.stderr.strip()
        .splitlines()[-1]
        .startswith("error: model adm_imagenet256_cond needs each image's ImageNet class")
    )
    assert not (tmp_path / "b" / "metrics.json").exists()


def test_attention_pool_is_upstreams_qkv_attention():
    """`AttentionPool2d` against guided-diffusion's arithmetic written out: mean position first,
    positional embedding, QKVAttention (q, k, v split first, each scaled by ch^-1/4, softmax),
    the first position projected."""
    from rnsf.denoisers.classifier import AttentionPool2d

    torch.manual_seed(0)
    pool = AttentionPool2d(4, 64, 32, 10)
    x = torch.randn(2, 64, 4, 4)
    seq = torch.cat([x.flatten(2).mean(-1, keepdim=True), x.flatten(2)], dim=-1)
    seq = seq + pool.positional_embedding[None]
    q, k, v = pool.qkv_proj(seq).chunk(3, dim=1)
    heads, ch, length = 2, 32, seq.shape[-1]
    scale = ch**-0.25
    q, k, v = (z.reshape(2 * heads, ch, length) for z in (q * scale, k * scale, v))
    weights = torch.softmax(torch.einsum("bct,bcs->bts", q, k).float(), dim=-1)
    out = torch.einsum("bts,bcs->bct", weights, v).reshape(2, heads * ch, length)
    expected = pool.c_proj(out)[:, :, 0]
    with torch.no_grad():
        assert torch.allclose(pool(x), expected, atol=1e-5)
