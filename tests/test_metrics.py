"""Metrics: protocols, LPIPS, FID/KID and the weight-file checks.

Pretrained metric weights cannot be downloaded here: random backbones of the exact architectures
are written under the expected file names in a temporary TORCH_HOME, so the real loading and
scoring code runs. The tests assert plumbing (shapes, N, bookkeeping), never the values.
"""

from __future__ import annotations

import csv
import json
import logging
import math
from pathlib import Path
from unittest import mock

import pytest
import torch
import torchvision.models as tvm
from hydra import compose, initialize_config_dir
from torch_fidelity import feature_extractor_inceptionv3 as fidelity_inception

from rnsf.data.images import save_png
from rnsf.engine.run import run
from rnsf.metrics.distribution import fid_kid
from rnsf.metrics.image import psnr, ssim, to_unit
from rnsf.metrics.suite import MetricSuite
from rnsf.metrics.weights import INCEPTION, LPIPS_BACKBONES, checkpoint_dir
from rnsf.utils.errors import UserError

from conftest import ROOT, run_py

PAPER = {
    "protocol": "uint8",
    "lpips": {"enabled": True, "required": True, "net": "vgg"},
    "fid": {"enabled": True, "required": True},
    "kid": {"enabled": True, "required": True, "subset_size": 1000},
}
#: the paper's FID and KID, FID on the 64-d Inception features: the 2048-d matrix square root
#: costs a minute of CPU (the end-to-end test runs it once); no LPIPS
QUICK = {**PAPER, "lpips": {}, "fid": {"enabled": True, "required": True, "dims": 64}}


def random_inception_state() -> dict:
    """torch-fidelity's Inception-v3 with its download disabled: the random initial weights."""
    with (
        mock.patch.object(fidelity_inception, "load_state_dict_from_url", lambda *a, **k: None),
        mock.patch.object(
            fidelity_inception.FeatureExtractorInceptionV3, "load_state_dict", lambda *a, **k: None
        ),
    ):
        net = fidelity_inception.FeatureExtractorInceptionV3("inception-v3-compat", ["2048"])
    return net.state_dict()


@pytest.fixture(scope="session")
def random_weights(tmp_path_factory) -> Path:
    """A TORCH_HOME whose hub/checkpoints holds random AlexNet, VGG16 and Inception files."""
    home = tmp_path_factory.mktemp("torch_home")
    folder = home / "hub" / "checkpoints"
    folder.mkdir(parents=True)
    for net, build in (("alex", tvm.alexnet), ("vgg", tvm.vgg16)):
        state = build(weights=None).state_dict()
        # LPIPS reads only `features`; a broadcast zero classifier keeps the file small
        state = {
            k: v if k.startswith("features.") else torch.zeros(()).expand(v.shape)
            for k, v in state.items()
        }
        torch.save(state, folder / LPIPS_BACKBONES[net].name)
    torch.save(random_inception_state(), folder / INCEPTION.name)
    return home


@pytest.fixture
def torch_home(random_weights, monkeypatch) -> Path:
    monkeypatch.setenv("TORCH_HOME", str(random_weights))
    return random_weights


@pytest.fixture
def empty_torch_home(tmp_path, monkeypatch) -> Path:
    home = tmp_path / "empty_torch_home"
    monkeypatch.setenv("TORCH_HOME", str(home))
    return home


@pytest.fixture(scope="module")
def image_sets(tmp_path_factory, demo_images) -> tuple[Path, list[str]]:
    """A job folder with 8 restored/target PNG pairs (64x64)."""
    out = tmp_path_factory.mktemp("job")
    names = [f"img{i}" for i in range(8)]
    for i, name in enumerate(names):
        save_png(demo_images[i].flip(-1), out / "images" / "restored" / f"{name}.png")
        save_png(demo_images[i], out / "images" / "target" / f"{name}.png")
    return out, names


