"""Command-line hygiene: user mistakes end in one clear line, never in a traceback."""

from __future__ import annotations

import functools
import sys
from pathlib import Path

from rnsf.utils import jobnames  # noqa: F401  (registers the job folder name resolver)
from rnsf.utils.errors import UserError

#: the package's configs: the subpackage rnsf.conf, which is the repository's top-level conf/
#: (src/rnsf/conf links to it), installed or not
CONF_DIR = Path(__file__).resolve().parents[1] / "conf"


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
            discard_refused_job()
            fail(user_message(err))
        except InstantiationException as err:
            cause = err.__cause__
            while isinstance(cause, InstantiationException) and cause.__cause__ is not None:
                cause = cause.__cause__
            if isinstance(cause, UserError | ValueError):
                discard_refused_job()
                fail(user_message(cause))
            raise

    return wrapper


def discard_refused_job() -> None:
    """Remove what Hydra wrote for a job refused before its own first file: when the job's folder
    holds nothing but Hydra's `.hydra/` and the job's log, those go, and the folder if it is then
    empty. A folder with anything else (an earlier run's images, records, config) is left as is."""
    import os
    import shutil

    from hydra.core.hydra_config import HydraConfig

    if os.environ.get("LOCAL_RANK", "0") != "0" or not HydraConfig.initialized():
        return
    hc = HydraConfig.get()
    folder = Path(hc.runtime.output_dir)
    hydra_files = {hc.output_subdir or ".hydra", f"{hc.job.name}.log"}
    if not folder.is_dir() or any(p.name not in hydra_files for p in folder.iterdir()):
        return
    for path in folder.iterdir():
        shutil.rmtree(path) if path.is_dir() else path.unlink()
    folder.rmdir()


def user_message(err: Exception) -> str:
    """The error's own line. An error raised in a DataLoader worker reaches the main process
    re-created with the worker's whole traceback as its text; its last line is the message."""
    text = str(err).strip()
    if "Traceback (most recent call last)" not in text:
        return text
    last = text.splitlines()[-1]
    for prefix in (f"{type(err).__module__}.{type(err).__qualname__}: ", f"{type(err).__name__}: "):
        if last.startswith(prefix):
            return last[len(prefix) :]
    return last


def group_options(group: str, conf_dir: Path = CONF_DIR, extra: list[Path] = ()) -> list[str]:
    """The options of a config group: the package's and those in the `extra` config folders
    (the command line's `hydra.searchpath`)."""
    names = set()
    for root in (conf_dir, *extra):
        folder = Path(root) / group
        if folder.is_dir():
            names.update(p.stem for p in folder.glob("*.yaml"))
    return sorted(names)


def searchpath_overrides(argv: list[str]) -> list[str]:
    """The command line's `hydra.searchpath=[...]` (config folders of the user's own), which
    every compose of the checks below needs too."""
    return [a for a in argv if a.startswith(("hydra.searchpath=", "+hydra.searchpath="))]


