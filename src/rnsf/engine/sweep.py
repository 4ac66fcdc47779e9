"""How the sweep's submitit launchers (`hydra/launcher=submitit_slurm`, `submitit_local`) end: one
line per job that did not finish, instead of a traceback.

The plugin's launchers (hydra-submitit-launcher, `submitit_launcher.py`) submit the sweep as one
array and then collect the jobs' results in order: the first job that failed, or that submitit
gave up on (`timed-out too many times`, a job killed from outside), ends the sweep with that job's
traceback, and the jobs after it go unreported. `SummarisedLaunch` submits the same way, waits for
every job, prints one line per job that did not finish (its number, overrides and reason) and
exits with status 1; rerunning the sweep in its `hydra.sweep.dir` resumes those jobs. Hydra takes
launchers only from its `hydra_plugins` package: the launchers themselves are in
`hydra_plugins/rnsf_sweep` (`LocalLauncher`, `SlurmLauncher`).
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from hydra.core.singleton import Singleton
from hydra.core.utils import JobReturn, JobStatus, filter_overrides
from hydra_plugins.hydra_submitit_launcher.config import BaseQueueConf
from hydra_plugins.hydra_submitit_launcher.submitit_launcher import BaseSubmititLauncher
from omegaconf import OmegaConf

log = logging.getLogger(__name__)


def job_outcome(job) -> JobReturn | str:
    """A submitted job's JobReturn, or why it has none (the job died, or submitit gave up)."""
    from submitit.core.utils import UncompletedJobError

    try:
        return job.results()[0]
    except UncompletedJobError as err:
        return reason_of(err, job)


def reason_of(err: BaseException, job=None) -> str:
    """One line: the last line of the job's error stream if it has one (a one-line error the
    job printed), else the error's first line."""
    stderr = job.stderr() if job is not None else None
    lines = [line.strip() for line in (stderr or "").splitlines() if line.strip()]
    if lines:
        return lines[-1]
    text = str(err).strip() or type(err).__name__
    return text.splitlines()[0]


def unfinished(numbers: Sequence[int], overrides, outcomes: Sequence) -> list[str]:
    """One line per job that did not finish: `#<number> <overrides>: <reason>`."""
    lines = []
    for number, job_overrides, outcome in zip(numbers, overrides, outcomes, strict=True):
        if isinstance(outcome, JobReturn) and outcome.status != JobStatus.FAILED:
            continue
        if isinstance(outcome, JobReturn):
            error = outcome._return_value  # the exception the job raised
            reason = str(error).strip().splitlines()[0] if str(error).strip() else repr(error)
        else:
            reason = outcome
        lines.append(f"#{number} {' '.join(filter_overrides(job_overrides))}: {reason}")
    return lines


class SummarisedLaunch(BaseSubmititLauncher):
    """The plugin's `launch`, which waits for every job and ends the sweep with `unfinished`."""

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int):
        import submitit

        params = dict(self.params)
        folder, timeouts = params.pop("submitit_folder"), params.pop("max_num_timeout", None)
        extra = {f"{self._EXECUTOR}_max_num_timeout": timeouts} if timeouts is not None else {}
        executor = submitit.AutoExecutor(cluster=self._EXECUTOR, folder=folder, **extra)
        base = set(OmegaConf.structured(BaseQueueConf).keys())  # the others take the prefix
        executor.update_parameters(
            **{k if k in base else f"{self._EXECUTOR}_{k}": v for k, v in params.items()}
        )
        sweep_dir = Path(str(self.config.hydra.sweep.dir))
        sweep_dir.mkdir(parents=True, exist_ok=True)
        if "mode" in self.config.hydra.sweep:
            os.chmod(sweep_dir, mode=int(str(self.config.hydra.sweep.mode), 8))
        log.info(f"Submitit '{self._EXECUTOR}' sweep output dir : {sweep_dir}")
        numbers = [initial_job_idx + i for i in range(len(job_overrides))]
        for number, overrides in zip(numbers, job_overrides, strict=True):
            log.info(f"\t#{number} : {' '.join(filter_overrides(overrides))}")
        state = Singleton.get_state()
        jobs = executor.map_array(
            self,
            [list(o) for o in job_overrides],
            ["hydra.sweep.dir"] * len(numbers),
            numbers,
            [f"job_id_for_{n}" for n in numbers],
            [state] * len(numbers),
        )
        outcomes = [job_outcome(job) for job in jobs]  # waits for every job
        lines = unfinished(numbers, job_overrides, outcomes)
        if lines:
            print(
                f"{len(lines)} of {len(jobs)} jobs of the sweep did not finish (rerun the sweep "
                f"with hydra.sweep.dir={sweep_dir} to resume them):",
                file=sys.stderr,
            )
            for line in lines:
                print(f"  {line}", file=sys.stderr)
            sys.exit(1)
        return outcomes
