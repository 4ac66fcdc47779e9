"""Every option of every config group composes, and the pieces instantiate."""

from __future__ import annotations

import pytest
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate

from rnsf.utils.cli import group_options

from conftest import ROOT

CONF = ROOT / "conf"
GROUPS = [
    "dataset",
    "task",
    "method",
    "schedule",
    "model",
    "tiling",
    "metrics",
    "trainer",
    "logger",
    "debug",
    "objective",
    "search",
]
CASES = [(g, o) for g in GROUPS for o in group_options(g)]
REQUIRED = {  # options that need a value from the user
    ("dataset", "folder"): ["dataset.root=/tmp"],
    ("dataset", "measurements"): ["dataset.root=/tmp"],
}


def test_every_group_has_options():
    for group in ("dataset", "task", "method", "schedule", "model"):
        assert group_options(group), group
    assert {
        "sr4",
        "sr8",
        "sr2",
        "sr4_avg",
        "sr8_avg",
        "colorization",
        "inpaint_box",
        "inpaint_random",
        "denoise",
        "deblur_gauss",
    } <= set(group_options("task"))
    assert {"exp", "linear", "constant", "cosine", "piecewise", "breakpoints"} == set(
        group_options("schedule")
    )
    assert {"pinv", "ddnm", "rnsf"} <= set(group_options("method"))


@pytest.mark.parametrize(("group", "option"), CASES, ids=[f"{g}={o}" for g, o in CASES])
def test_option_composes(group, option):
    overrides = [f"{group}={option}", *REQUIRED.get((group, option), [])]
    with initialize_config_dir(str(CONF), version_base="1.3"):
        cfg = compose("config", overrides=overrides)
    assert cfg.mode in ("test", "predict")
    if group == "task" and option != "inpaint_mask":
        task = instantiate(cfg.task)
        assert task.name == option
    if group == "method":
        method = instantiate(cfg.method)
        assert method.name == option
    if group == "tiling" and option != "none":
        assert instantiate(cfg.tiling).name == option
    if group == "schedule":
        schedule = instantiate(cfg.schedule)
        assert 0.0 <= schedule(0.5) <= 1.0


def test_rnsf_takes_the_schedule_group():
    with initialize_config_dir(str(CONF), version_base="1.3"):
        cfg = compose("config", overrides=["schedule=linear", "schedule.start=0.8"])
    method = instantiate(cfg.method)
    assert method.schedule(1.0) == pytest.approx(0.8)
