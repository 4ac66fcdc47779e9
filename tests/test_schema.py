"""The declared schema of the config's knobs: every shipped option fits it, bad values are one
line naming the key, the value and what it must be, and a user's own classes stay free."""

from __future__ import annotations

import pytest
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from omegaconf import OmegaConf

from rnsf.utils.cli import group_options
from rnsf.utils.errors import UserError
from rnsf.utils.schema import SCHEMA, Choice, Float, Int, check_config

from conftest import ROOT

CONF = ROOT / "conf"
REQUIRED = {"folder": ["dataset.root=/tmp"], "measurements": ["dataset.root=/tmp"]}


def composed(*overrides: str):
    with initialize_config_dir(str(CONF), version_base="1.3"):
        return compose("config", overrides=list(overrides))


GROUPS = ["dataset", "task", "method", "schedule", "model", "metrics", "logger", "table_row"]
CASES = [(g, o) for g in GROUPS for o in group_options(g)]


@pytest.mark.parametrize(("group", "option"), CASES, ids=[f"{g}={o}" for g, o in CASES])
def test_every_shipped_option_fits_the_schema(group, option):
    key = f"+{group}" if group == "table_row" else group
    overrides = [f"{key}={option}", *REQUIRED.get(option, [])]
    check_config(composed(*overrides))


def test_debug_and_experiments_fit_the_schema():
    for option in group_options("experiment"):
        check_config(composed(f"experiment={option}"))
    for method in group_options("method"):  # debug=tiny works for every method (DPS respaced)
        cfg = composed("debug=tiny", f"method={method}")
        check_config(cfg)
        assert instantiate(cfg.method).nfe <= 5, method


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("method.steps=abc", "method.steps must be an integer in [1, 1000], got 'abc'"),
        ("method.steps=0", "method.steps must be an integer in [1, 1000], got 0"),
        ("method.steps=2.5", "method.steps must be an integer in [1, 1000], got 2.5"),
        ("method.steps=true", "method.steps must be an integer in [1, 1000], got True"),
        ("method.steps=null", "method.steps must be an integer in [1, 1000], got null"),
        ("method.eta=1.5", "method.eta must be a number in [0, 1], got 1.5"),
        ("method.eta=nan", "method.eta must be a number in [0, 1], got nan"),
        (
            "dataset.batch_size=abc",
            "dataset.batch_size must be one of auto or an integer >= 1, got 'abc'",
        ),
        ("dataset.batch_size=0", "dataset.batch_size must be one of auto or an integer >= 1"),
        ("dataset.num_workers=-1", "dataset.num_workers must be an integer >= 0, got -1"),
        ("dataset.limit=0", "dataset.limit must be an integer >= 1 or null, got 0"),
        ("dataset.image_size=big", "dataset.image_size must be an integer >= 1 or null"),
        ("dataset.resize=squash", "dataset.resize must be one of center_crop, resize, none"),
        ("dataset.interpolation=box", "dataset.interpolation must be one of bilinear,"),
        ("dataset.alpha=grey", "dataset.alpha must be one of white, black, refuse"),
        ("task.sigma=-0.1", "task.sigma must be a number >= 0, got -0.1"),
        ("task.operator.factor=0", "task.operator.factor must be an integer >= 1, got 0"),
        ("mode=train", "mode must be one of test, predict, got 'train'"),
        ("seed=-1", "seed must be an integer >= 0, got -1"),
        ("save_images=maybe", "save_images must be true or false, got 'maybe'"),
        ("grid_images=-2", "grid_images must be an integer >= 0, got -2"),
        ("metrics.protocol=int8", "metrics.protocol must be one of float, uint8"),
        ("metrics.lpips.net=resnet", "metrics.lpips.net must be one of alex, vgg, squeeze"),
        ("metrics.fid.dims=100", "metrics.fid.dims must be one of 64, 192, 768, 2048, got 100"),
        ("schedule.reverse=yes", "schedule.reverse must be true or false, got 'yes'"),
        (
            "schedule=piecewise schedule.knots=abc",
            "schedule.knots must be a list of [s, value] pairs with numbers in [0, 1], got 'abc'",
        ),
    ],
)
def test_bad_values_are_one_line(override, message):
    with pytest.raises(UserError) as err:
        check_config(composed(*override.split()))
    assert str(err.value) == message or str(err.value).startswith(message), str(err.value)
    assert "\n" not in str(err.value)


def test_group_specific_ranges():
    with pytest.raises(UserError, match=r"task.operator.keep must be a number in \[0, 1\]"):
        check_config(composed("task=inpaint_random", "task.operator.keep=2"))
    with pytest.raises(UserError, match=r"model.precision must be one of auto, fp32, fp16, bf16"):
        check_config(composed("model=adm_imagenet256", "model.precision=fp8"))
    with pytest.raises(UserError, match=r"model.checkpointing must be true or false"):
        check_config(composed("model=ddpm_celebahq256", "model.checkpointing=sometimes"))
    with pytest.raises(UserError, match=r"model.compile must be true or false or one of auto,"):
        check_config(composed("model=adm_imagenet256", "model.compile=3"))
    check_config(composed("model=adm_imagenet256", "model.compile=max-autotune"))
    check_config(composed("dataset=folder", "dataset.root=/x", "dataset.batch_size=auto"))
    with pytest.raises(UserError, match=r"schedule.level must be a number in \[0, 1\]"):
        check_config(composed("schedule=constant", "schedule.level=-1"))
    check_config(composed("method=pinv"))  # pinv declares its own: steps may be null
    check_config(composed("method=pinv", "method.steps=30"))


