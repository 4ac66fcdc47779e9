"""The `rnsf` command (also `python -m rnsf` and the checkout's `python run.py`): one restoration
job, or a sweep with `-m`, from any folder.

    rnsf [-m] [group=option ...] [key=value ...]

The configs ship inside the package (`pkg://rnsf.conf`, the repository's top-level `conf/`);
`hydra.searchpath=[file://DIR]` adds a folder of your own config groups, and the current folder
is importable, so that `_target_: my_module.MyMethod` finds your code there.
"""

from __future__ import annotations

import os
import sys

import hydra
from omegaconf import DictConfig

from rnsf.engine.lock import refuse_locked_folders
from rnsf.utils.cli import exit_on_user_error, validate_overrides


@hydra.main(version_base="1.3", config_path="pkg://rnsf.conf", config_name="config")
@exit_on_user_error
def job(cfg: DictConfig) -> dict | float:
    from rnsf.ablation import Objective
    from rnsf.engine.run import run

    objective = Objective.from_config(cfg)  # checked before the job writes anything
    summary = run(cfg)
    return summary if objective is None else objective(summary)  # a sweeper's number


def main() -> None:
    """Check the command line, then run the job(s)."""
    if os.getcwd() not in sys.path:  # as `python -m`: modules of the current folder import
        sys.path.insert(0, os.getcwd())
    validate_overrides(sys.argv[1:])
    refuse_locked_folders(sys.argv[1:])
    job()