# -- protocols ---------------------------------------------------------------------------
def test_protocols_differ_unless_the_images_are_already_8_bit(torch_home, demo_images):
    target = demo_images[:2]
    pred = (target + 2 / 255 * torch.randn_like(target)).clamp(-1, 1)
    suite = MetricSuite(lpips={"enabled": True, "required": True, "net": "alex"})
    for metric in (psnr, ssim, lambda a, b, p: suite.lpips(a, b, p)):
        assert not torch.allclose(metric(pred, target, "float"), metric(pred, target, "uint8"))
        quantised = to_unit(pred, "uint8") * 2 - 1
        assert torch.allclose(
            metric(quantised, target, "float"), metric(quantised, target, "uint8"), atol=1e-5
        )


def test_unknown_protocol_and_net_are_user_errors():
    with pytest.raises(UserError, match=r"metrics\.protocol='uint16'"):
        MetricSuite(protocol="uint16")
    with pytest.raises(UserError, match=r"metrics\.lpips\.net='resnet'"):
        MetricSuite(lpips={"enabled": True, "net": "resnet"})
    with pytest.raises(UserError, match=r"metrics\.fid has no key 'enable'"):
        MetricSuite(fid={"enable": True})
    with pytest.raises(UserError, match=r"metrics\.fid\.dims=100"):
        MetricSuite(fid={"dims": 100})


# -- LPIPS -------------------------------------------------------------------------------
@pytest.mark.parametrize("net", ["alex", "vgg"])
def test_lpips_per_image_with_a_frozen_backbone(torch_home, demo_images, net):
    suite = MetricSuite(protocol="uint8", lpips={"enabled": True, "required": True, "net": net})
    assert suite.per_image_keys == ["psnr", "ssim", "lpips"]
    suite.train()
    assert not suite.lpips.training and not suite.lpips.net.training
    assert not any(p.requires_grad for p in suite.parameters())
    target = demo_images[:3]
    pred = target.flip(-1).requires_grad_(True)
    scores = suite.per_image(pred, target)
    assert {k: v.shape for k, v in scores.items()} == dict.fromkeys(scores, torch.Size([3]))
    assert torch.isfinite(scores["lpips"]).all() and not scores["lpips"].requires_grad
    assert suite.per_image(target, target)["lpips"].abs().max() < 1e-6
    summary = suite.summary(Path("unused"), ["a", "b", "c"], torch.device("cpu"))
    assert summary["lpips_net"] == net and summary["metric_protocol"] == "uint8"
    assert "lpips" not in summary["metric_notes"]


# -- FID and KID -------------------------------------------------------------------------
def test_fid_and_kid_over_the_whole_set(torch_home, image_sets):
    out, names = image_sets
    suite = MetricSuite(**QUICK)
    summary = suite.summary(out, names, torch.device("cpu"))
    assert math.isfinite(summary["fid"]) and math.isfinite(summary["kid"])
    assert summary["kid_std"] >= 0
    assert summary["fid_images"] == 8 and summary["fid_dims"] == 64
    assert summary["kid_subset_size"] == 8 and summary["kid_subsets"] == 100  # clamped to N
    assert set(summary["metric_notes"]) == {"lpips"}  # disabled here
    assert not (torch_home / "fidelity_cache").exists()


def test_fid_reads_the_two_sets_it_is_given(torch_home, image_sets):
    out, names = image_sets
    targets = [out / "images" / "target" / f"{n}.png" for n in names]
    same = fid_kid(targets[:4], targets[:4], INCEPTION.path, kid=False, fid_dims=64)["fid"]
    other = fid_kid(targets[:4], targets[4:], INCEPTION.path, kid=False, fid_dims=64)["fid"]
    assert abs(same) < 1e-3 * abs(other)


def test_too_few_images_for_fid_is_null_with_a_reason(torch_home, image_sets):
    out, names = image_sets
    summary = MetricSuite(**PAPER).summary(out, names[:1], torch.device("cpu"))
    assert summary["fid"] is None and summary["kid"] is None and summary["fid_images"] is None
    assert "at least 2 images" in summary["metric_notes"]["fid"]
    assert "at least 2 images" in summary["metric_notes"]["kid"]


# -- missing weights ---------------------------------------------------------------------
def job_config(tmp_path: Path, *overrides: str):
    with initialize_config_dir(str(ROOT / "conf"), version_base="1.3"):
        return compose(
            "config",
            overrides=[
                "method=pinv",
                "dataset.limit=2",
                "dataset.batch_size=2",
                "logger=none",
                f"paths.output_dir={tmp_path / 'job'}",
                *overrides,
            ],
        )


