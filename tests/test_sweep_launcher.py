"""The submitit launchers' failure handling (rnsf.engine.sweep), without a scheduler:
the plugin's launcher is replaced by a stand-in that returns given job returns."""

from __future__ import annotations

import pytest
from hydra.core.utils import JobReturn, JobStatus
from omegaconf import OmegaConf

from rnsf.engine import sweep as sweep_launcher
from rnsf.engine.sweep import JobFailed, ReportFailures


class Plugin:
    """Stands in for the plugin's launcher: `__call__` runs `job`."""

    def __init__(self, job=None, returns=()) -> None:
        self.job, self.returns = job, list(returns)
        self.params = {"submitit_folder": "/data/sweep/.submitit/%j"}

    def __call__(self, sweep_overrides, *args, **kwargs) -> JobReturn:
        return self.job()


class Launcher(ReportFailures, Plugin):
    pass


def job_return(status: JobStatus, value=None, folder: str | None = None) -> JobReturn:
    ret = JobReturn(overrides=["task=sr8"], status=status)
    ret.return_value = value
    if folder:
        ret.hydra_cfg = OmegaConf.create({"hydra": {"runtime": {"output_dir": folder}}})
    return ret


@pytest.fixture
def stored(monkeypatch) -> list[JobReturn]:
    results = []
    monkeypatch.setattr(sweep_launcher, "_store_result", results.append)
    return results


def test_a_failed_job_prints_one_line_stores_it_and_exits_1(stored, capsys):
    def job():
        return job_return(JobStatus.FAILED, RuntimeError("Traceback (most recent call last)\nboom"))

    with pytest.raises(SystemExit) as exit_:
        Launcher(job)(["task=sr8"])
    assert exit_.value.code == 1
    assert capsys.readouterr().err == "error: RuntimeError: boom\n"
    (ret,) = stored
    assert ret.status == JobStatus.FAILED and isinstance(ret._return_value, JobFailed)
    assert str(ret._return_value) == "RuntimeError: boom"


def test_a_user_error_keeps_status_2_and_a_requeue_stores_nothing(stored, monkeypatch):
    monkeypatch.setattr(sweep_launcher, "_last_error_line", lambda: "dataset.root is required")

    def exits(code):
        def job():
            raise SystemExit(code)

        return job

    with pytest.raises(SystemExit) as exit_:
        Launcher(exits(2))(["task=sr8"])
    assert exit_.value.code == 2
    (ret,) = stored
    assert str(ret._return_value) == "dataset.root is required"
    assert ret.overrides == ["task=sr8"]
    for code in (-1, 143):  # submitit's requeue, a SIGTERM: the scheduler decides what follows
        with pytest.raises(SystemExit) as exit_:
            Launcher(exits(code))(["task=sr8"])
        assert exit_.value.code == code and len(stored) == 1


def test_a_finished_job_returns_as_it_is(stored):
    done = job_return(JobStatus.COMPLETED, {"psnr": 30.0})
    assert Launcher(lambda: done)(["task=sr8"]) is done and not stored


def test_the_sweep_names_every_failed_job():
    returns = [
        job_return(JobStatus.COMPLETED, {}),
        job_return(JobStatus.FAILED, JobFailed("cannot read image b.png"), "/data/sweep/1_x"),
        job_return(JobStatus.FAILED, JobFailed("RuntimeError: boom")),
    ]
    lines = sweep_launcher.unfinished(range(3), [["a"], ["b=1"], ["c"]], returns)
    assert lines == [
        "error: job 1 [b=1] did not finish: cannot read image b.png (/data/sweep/1_x)",
        "error: job 2 [c] did not finish: RuntimeError: boom",
    ]
    assert sweep_launcher.unfinished([0], [["a"]], returns[:1]) == []
