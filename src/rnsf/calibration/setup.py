"""The pieces of a calibration run, built the way `run.py` builds them: tasks and methods from
the `task` and `method` config groups (the package's `conf/` and any folder of the user's own
on `hydra.searchpath`), or a method class given by its import path."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from omegaconf import OmegaConf

from rnsf.utils.cli import CONF_DIR, group_options
from rnsf.utils.errors import UserError

#: the methods of the calibration table, in the report's order; those without a config are
#: skipped by default
DEFAULT_METHODS = (
    "pinv",
    "ddnm",
    "rnsf",
    "ddrm",
    "dps",
    "ssd",
    "pigdm",
    "diffpir",
    "reddiff",
    "daps",
)
DEFAULT_TASKS = ("sr4", "inpaint_box", "colorization")


def available_methods(search: Sequence[Path] = ()) -> list[str]:
    """The default methods whose config exists (in the package or the `search` folders)."""
    options = set(group_options("method", CONF_DIR, list(search)))
    return [name for name in DEFAULT_METHODS if name in options]


def _compose(overrides: list[str], search: Sequence[Path]):
    if search:
        paths = ",".join(f"file://{Path(d).resolve()}" for d in search)
        overrides = [*overrides, f"hydra.searchpath=[{paths}]"]
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        return compose("config", overrides=overrides)


def build_task(name: str, sigma: float, search: Sequence[Path] = ()):
    """The `task` preset `name` with noise `sigma` ([0, 1] pixel units)."""
    if name not in group_options("task", CONF_DIR, list(search)):
        options = ", ".join(group_options("task", CONF_DIR, list(search)))
        raise UserError(f"unknown task '{name}'; choose one of: {options}")
    cfg = _compose([f"task={name}", f"task.sigma={sigma}"], search)
    return instantiate(cfg.task)


def build_method(name: str, max_steps: int | None, search: Sequence[Path] = ()):
    """The method preset `name` (a `method` config, or `package.module.Class`), with its
    `steps` capped at `max_steps` when it has a larger one."""
    if name in group_options("method", CONF_DIR, list(search)):
        cfg = _compose([f"method={name}"], search)
        node = cfg.method
    elif "." in name:
        node = OmegaConf.create({"_target_": name})
    else:
        options = ", ".join(group_options("method", CONF_DIR, list(search)))
        raise UserError(
            f"unknown method '{name}'; choose one of: {options}, a config in a --searchpath "
            "folder, or a class by its import path (my_pieces.MyMethod)"
        )
    steps = node.get("steps") if isinstance(node.get("steps", None), int) else None
    if max_steps is not None and steps is not None and steps > max_steps:
        node.steps = max_steps
    return instantiate(node)
