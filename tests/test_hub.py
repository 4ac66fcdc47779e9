"""`model=diffusers`: any diffusers UNet2DModel folder or cached Hub id, its scheduler check, and
the key map between the DDPM family of diffusers and the ermongroup checkpoints (DDPMUNet).

Every network is built by diffusers itself from a small config at random weights and saved with
`save_pretrained`; the tests that need diffusers skip when the optional extra is absent.
"""

from __future__ import annotations

import json
import sys

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate

from rnsf.denoisers import DDPMUNet, PretrainedDenoiser
from rnsf.denoisers.diffusers_keys import (
    ddpm_to_diffusers,
    diffusers_config,
    diffusers_to_ddpm,
    key_map,
)
from rnsf.utils.cli import CONF_DIR
from rnsf.utils.errors import UserError

from conftest import run_py

# every feature of the DDPM family (attention level, resampling, skips, nin shortcuts), small
SMALL = dict(resolution=32, ch=32, ch_mult=(1, 2, 2), num_res_blocks=1, attn_resolutions=(16,))
LINEAR = dict(beta_start=1e-4, beta_end=0.02, beta_schedule="linear", num_train_timesteps=1000)


def diffusers():
    return pytest.importorskip("diffusers")


def live(net: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Random weights everywhere (upstream zero-initialises some output convolutions)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(torch.randn(p.shape, generator=generator) * 0.05)
    return net.eval()


def save_model(folder, arch=SMALL, scheduler=LINEAR, seed=0, pipeline=False):
    """A UNet2DModel built by diffusers at random weights, saved as a model (or pipeline) folder
    with its scheduler config; returns the network."""
    lib = diffusers()
    unet = live(lib.UNet2DModel(**diffusers_config(arch)), seed)
    unet_dir = folder / "unet" if pipeline else folder
    unet.save_pretrained(unet_dir)
    if scheduler is not None:
        lib.DDPMScheduler(**scheduler).save_pretrained(folder / "scheduler" if pipeline else folder)
    return unet


def load(path, *overrides):
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        cfg = compose("config", overrides=["model=diffusers", f"model.path={path}", *overrides])
    return instantiate(cfg.model.net)


# -- the preset -----------------------------------------------------------------------------
@pytest.mark.parametrize("pipeline", [False, True], ids=["model folder", "pipeline folder"])
def test_saved_unet_loads_back_through_the_preset(tmp_path, pipeline):
    unet = save_model(tmp_path, pipeline=pipeline)
    assert (
        tmp_path / ("unet" if pipeline else "") / "diffusion_pytorch_model.safetensors"
    ).is_file()
    model = load(tmp_path)
    assert isinstance(model, PretrainedDenoiser)
    assert (model.native_size, model.size_multiple) == (32, 4)
    assert not any(p.requires_grad for p in model.parameters())
    x, t = torch.randn(2, 3, 32, 32), torch.tensor([7, 800])
    with torch.no_grad():
        out = model(x, t)
        torch.testing.assert_close(out, unet(x, t).sample, atol=1e-6, rtol=1e-5)
        assert model.eps(x, 500).shape == x.shape
        assert not torch.allclose(out, model(x, t.flip(0)))


def test_class_conditional_unet_takes_the_class_label(tmp_path):
    lib = diffusers()
    unet = live(lib.UNet2DModel(**diffusers_config(SMALL), num_class_embeds=10))
    unet.save_pretrained(tmp_path)
    lib.DDPMScheduler(**LINEAR).save_pretrained(tmp_path)
    x, t = torch.randn(1, 3, 32, 32), torch.tensor([100])
    with torch.no_grad():
        outs = [load(tmp_path, f"model.class_label={c}")(x, t) for c in (1, 2)]
        ref = unet(x, t, class_labels=torch.tensor([1])).sample
        torch.testing.assert_close(outs[0], ref, atol=1e-6, rtol=1e-5)
    assert not torch.allclose(*outs)
    unlabelled = load(tmp_path)  # each image's class from the dataset: none bound here
    with pytest.raises(Exception, match="class-conditional"):
        unlabelled(x, t)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"prediction_type": "v_prediction"}, "prediction_type v_prediction"),
        ({"beta_schedule": "squaredcos_cap_v2"}, "beta_schedule squaredcos_cap_v2"),
        ({"num_train_timesteps": 4000}, "num_train_timesteps 4000"),
        ({"beta_end": 0.012}, "beta_end 0.012"),
    ],
)
def test_a_scheduler_of_another_diffusion_is_refused(tmp_path, change, message):
    save_model(tmp_path, scheduler={**LINEAR, **change})
    with pytest.raises(Exception) as err:
        load(tmp_path)
    cause = err.value.__cause__ or err.value
    assert isinstance(cause, UserError)
    assert message in str(cause) and "describes another diffusion" in str(cause)
    assert "\n" not in str(cause)
    assert isinstance(load(tmp_path, "model.check_scheduler=false"), PretrainedDenoiser)


