"""Restore images with a frozen diffusion prior.

python run.py [-m] [group=option ...] [key=value ...]
"""

from __future__ import annotations

import sys

import hydra
from omegaconf import DictConfig

from rnsf.engine.lock import refuse_locked_folders
from rnsf.utils.cli import exit_on_user_error, validate_overrides


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
@exit_on_user_error
def main(cfg: DictConfig) -> dict | float:
    from rnsf.ablation import Objective
    from rnsf.engine.run import run

    objective = Objective.from_config(cfg)  # checked before the job writes anything
    summary = run(cfg)
    return summary if objective is None else objective(summary)  # a sweeper's number


if __name__ == "__main__":
    validate_overrides(sys.argv[1:])
    refuse_locked_folders(sys.argv[1:])
    main()