def search_dirs(argv: list[str]) -> list[Path]:
    """The folders that `hydra.searchpath` adds (`file://DIR`, relative to the current folder,
    or `pkg://package`)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    dirs = []
    for line in searchpath_overrides(argv):
        (override,) = OverridesParser.create().parse_overrides([line])
        value = override.value()
        for entry in value if isinstance(value, list) else [value]:
            entry = str(entry)
            if entry.startswith("file://"):
                dirs.append(Path(entry[len("file://") :]))
            elif entry.startswith("pkg://"):
                import importlib.resources

                package = entry[len("pkg://") :].replace("/", ".")
                try:
                    dirs.append(Path(str(importlib.resources.files(package))))
                except ModuleNotFoundError:
                    fail(f"hydra.searchpath names pkg://{package}, which does not import")
            else:
                dirs.append(Path(entry))
    return dirs


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
    extra = search_dirs(argv)
    for override in parsed:
        group = override.key_or_group.lstrip("+~")
        options = group_options(group, conf_dir, extra)
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
        check_sweep(argv, conf_dir)
        return
    from hydra import compose, initialize_config_dir

    try:
        with initialize_config_dir(str(conf_dir), version_base="1.3"):
            cfg = compose("config", overrides=[*overrides, *searchpath_overrides(argv)])
            _check_missing(cfg)
    except (HydraException, OmegaConfBaseException) as err:
        fail(str(err).strip().splitlines()[0])
    check_values(cfg)
    check_output_folder(argv, conf_dir)


def check_values(cfg) -> None:
    """Types and ranges of the composed config's knobs (`rnsf.utils.schema`), one line each;
    then the method against the task (`rnsf.engine.checks.precheck`)."""
    from hydra.errors import InstantiationException

    from rnsf.engine.checks import precheck
    from rnsf.utils.schema import check_config

    try:
        check_config(cfg)
        precheck(cfg)
    except UserError as err:
        fail(str(err))
    except InstantiationException as err:  # a constructor's ValueError names the bad value
        cause = err.__cause__
        while isinstance(cause, InstantiationException) and cause.__cause__ is not None:
            cause = cause.__cause__
        if not isinstance(cause, UserError | ValueError):
            raise
        fail(str(cause))


def _app_overrides(argv: list[str]) -> list[str]:
    return [a for a in argv if "=" in a and not a.startswith("-")]


def _hydra_config(argv: list[str], conf_dir: Path, sweep_free: bool = True):
    """The composed config with its `hydra` node, from the command line's non-sweep overrides."""
    from hydra import compose, initialize_config_dir
    from hydra.core.override_parser.overrides_parser import OverridesParser

    overrides = _app_overrides(argv)
    if sweep_free:
        parsed = OverridesParser.create().parse_overrides(overrides)
        overrides = [o.input_line for o in parsed if not o.is_sweep_override()]
    with initialize_config_dir(str(conf_dir), version_base="1.3"):
        return compose("config", overrides=overrides, return_hydra_config=True)


def check_output_folder(argv: list[str], conf_dir: Path = CONF_DIR) -> None:
    """Fail with one line naming the folder when the job's (or the sweep's) output folder cannot
    be created or written, before Hydra tries (and fails with a traceback)."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.errors import HydraException
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    multirun = any(a in ("-m", "--multirun") for a in argv)
    key = "hydra.sweep.dir" if multirun else "hydra.run.dir"
    try:
        cfg = _hydra_config(argv, conf_dir)
        HydraConfig.instance().set_config(cfg)
        folder = Path(str(OmegaConf.select(cfg, key))).expanduser()
    except (HydraException, OmegaConfBaseException, ValueError):
        return  # Hydra reports those itself
    reason = unwritable(folder)
    if reason:
        fail(
            f"cannot write the output folder {folder} ({reason}); "
            f"set {key}=/a/writable/folder (or paths.log_dir=...)"
        )


def unwritable(folder: Path) -> str | None:
    """Why `folder` cannot be created or written (None when it can); nothing is left behind."""
    import os
    import tempfile

    existing = folder.absolute()
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        return f"{existing} is a file"
    try:
        os.rmdir(tempfile.mkdtemp(prefix=".rnsf-probe-", dir=existing))
    except OSError as err:
        return f"{err.strerror}: {existing}"
    return None


def check_sweep(argv: list[str], conf_dir: Path = CONF_DIR) -> None:
    """Compose every job of a basic sweep (the command line's and the config's
    `hydra.sweeper.params`) and check its values, so that a bad value in the tenth job stops
    the sweep before the first one starts; then check the sweep's output folder."""
    from hydra import compose, initialize_config_dir
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    try:
        hydra_cfg = _hydra_config(argv, conf_dir).hydra
        if "BasicSweeper" not in str(hydra_cfg.sweeper.get("_target_", "")):
            return
        params = hydra_cfg.sweeper.get("params") or {}
        lines = [f"{k}={v}" for k, v in params.items()]
        lines += [a for a in _app_overrides(argv) if not a.startswith(("hydra.", "hydra/"))]
        parsed = OverridesParser.create().parse_overrides(lines)
        jobs = [job for batch in BasicSweeper.split_arguments(parsed, None) for job in batch]
        with initialize_config_dir(str(conf_dir), version_base="1.3"):
            for job in jobs:
                cfg = compose("config", overrides=[*job, *searchpath_overrides(argv)])
                _check_missing(cfg)
                check_values(cfg)
    except (HydraException, OmegaConfBaseException) as err:
        fail(str(err).strip().splitlines()[0])
    check_output_folder(argv, conf_dir)


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
