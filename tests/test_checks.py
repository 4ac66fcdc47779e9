"""Start-up checks: every method against every task, with and without measurement noise.

Each pair either restores (on an analytic prior, a few steps) or is refused by `Method.check`
with one line; a refused pair is one that `restore` could not run, so the checks neither miss a
failure nor refuse a pair that works. End to end, a refused pair stops `run.py` before any folder
exists, for a single run and for a sweep.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from omegaconf import OmegaConf

from rnsf.denoisers import FiniteSetPrior
from rnsf.engine import checks
from rnsf.utils.cli import CONF_DIR, group_options
from rnsf.utils.errors import UserError
from rnsf.utils.random import image_generators

from conftest import run_py

METHODS = group_options("method")
TASKS = group_options("task")
NOISE = 0.05  # task.sigma, [0, 1] pixel units
#: the pairs the checks refuse: DDRM needs an SVD; DDNM+ (DDNM, RNSF with noise) too
REFUSED = {
    ("ddrm", "oldphoto", 0.0),
    ("ddrm", "oldphoto", NOISE),
    ("ddnm", "oldphoto", NOISE),
    ("rnsf", "oldphoto", NOISE),
}


#: few steps: the matrix shows that each pair runs, not how well
FAST = {
    "ddnm": {"steps": 2},
    "rnsf": {"steps": 2},
    "ddrm": {"steps": 2},
    "ssd": {"forward_steps": 2, "backward_steps": 2},
    "ssd_plus": {"forward_steps": 2, "backward_steps": 2},
}
#: the methods whose refused pairs `REFUSED` lists in full; a method added to conf/method/
#: joins the matrix at once, and its refusals are checked for being one line and necessary
PINNED = {"pinv", "ddnm", "rnsf", "ddrm", "dps", "ssd", "ssd_plus"}


#: the dataset at the mask file's size, for the command-line check
AT_32 = ("dataset.resize=center_crop", "dataset.image_size=32")


def fast_params(method_name: str) -> dict:
    """Few steps for the matrix: `FAST`, else `steps: 2` for a method whose config has an
    integer `steps` (DPS's is set after construction, see `build`)."""
    if method_name in FAST or method_name == "dps":
        return FAST.get(method_name, {})
    steps = load_method(method_name).get("steps")
    return {"steps": 2} if isinstance(steps, int) and steps > 2 else {}


@pytest.fixture(scope="module")
def mask_file(tmp_path_factory):
    """A mask for `task=inpaint_mask` (its path is required): the left half is kept."""
    path = tmp_path_factory.mktemp("mask") / "mask.npy"
    mask = np.zeros((32, 32), dtype=np.float32)
    mask[:, :16] = 1
    np.save(path, mask)
    return path


@functools.cache
def _compose(task: str, mask: str, overrides: tuple[str, ...] = ()):
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        extra = [f"task.operator.path={mask}"] if task == "inpaint_mask" else []
        return compose("config", overrides=[f"task={task}", *extra, *overrides])


def compose_task(task: str, mask: Path, *overrides: str):
    return _compose(task, str(mask), overrides)


def build(cfg, method_name: str, sigma: float, **params):
    """The task (with noise `sigma`) and the method preset `method_name` of the config."""
    task = instantiate(cfg.task, sigma=sigma)
    node = OmegaConf.create({"schedule": cfg.schedule, "method": load_method(method_name)})
    method = instantiate(node.method, **params)
    if method.name == "dps" and "steps" not in params:
        method.steps = 2  # DPS runs all 1000 steps; two show that the pair runs
    return task, method


def load_method(name: str):
    return OmegaConf.load(CONF_DIR / "method" / f"{name}.yaml")


@pytest.mark.parametrize("sigma", [0.0, NOISE])
@pytest.mark.parametrize("task_name", TASKS)
@pytest.mark.parametrize("method_name", METHODS)
def test_every_method_on_every_task_restores_or_is_refused_in_one_line(
    method_name, task_name, sigma, small_set, mask_file
):
    """The pair restores two images on an analytic prior, or `Method.check` refuses it in one
    line naming the task and the method; then `restore` could not have run it, and the
    command-line check that runs before Hydra writes anything (`checks.precheck`) stops it
    with the same line."""
    x = small_set[:2]
    prior = FiniteSetPrior(x)
    cfg = compose_task(task_name, mask_file)
    task, method = build(cfg, method_name, sigma, **fast_params(method_name))
    generators = image_generators(0, [0, 1], "cpu")
    operator, y = task.measure(x, generators)
    try:
        params = checks.check_method(method, task, operator)
    except UserError as err:
        message = str(err)
        assert "\n" not in message and f"task {task_name}:" in message, message
        assert f"method {method.name}" in message, message
        if method_name in PINNED:
            assert (method_name, task_name, sigma) in REFUSED, message
            assert "SVD" in message, message
        with pytest.raises(UserError):  # restore itself refuses the pair
            method.restore(y, operator, prior, generators, sigma_y=task.sigma_model)
        pair = (f"method={method_name}", f"task.sigma={sigma}")
        full = compose_task(task_name, mask_file, *pair, *AT_32)
        with pytest.raises(UserError) as before:
            checks.precheck(full)
        assert str(before.value) == message
        return
    assert method_name not in PINNED or (method_name, task_name, sigma) not in REFUSED
    assert isinstance(params, dict)
    x_hat = method.restore(y, operator, prior, generators, sigma_y=task.sigma_model)
    assert x_hat.shape == x.shape and torch.isfinite(x_hat).all(), method_name


@pytest.mark.parametrize(
    "method_name, task_name, expected",
    [
        ("dps", "inpaint_box", {"scale": 0.5}),  # ζ of the official inpainting config
        ("dps", "sr4", {"scale": 0.3}),
        ("ssd", "colorization", {"insert_step": 750, "noise_eta": 0.8}),  # t₀, inversion η
        ("ssd", "sr4", {"insert_step": 550, "noise_eta": 0.4}),
        ("ssd_plus", "inpaint_random", {"insert_step": 550, "consistency_until": 200}),
        ("ddnm", "sr4", {"eta": 0.85, "steps": 100}),
    ],
)
def test_describe_resolves_the_per_task_values(method_name, task_name, expected, mask_file):
    task, method = build(compose_task(task_name, mask_file), method_name, 0.0)
    operator = task.operator.bind((1, 3, 64, 64), image_generators(0, [0], "cpu"))
    params = checks.check_method(method, task, operator)
    assert {key: params[key] for key in expected} == expected


@pytest.mark.slow
def test_refused_pair_stops_before_any_folder_exists(tmp_path):
    single = run_py(["method=ddrm", "task=oldphoto", f"hydra.run.dir={tmp_path / 'job'}"])
    sweep = run_py(
        [
            "-m",
            "method=ddnm,ddrm",
            "task=sr4,oldphoto",
            f"hydra.sweep.dir={tmp_path / 'sweep'}",
        ]
    )
    for result in (single, sweep):
        assert result.returncode == 2, result.stderr[-2000:]
        errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
        assert len(errors) == 1 and "task oldphoto: method ddrm needs" in errors[0]
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow
def test_metrics_json_records_what_the_method_used(tmp_path):
    args = ["debug=tiny", "method=ssd", "method.steps=30", "task=colorization", "logger=none"]
    result = run_py([*args, "dataset.limit=1", f"hydra.run.dir={tmp_path}"])
    assert result.returncode == 0, result.stderr[-2000:]
    params = json.loads((tmp_path / "metrics.json").read_text())["method_params"]
    assert params["insert_step"] == 750 and params["noise_eta"] == 0.8
    assert (params["forward_steps"], params["backward_steps"]) == (5, 25)
