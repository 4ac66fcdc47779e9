"""After an Optuna sweep on the validation split: restore the test split with the best schedule
and with the defaults it is compared with.

`TestSplitEvaluation` is a Hydra callback (`hydra.callbacks`, set by `experiment=lambda_search`).
When the sweep ends it reads the sweep's `optimization_results.yaml` and runs one job per row,
each in `<sweep dir>/test/<row>` with the sweep's own overrides and `dataset.split=test`:

- `tuned`: the best parameters found;
- `exp`: RNSF with the paper's schedule;
- `ddnm`: DDNM (λ ≡ 1);
- `pinv`: A†y.

`python -m rnsf.report <sweep dir>` then tables the rows side by side (`rnsf.report.ablation`).
"""

from __future__ import annotations

import logging
import subprocess
import sys
from pathlib import Path

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

log = logging.getLogger(__name__)

#: where the optuna sweeper writes its best parameters, in the sweep folder
RESULTS_FILE = "optimization_results.yaml"
#: the folder of the test-split jobs, in the sweep folder
TEST_DIR = "test"
#: the default rows: name -> overrides on top of the sweep's own
BASELINES = {"exp": ["schedule=exp"], "ddnm": ["method=ddnm"], "pinv": ["method=pinv"]}


def _key(override: str) -> str:
    return OverridesParser.create().parse_override(override).key_or_group.lstrip("+~")


def split_jobs(
    task_overrides: list[str], best_params: dict, baselines: dict[str, list[str]]
) -> dict[str, list[str]]:
    """The overrides of each test-split job. The sweep's overrides are kept except those the
    search set (they come from the best trial or the row) and any `dataset.split`."""
    searched = set(best_params)
    base = [o for o in task_overrides if _key(o) not in searched and _key(o) != "dataset.split"]
    tuned = [f"{k}={_value(v)}" for k, v in best_params.items()]
    jobs = {"tuned": [*base, *tuned]}
    for name, extra in baselines.items():
        replaced = {_key(o) for o in extra}
        # a row that picks another schedule or method drops the sweep's schedule.* settings
        keep = [o for o in base if _key(o) not in replaced and not _key(o).startswith("schedule.")]
        jobs[name] = [*keep, *extra]
    return {name: [*overrides, "dataset.split=test"] for name, overrides in jobs.items()}


def _value(value) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    return str(value)


class TestSplitEvaluation(Callback):
    """Run the test-split jobs when an Optuna sweep ends (see the module docstring)."""

    __test__ = False  # not a pytest class

    def __init__(self, enabled: bool = True, baselines: dict | None = None) -> None:
        self.enabled = enabled
        self.baselines = {k: list(v) for k, v in (baselines or BASELINES).items()}

    def on_multirun_end(self, config: DictConfig, **kwargs) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        results = sweep_dir / RESULTS_FILE
        if not self.enabled or not results.is_file():
            return
        best = dict(OmegaConf.load(results).best_params)
        jobs = split_jobs(list(config.hydra.overrides.task), best, self.baselines)
        log.info(f"best of the search: {best}; restoring the test split with {', '.join(jobs)}")
        failed = []
        for name, overrides in jobs.items():
            out = sweep_dir / TEST_DIR / name
            command = [sys.executable, sys.argv[0], *overrides, f"hydra.run.dir={out}"]
            log.info(f"test split, {name}: {' '.join(overrides)}")
            if subprocess.run(command, check=False).returncode != 0:
                failed.append(name)
        if failed:
            log.error(f"test-split jobs failed: {', '.join(failed)} (see their output above)")
        log.info(f"python -m rnsf.report {sweep_dir}   # the ablation view")
