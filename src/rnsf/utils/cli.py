"""Command-line hygiene: user mistakes end in one clear line, never in a traceback."""

from __future__ import annotations

import functools
import sys
from pathlib import Path

from rnsf.utils.errors import UserError

CONF_DIR = Path(__file__).resolve().parents[3] / "conf"


def fail(message: str) -> None:
    print(f"error: {message}", file=sys.stderr)
    sys.exit(2)


def exit_on_user_error(func):
    """Turn a UserError raised by a job into one line on stderr and exit status 2. A bad
    value that a config'd constructor rejects (ValueError) counts as a user error too."""
    from hydra.errors import InstantiationException

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        try:
            return func(*args, **kwargs)
        except UserError as err:
            fail(str(err))
        except InstantiationException as err:
            cause = err.__cause__
            while isinstance(cause, InstantiationException) and cause.__cause__ is not None:
                cause = cause.__cause__
            if isinstance(cause, UserError | ValueError):
                fail(str(cause))
            raise

    return wrapper


def group_options(group: str, conf_dir: Path = CONF_DIR) -> list[str]:
    folder = conf_dir / group
    return sorted(p.stem for p in folder.glob("*.yaml")) if folder.is_dir() else []


def validate_overrides(argv: list[str], conf_dir: Path = CONF_DIR) -> None:
    """Check `group=option` overrides (each value of a sweep too) and, for a single run, that
    the whole config composes, before Hydra starts; exit with one line naming the problem."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    overrides = [a for a in argv if "=" in a and not a.startswith("-")]
    if any(a.startswith("hydra.") or a.startswith("hydra/") for a in overrides):
        overrides = [a for a in overrides if not a.startswith(("hydra.", "hydra/"))]
    try:
        parsed = OverridesParser.create().parse_overrides(overrides)
    except HydraException as err:
        fail(f"cannot parse the overrides {overrides}: {str(err).splitlines()[0]}")
    multirun = any(a in ("-m", "--multirun") for a in argv)
    for override in parsed:
        group = override.key_or_group.lstrip("+~")
        options = group_options(group, conf_dir)
        if not options or override.is_delete():
            continue
        values = (
            [str(v) for v in override.sweep_iterator()]
            if override.is_sweep_override()
            else [str(override.value())]
        )
        for value in values:
            if value not in options and value != "null":
                fail(f"unknown {group} '{value}'; choose one of: {', '.join(options)}")
    if multirun or any(o.is_sweep_override() for o in parsed):
        return
    from hydra import compose, initialize_config_dir

    try:
        with initialize_config_dir(str(conf_dir), version_base="1.3"):
            cfg = compose("config", overrides=overrides, return_hydra_config=False)
            _check_missing(cfg)
    except (HydraException, OmegaConfBaseException) as err:
        fail(str(err).strip().splitlines()[0])


def _check_missing(cfg) -> None:
    """Name the first required value (`???`) that the command line left unset."""
    for key in _missing_keys(cfg):
        fail(f"{key} is required; pass {key}=VALUE on the command line")


def _missing_keys(node, prefix: str = ""):
    from omegaconf import DictConfig

    for key in node:
        child = node._get_node(key)
        if child._is_missing():
            yield f"{prefix}{key}"
        elif isinstance(child, DictConfig):
            yield from _missing_keys(child, f"{prefix}{key}.")