def test_missing_required_weights_stop_before_any_image(empty_torch_home, tmp_path):
    cfg = job_config(tmp_path, "metrics=paper")
    with (
        mock.patch("rnsf.engine.module.RestorationModule.test_step") as test_step,
        pytest.raises(UserError) as err,
    ):
        run(cfg)
    message = str(err.value)
    assert "\n" not in message
    cache = str(empty_torch_home / "hub" / "checkpoints")
    for fragment in (cache, LPIPS_BACKBONES["vgg"].name, INCEPTION.name, "download", "https://"):
        assert fragment in message, fragment
    assert "metrics.fid.required=false" in message
    test_step.assert_not_called()
    assert not (tmp_path / "job" / "images").exists()


def test_optional_metrics_without_weights_are_null_with_a_reason(
    empty_torch_home, tmp_path, caplog
):
    assert checkpoint_dir() == empty_torch_home / "hub" / "checkpoints"
    cfg = job_config(tmp_path, "metrics.fid.enabled=true", "metrics.kid.enabled=true")
    with caplog.at_level(logging.WARNING, logger="rnsf.metrics"):
        summary = run(cfg)
    warnings = [r for r in caplog.records if r.name.startswith("rnsf.metrics")]
    assert len(warnings) == 1
    assert LPIPS_BACKBONES["alex"].name in warnings[0].message
    assert INCEPTION.name in warnings[0].message
    written = json.loads((tmp_path / "job" / "metrics.json").read_text())
    assert written["n_images"] == 2 and written["psnr"] is not None
    for key in ("lpips", "fid", "kid", "lpips_net"):
        assert written[key] is None, key
    assert set(written["metric_notes"]) == {"lpips", "fid", "kid"}
    assert LPIPS_BACKBONES["alex"].name in written["metric_notes"]["lpips"]
    assert summary["metric_notes"] == written["metric_notes"]
    with open(tmp_path / "job" / "per_image.csv") as f:
        assert "lpips" not in next(csv.reader(f))


def test_set_metrics_need_the_saved_images(torch_home, tmp_path):
    with pytest.raises(UserError, match="set save_images=true"):
        MetricSuite(**PAPER, save_images=False)
    suite = MetricSuite(fid={"enabled": True}, save_images=False)
    assert "save_images" in suite.notes["fid"] and "disabled" in suite.notes["kid"]


def test_predict_mode_checks_no_weights(empty_torch_home):
    suite = MetricSuite(**PAPER, mode="predict")
    assert suite.lpips is None
    assert all("no ground truth" in suite.notes[k] for k in ("lpips", "fid", "kid"))


def test_damaged_weight_file_is_a_user_error(tmp_path, monkeypatch):
    folder = tmp_path / "hub" / "checkpoints"
    folder.mkdir(parents=True)
    (folder / INCEPTION.name).write_bytes(b"not a checkpoint")
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    with pytest.raises(UserError, match=f"cannot load .*{INCEPTION.name}"):
        MetricSuite(fid={"enabled": True, "required": True})


# -- end to end --------------------------------------------------------------------------
@pytest.mark.slow
def test_paper_metrics_end_to_end(torch_home, tmp_path):
    path = tmp_path / "job"
    args = ["metrics=paper", "method.steps=3", "dataset.limit=2", "dataset.batch_size=2"]
    result = run_py([*args, "logger=none", f"hydra.run.dir={path}"], TORCH_HOME=str(torch_home))
    assert result.returncode == 0, result.stderr[-2000:]
    assert "LPIPS" in result.stdout and "FID" in result.stdout
    metrics = json.loads((path / "metrics.json").read_text())
    for key in ("lpips", "fid", "kid", "kid_std"):
        assert isinstance(metrics[key], float) and math.isfinite(metrics[key]), key
    assert metrics["metric_protocol"] == "uint8" and metrics["lpips_net"] == "vgg"
    assert metrics["fid_images"] == 2 and metrics["fid_dims"] == 2048
    assert metrics["kid_subset_size"] == 2 and metrics["kid_subsets"] == 100
    assert metrics["metric_notes"] == {}
    with open(path / "per_image.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 2 and all(math.isfinite(float(r["lpips"])) for r in rows)