class OwnMethod:
    """A user's method with a knob of its own and its own declared range for it."""

    config_schema = {"strength": Float(0, 10), "steps": Int(1, 50)}  # noqa: RUF012

    def __init__(self, steps=10, strength=1.0, flavour="x") -> None:
        pass


def test_own_groups_pass_through_or_declare_their_own_schema():
    cfg = composed()
    OmegaConf.set_struct(cfg, False)
    cfg.method = {"_target_": "test_schema.NoSchema", "steps": 10, "anything": [1, "a"]}
    check_config(cfg)  # unknown knobs pass through; steps is checked by the table
    cfg.method.steps = "many"
    with pytest.raises(UserError, match=r"method\.steps must be an integer"):
        check_config(cfg)
    cfg.method = {"_target_": "test_schema.OwnMethod", "steps": 40, "strength": 5.0}
    check_config(cfg)
    cfg.method.strength = 11
    with pytest.raises(UserError, match=r"method.strength must be a number in \[0, 10\], got 11"):
        check_config(cfg)
    cfg.method.strength = 1
    cfg.method.steps = 100  # its own range replaces the table's
    with pytest.raises(UserError, match=r"method.steps must be an integer in \[1, 50\], got 100"):
        check_config(cfg)


def test_every_enumerated_knob_takes_its_options_and_nothing_else():
    """Each option fits, with its own type only (2048 is not '2048'); anything else is refused
    with a message that lists every option."""
    for key, spec in SCHEMA.items():
        if not isinstance(spec, Choice):
            continue
        assert spec.options, key
        for option in spec.options:
            assert spec.check(option) is None, (key, option)
            twin = str(option) if not isinstance(option, str) else None
            if twin is not None:
                assert spec.check(twin) is not None, (key, twin)
        problem = spec.check("not-an-option")
        assert problem == spec.expected(), key
        assert all(str(option) in problem for option in spec.options), key
        assert (spec.check(None) is None) == spec.nullable, key


@pytest.mark.parametrize(
    ("override", "message"),
    [
        (
            "model.compile=reduce_overhead",
            "model.compile must be true or false or one of auto, default, reduce-overhead, "
            "max-autotune, max-autotune-no-cudagraphs or a torch.compile backend (",
        ),
        ("trainer.devices=0", "trainer.devices must be one of auto, -1 or an integer >= 1 or"),
        ("trainer.devices=[0,0]", "trainer.devices must be one of auto, -1 or an integer"),
        ("+trainer.num_nodes=-1", "trainer.num_nodes must be an integer >= 1, got -1"),
        ("trainer.accelerator=quantum", "trainer.accelerator must be one of auto, gpu, cpu,"),
        ("trainer.precision=8", "trainer.precision must be one of 64, 32, 16, "),
        ("trainer.precision=bf16-fast", "trainer.precision must be one of 64, 32, 16, "),
        # nested: the loader that consumes the value declares it (config_schema)
        ("model.net.precision=fp64", "model.net.precision must be one of auto, fp32, fp16, bf16"),
        ("model.net.compile=fast", "model.net.compile must be true or false or one of auto,"),
        ("model.net.channels_last=maybe", "model.net.channels_last must be true or false"),
        # an interpolation that cannot be resolved
        ("method.steps=${nope}", "method.steps=${nope} cannot be resolved (InterpolationKeyError"),
        ("model.precision=${oops:x}", "model.precision=${oops:x} cannot be resolved ("),
    ],
)
def test_schema_holes_are_one_line_errors(override, message):
    with pytest.raises(UserError) as err:
        check_config(composed("model=adm_imagenet256", override))
    assert str(err.value).startswith(message), str(err.value)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize(
    "override",
    [
        "trainer.devices=[0,1]",
        "trainer.devices=auto",
        "trainer.devices=-1",
        "trainer.devices=2",
        "trainer.accelerator=gpu",
        "trainer.accelerator=cuda",
        "trainer.precision=bf16-mixed",
        "trainer.precision=32",
        "+trainer.num_nodes=2",
        "model.compile=aot_eager",
        "model.compile=max-autotune-no-cudagraphs",
        "model.compile=false",
        "model.net.precision=bf16",
    ],
)
def test_values_lightning_and_torch_accept_pass(override):
    check_config(composed("model=adm_imagenet256", override))


def test_nested_runtime_options_are_checked_for_every_loader():
    for model in ("tiny", "ddpm_celebahq256", "diffusers"):
        extra = ["model.path=/x"] if model == "diffusers" else []
        with pytest.raises(UserError, match=r"model\.net\.precision must be one of auto"):
            check_config(composed(f"model={model}", *extra, "model.net.precision=fp64"))
