"""The launchers of `hydra/launcher=submitit_slurm` and `submitit_local`: the submitit plugin's,
with failed jobs that end as failed and a sweep that names them.

The plugin runs each job through Hydra's `run_job`, which turns the job's exception into a
return value that submitit stores as the job's result: the scheduler then records the failed job
as COMPLETED, and the sweep stops at the first failed job it reads with that job's traceback.
Here a failed job writes its error as one line into its log, stores the failure as its result
and exits with status 1 (SLURM: FAILED, exit code 1; a user error keeps its status 2). The sweep
collects every job, prints one line per failed job (number, overrides, error, folder) and a
count, and exits with status 1 when any failed.

A job that stops on a signal (preempted, requeued, interrupted) is left to submitit and the
scheduler: it stores no result, so the sweep waits for its next attempt.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

from hydra.core.utils import JobReturn, JobStatus
from omegaconf import OmegaConf

USER_ERROR_STATUS = 2  #: rnsf.utils.cli.fail's exit status; its line is already in the log


class JobFailed(Exception):
    """A job of the sweep failed; the message is its error's one line."""


def one_line(error: BaseException) -> str:
    lines = str(error).strip().splitlines()
    text = lines[-1] if lines else ""
    return f"{type(error).__name__}: {text}" if not isinstance(error, JobFailed) else text


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


class ReportFailures:
    """Mixed into the plugin's launchers (hydra_plugins.rnsf_launchers: Hydra takes launchers
    only from the hydra_plugins package)."""

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

    def launch(
        self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int
    ) -> Sequence[JobReturn]:
        """In the sweep: every job's return; one line per failed job, then exit status 1."""
        returns = super().launch(job_overrides, initial_job_idx)
        failed = [
            (initial_job_idx + i, r) for i, r in enumerate(returns) if r.status == JobStatus.FAILED
        ]
        if not failed:
            return returns
        for number, ret in failed:
            output_dir = ret.hydra_cfg and OmegaConf.select(
                ret.hydra_cfg, "hydra.runtime.output_dir"
            )
            folder = f" ({output_dir})" if output_dir else ""
            overrides = " ".join(ret.overrides or job_overrides[number - initial_job_idx])
            print(
                f"error: job {number} [{overrides}] failed: {one_line(ret._return_value)}{folder}",
                file=sys.stderr,
            )
        logs = Path(str(self.params["submitit_folder"])).parent
        print(
            f"error: {len(failed)} of {len(returns)} jobs failed (the others finished); "
            f"their logs are in {logs}",
            file=sys.stderr,
            flush=True,
        )
        sys.exit(1)
