"""The launchers of `hydra/launcher=submitit_slurm` and `submitit_local`: the submitit plugin's,
with jobs that fail as failed jobs and a sweep that ends with one line per unfinished job.

In the job (`__call__`): the plugin runs each job through Hydra's `run_job`, which turns the
job's exception into a return value that submitit stores as the job's result, so the scheduler
would record a failed job as COMPLETED. Here a failed job writes its error as one line into its
log, stores the failure as its result and exits with status 1 (SLURM: FAILED, exit code 1; a
user error keeps its status 2). A job that stops on a signal (preempted, requeued, interrupted)
is left to submitit and the scheduler: it stores no result, so the sweep waits for its next
attempt.

In the sweep (`launch`): the plugin submits the sweep as one array and collects the results in
order, so the first job that failed, or that submitit gave up on (`timed-out too many times`, a
job killed from outside), ends the sweep with its traceback and the jobs after it go unreported.
Here the sweep waits for every job, prints one `error:` line per job that did not finish (its
number, overrides, reason and folder) and a count, and exits with status 1; rerunning the sweep
in its `hydra.sweep.dir` resumes those jobs.

Hydra takes launchers only from its `hydra_plugins` package: the launcher classes are in
`hydra_plugins/rnsf_launchers`.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from hydra.core.singleton import Singleton
from hydra.core.utils import JobReturn, JobStatus, filter_overrides
from omegaconf import OmegaConf

log = logging.getLogger(__name__)

USER_ERROR_STATUS = 2  #: rnsf.utils.cli.fail's exit status; its line is already in the log


class JobFailed(Exception):
    """A job of the sweep failed; the message is its error's one line."""


def one_line(error: BaseException) -> str:
    """The last line of an error's message, with its type unless rnsf wrote it as one line for
    the user (a bad input, a job without progress, a failure already reduced to its line)."""
    from rnsf.engine.interrupt import NoProgress
    from rnsf.utils.errors import UserError

    lines = str(error).strip().splitlines()
    text = lines[-1] if lines else ""
    if isinstance(error, JobFailed | UserError | NoProgress):
        return text
    return f"{type(error).__name__}: {text}"


# -- in the job ---------------------------------------------------------------------------------
def _store_result(value: JobReturn) -> None:
    """What submitit stores for a job that returns (read by the sweep's `job.results()`), so
    that the sweep need not wait for the scheduler's state of a job that exits non-zero."""
    import submitit
    from submitit.core import utils

    with utils.temporary_save_path(submitit.JobEnvironment().paths.result_pickle) as tmp:
        utils.cloudpickle_dump(("success", value), tmp)


def _last_error_line() -> str:
    """The job's last `error: …` line on stderr (its log), as `rnsf.utils.cli.fail` wrote it."""
    import submitit

    try:
        text = submitit.JobEnvironment().paths.stderr.read_text(errors="replace")
    except OSError:
        text = ""
    errors = [s for s in text.splitlines() if s.startswith("error: ")]
    return errors[-1][len("error: ") :] if errors else f"exit status {USER_ERROR_STATUS}"


# -- in the sweep -------------------------------------------------------------------------------
def job_outcome(job) -> JobReturn | str:
    """A submitted job's JobReturn, or why it has none (the job died, or submitit gave up)."""
    from submitit.core.utils import UncompletedJobError

    try:
        return job.results()[0]
    except UncompletedJobError as err:
        return reason_of(err, job)


def reason_of(err: BaseException, job=None) -> str:
    """One line: the last line of the job's error stream if it has one (a one-line error the
    job printed, without its `error: `), else the error's first line."""
    stderr = job.stderr() if job is not None else None
    lines = [line.strip() for line in (stderr or "").splitlines() if line.strip()]
    if lines:
        return lines[-1].removeprefix("error: ")
    text = str(err).strip() or type(err).__name__
    return text.splitlines()[0]


def unfinished(numbers: Sequence[int], overrides, outcomes: Sequence) -> list[str]:
    """One line per job that did not finish: `error: job <n> [<overrides>] did not finish:
    <reason> (<folder>)`, the folder where the job's return names it."""
    lines = []
    for number, job_overrides, outcome in zip(numbers, overrides, outcomes, strict=True):
        folder = ""
        if isinstance(outcome, JobReturn):
            if outcome.status != JobStatus.FAILED:
                continue
            reason = one_line(outcome._return_value)
            output_dir = outcome.hydra_cfg and OmegaConf.select(
                outcome.hydra_cfg, "hydra.runtime.output_dir"
            )
            folder = f" ({output_dir})" if output_dir else ""
        else:
            reason = outcome
        shown = " ".join(filter_overrides(job_overrides))
        lines.append(f"error: job {number} [{shown}] did not finish: {reason}{folder}")
    return lines


class ReportFailures:
    """Mixed into the plugin's launchers (`hydra_plugins.rnsf_launchers`)."""

    def __call__(self, sweep_overrides: list[str], *args, **kwargs) -> JobReturn:
        """In the job: run it; a failure ends the process with a non-zero status."""
        try:
            ret = super().__call__(sweep_overrides, *args, **kwargs)
        except SystemExit as stop:
            if stop.code == USER_ERROR_STATUS:  # a UserError: its one line is in the log
                failed = JobReturn(overrides=list(sweep_overrides), status=JobStatus.FAILED)
                failed.return_value = JobFailed(_last_error_line())
                _store_result(failed)
            raise  # others: requeued or interrupted, the scheduler decides what follows
        if ret.status == JobStatus.FAILED:
            line = one_line(ret._return_value)
            print(f"error: {line}", file=sys.stderr, flush=True)
            ret.return_value = JobFailed(line)  # picklable, whatever the job raised
            _store_result(ret)
            sys.exit(1)
        return ret

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int):
        """In the sweep: submit the jobs as the plugin does, wait for every one, and end with
        `unfinished`'s lines and exit status 1 when any did not finish."""
        import submitit
        from hydra_plugins.hydra_submitit_launcher.config import BaseQueueConf

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
        if not lines:
            return outcomes
        for line in lines:
            print(line, file=sys.stderr)
        logs = Path(str(self.params["submitit_folder"])).parent
        print(
            f"error: {len(lines)} of {len(jobs)} jobs of the sweep did not finish (the others "
            f"finished); rerun the sweep with hydra.sweep.dir={sweep_dir} to resume them; their "
            f"logs are in {logs}",
            file=sys.stderr,
            flush=True,
        )
        sys.exit(1)