def test_missing_scheduler_incomplete_weights_and_other_models_are_one_line_errors(tmp_path):
    save_model(tmp_path / "bare", scheduler=None)
    with pytest.raises(Exception, match=r"no scheduler_config\.json"):
        load(tmp_path / "bare")
    save_model(tmp_path / "cut")
    from safetensors.torch import load_file, save_file

    weights = tmp_path / "cut" / "diffusion_pytorch_model.safetensors"
    state = load_file(weights)
    del state["conv_out.bias"]  # diffusers would initialise it at random, with a warning
    save_file(state, weights)
    with pytest.raises(Exception, match=r"do not fit its config\.json: 1 missing keys \(conv_out"):
        load(tmp_path / "cut")
    save_model(tmp_path / "other")
    config = json.loads((tmp_path / "other" / "config.json").read_text())
    config["layers_per_block"] = 2  # the weights are of a 1-block network
    (tmp_path / "other" / "config.json").write_text(json.dumps(config))
    with pytest.raises(Exception, match=r"cannot load the UNet2DModel .* size mismatch"):
        load(tmp_path / "other")
    with pytest.raises(Exception, match="holds no UNet2DModel"):
        load(tmp_path / "bare" / "..")  # a folder without config.json
    with pytest.raises(Exception, match="neither a folder nor a Hugging Face Hub id"):
        load(tmp_path / "nowhere")


def test_a_hub_id_is_read_from_the_hugging_face_cache_offline(tmp_path, monkeypatch):
    diffusers()
    from huggingface_hub import constants

    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = tmp_path / "hub" / "models--rnsf-tests--tiny-ddpm"
    unet = save_model(repo / "snapshots" / commit)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    model = load("rnsf-tests/tiny-ddpm")
    x, t = torch.randn(1, 3, 32, 32), torch.tensor([300])
    with torch.no_grad():
        torch.testing.assert_close(model(x, t), unet(x, t).sample, atol=1e-6, rtol=1e-5)
    with pytest.raises(Exception) as err:
        load("rnsf-tests/not-cached")
    cause = err.value.__cause__
    assert isinstance(cause, UserError) and "not in the Hugging Face cache" in str(cause)
    assert "python -m rnsf.download model=diffusers model.path=rnsf-tests/not-cached" in str(cause)


def test_without_diffusers_the_preset_says_how_to_install_it(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "diffusers", None)  # import diffusers -> ImportError
    with pytest.raises(Exception) as err:
        load(tmp_path)
    cause = err.value.__cause__
    assert isinstance(cause, UserError)
    assert str(cause) == (
        "model=diffusers needs the diffusers package: pip install 'rnsf[hub]' "
        "(or pip install diffusers)"
    )


# -- the key map between diffusers' DDPM family and ermongroup's checkpoints ----------------
def test_key_map_covers_the_celebahq_network_one_to_one():
    diffusers()
    from diffusers import UNet2DModel

    arch = dict(resolution=256, ch=128, ch_mult=(1, 1, 2, 2, 4, 4), num_res_blocks=2)
    names = key_map(arch)
    assert len(names) == 450 and len(set(names.values())) == 450
    with torch.device("meta"):
        theirs = UNet2DModel(**diffusers_config(arch)).state_dict()
    assert set(names.values()) == set(theirs)
    assert names["temb.dense.0.weight"] == "time_embedding.linear_1.weight"
    assert names["up.5.upsample.conv.weight"] == "up_blocks.0.upsamplers.0.conv.weight"
    assert names["down.4.attn.1.proj_out.bias"] == "down_blocks.4.attentions.1.to_out.0.bias"
    assert names["mid.attn_1.norm.weight"] == "mid_block.attentions.0.group_norm.weight"
    assert names["up.2.block.2.nin_shortcut.weight"] == "up_blocks.3.resnets.2.conv_shortcut.weight"


def test_an_ermongroup_state_dict_through_the_map_gives_ddpmunets_eps():
    diffusers()
    from diffusers import UNet2DModel

    ours = live(DDPMUNet(**SMALL), seed=3)
    state = ours.state_dict()
    theirs = UNet2DModel(**diffusers_config(SMALL)).eval()
    theirs.load_state_dict(ddpm_to_diffusers(state, SMALL), strict=True)
    x, t = torch.randn(2, 3, 32, 32), torch.tensor([0, 999])
    with torch.no_grad():
        torch.testing.assert_close(theirs(x, t).sample, ours(x, t), atol=2e-5, rtol=1e-4)
    back = diffusers_to_ddpm(theirs.state_dict(), SMALL)
    assert set(back) == set(state)
    assert all(torch.equal(back[k], v) for k, v in state.items())


# -- end to end -----------------------------------------------------------------------------
@pytest.mark.slow
def test_run_py_with_a_diffusers_folder(tmp_path):
    arch = {**SMALL, "resolution": 64}
    save_model(tmp_path / "unet64", arch=arch)
    result = run_py(
        [
            "model=diffusers",
            f"model.path={tmp_path / 'unet64'}",
            "method=ddnm",
            "method.steps=2",
            "dataset.limit=1",
            "logger=none",
            f"hydra.run.dir={tmp_path / 'run'}",
        ],
        WANDB_MODE="disabled",
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "ddnm | sr4 | demo | 1 images" in result.stdout
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["model"] == "diffusers"


def test_download_command_for_the_hub_route(tmp_path, capsys):
    from rnsf import download as dl

    with pytest.raises(SystemExit) as exit_:
        dl.main(["model=diffusers"])
    assert exit_.value.code == 2
    assert "name the model: model=diffusers model.path=OWNER/NAME" in capsys.readouterr().err
    save_model(tmp_path / "local")  # a local folder is only checked
    dl.main(["model=diffusers", f"model.path={tmp_path / 'local'}"])
    assert capsys.readouterr().out.strip() == str(tmp_path / "local")
