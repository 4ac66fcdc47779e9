"""The batch in flight at a stop: every method continues it from the saved step to the bytes of
an uninterrupted run; a state of another config is refused; a time limit that leaves a job
without progress ends it instead of requeuing it."""

from __future__ import annotations

import os
import signal
import sys

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import Callback

from rnsf.denoisers import GaussianPrior
from rnsf.engine import interrupt, resume
from rnsf.engine.inflight import Inflight
from rnsf.engine.interrupt import JobInterrupted, StopOnSignal
from rnsf.engine.module import RestorationModule
from rnsf.engine.writer import JobWriter
from rnsf.methods import DAPS, DDNM, DDRM, DPS, RNSF, SSD, DiffPIR, PiGDM, Pinv, REDDiff, SSDPlus
from rnsf.methods.state import SamplerState
from rnsf.operators import BicubicSR, Task
from rnsf.schedules.lambdas import ExpSchedule
from rnsf.utils.errors import UserError

from conftest import ROOT

STEPS = 10
METHODS = {
    "pinv": lambda: Pinv(),
    "ddnm": lambda: DDNM(steps=STEPS),
    "ddnm_time_travel": lambda: DDNM(steps=STEPS, travel_length=2, travel_repeat=2),
    "rnsf": lambda: RNSF(steps=STEPS, schedule=ExpSchedule()),
    "ddrm": lambda: DDRM(steps=STEPS),
    "dps": lambda: DPS(steps=STEPS),
    "ssd": lambda: SSD(steps=STEPS),
    "ssd_plus": lambda: SSDPlus(steps=STEPS, consistency_until=500),
    "pigdm": lambda: PiGDM(steps=STEPS, eta=0.5),  # η > 0: fresh noise in every step
    "reddiff": lambda: REDDiff(steps=STEPS),
    "reddiff_discard_last_step": lambda: REDDiff(steps=STEPS, discard_last_step=True),
    "diffpir": lambda: DiffPIR(steps=STEPS),
    "diffpir_x0": lambda: DiffPIR(steps=STEPS, output="x0"),
    "daps": lambda: DAPS(steps=STEPS, ode_steps=2, langevin_steps=3),
    "daps_last_level": lambda: DAPS(steps=STEPS, ode_steps=2, langevin_steps=3),
}
N_IMAGES, BATCH = 4, 2
#: the step (0-based, of the network evaluations) during which the signal comes; with time
#: travel the stop then falls right before a travel step, which re-noises the carried x̂₀. The
#: others stop at the last step, so that the rerun only returns the carried result (RED-diff's
#: x̃₀ before its last update, DiffPIR's last x̂₀, DAPS's last x₀: DAPS's steps are the
#: network evaluations, 2 per level here, and the last level ends at 9)
STOP_STEP = {
    "ddnm_time_travel": 1,
    "reddiff_discard_last_step": STEPS - 2,
    "diffpir_x0": STEPS - 3,
    "daps_last_level": 7,
}


class Restored(Callback):
    """Keeps each restored image (the tensor, before PNG rounding) by its index."""

    def __init__(self) -> None:
        self.images: dict[int, torch.Tensor] = {}

    def on_test_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0):
        if outputs is not None:
            for b, index in enumerate(outputs["index"]):
                self.images[index] = outputs["images"]["restored"][b].clone()


class SignalAfterBatch(Callback):
    """Sends SIGINT once the first batch is written: the job stops before the next batch."""

    def on_test_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0):
        if batch_idx == 0:
            os.kill(os.getpid(), signal.SIGINT)


def job(folder, method, stop_step: int | None = None) -> tuple[Restored, list[int], bool]:
    """Restore the images the folder has no record of, 2 per batch (sr4 with noise: y draws
    from the generators too). With `stop_step`, SIGINT arrives during step `stop_step` + 1 of
    the second batch (as a user or a scheduler sends it). Returns the restored images, the
    step indices the sampler reported and whether the job stopped."""
    task = Task("sr4", BicubicSR(4), sigma=0.05)
    module = RestorationModule(GaussianPrior(0.0, 0.5), method, task, seed=3)
    inflight = Inflight(folder, "config-a")
    module.inflight = inflight
    seen, batches = [], []

    def step(info):
        seen.append(info.index)
        if stop_step is not None and len(batches) == 2 and info.index == stop_step:
            os.kill(os.getpid(), signal.SIGINT)

    class Batches(Callback):
        def on_test_batch_start(self, *args, **kwargs):
            batches.append(len(seen))

    module.step_callback = step
    restored = Restored()
    extra = [SignalAfterBatch()] if stop_step is not None and method.nfe == 0 else []
    callbacks = [StopOnSignal(), JobWriter(folder, inflight=inflight), restored, Batches()]
    trainer = L.Trainer(
        accelerator="cpu",
        devices=1,
        logger=False,
        callbacks=[*callbacks, *extra],
        enable_progress_bar=False,
        enable_model_summary=False,
        inference_mode=False,
    )
    torch.manual_seed(0)
    images = torch.rand(N_IMAGES, 3, 16, 16) * 2 - 1
    done = resume.finished_indices(folder)
    items = [
        {"image": images[i], "index": i, "name": f"img{i}"}
        for i in range(N_IMAGES)
        if i not in done
    ]
    loader = torch.utils.data.DataLoader(items, batch_size=BATCH)
    stopped = False
    with interrupt.stop_on_signals():
        try:
            trainer.test(module, dataloaders=loader, verbose=False)
        except JobInterrupted:
            stopped = True
    return restored, seen, stopped


@pytest.mark.parametrize("name", list(METHODS))
def test_a_stopped_batch_continues_from_its_step_to_the_same_bytes(tmp_path, name):
    straight, straight_seen, stopped = job(tmp_path / "straight", METHODS[name]())
    assert not stopped and sorted(straight.images) == list(range(N_IMAGES))
    per_batch = straight_seen[: len(straight_seen) // 2]  # the step indices of one batch
    method, stop = METHODS[name](), STOP_STEP.get(name, 3)
    first, _, stopped = job(tmp_path, method, stop_step=stop)
    assert stopped and sorted(first.images) == [0, 1]  # the first batch is done and kept
    saved = tmp_path / "inflight" / "2.pt"
    if method.resumable:
        # the signal came during step `stop` and was read at the end of the next one
        state = torch.load(saved, weights_only=True)
        assert state["indices"] == [2, 3] and state["state"]["step"] >= stop + 2
        assert state["steps"] == method.nfe and len(state["generators"]) == 2
    else:
        assert not saved.exists()

    second, seen, stopped = job(tmp_path, METHODS[name]())
    assert not stopped and sorted(second.images) == [2, 3]
    if method.resumable:  # the rerun's sampler began where the first run stopped
        assert seen == per_batch[per_batch.index(stop) + 2 :]
    else:
        assert seen == list(range(method.nfe))
    assert not (tmp_path / "inflight").exists()  # gone with its batch, and the folder at the end
    for index in range(N_IMAGES):
        image = (first.images | second.images)[index]
        assert torch.equal(image, straight.images[index]), (name, index)


def test_the_protocol_is_opt_in():
    """Every shipped sampler is resumable; the closed form has nothing to save."""
    assert all(METHODS[n]().resumable for n in METHODS if n != "pinv")
    assert not Pinv().resumable


def test_sampler_state_round_trip():
    state = SamplerState()
    x, x0 = torch.randn(2, 3, 4, 4), torch.randn(2, 3, 4, 4)
    state.reached(7, x, x0=x0)
    state.reached(8, x + 1)  # a carried tensor stays until replaced
    again = SamplerState()
    again.load_state_dict(state.state_dict())
    assert again.step == 8 and torch.equal(again.x, x + 1) and torch.equal(again.carry["x0"], x0)


def _save(folder, config: str, indices=(2, 3), step: int = 4) -> Inflight:
    inflight = Inflight(folder, config)
    state = SamplerState()
    state.reached(step, torch.zeros(len(indices), 3, 8, 8))
    generators = [torch.Generator().manual_seed(i) for i in indices]
    inflight.save(list(indices), state, generators, seconds=1.5, steps=10)
    return inflight


def test_a_state_of_another_config_is_refused_in_one_line(tmp_path):
    _save(tmp_path, "config-a")
    assert Inflight(tmp_path, "config-a").steps() == {2: 4}
    with pytest.raises(UserError) as refused:
        Inflight(tmp_path, "config-b").check()
    message = str(refused.value)
    assert "\n" not in message and "2.pt is the sampler state of another config" in message
    assert "config-a" in message and "config-b" in message


def test_a_state_for_another_batch_is_not_used(tmp_path):
    inflight = _save(tmp_path, "config-a", indices=(2, 3))
    assert inflight.load([2, 3, 4, 5], "cpu") is None  # batch size changed: restart the batch
    assert inflight.load([2, 3], "meta") is None  # another kind of device: its generators differ
    saved = inflight.load([2, 3], "cpu")
    assert saved["state"].step == 4 and saved["seconds"] == 1.5


# -- through the engine -------------------------------------------------------------------
def compose(tmp_path, monkeypatch, *overrides: str, job: str = "job"):
    """The job's config as `run.py` composes it, with Hydra's runtime set (as in a job)."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import open_dict

    monkeypatch.syspath_prepend(str(ROOT / "tests"))  # kill_callback
    job_folder = tmp_path / job
    args = ["debug=tiny", "dataset.limit=2", "method.steps=3", f"paths.output_dir={job_folder}"]
    with initialize_config_dir(str(ROOT / "conf"), version_base="1.3"):
        cfg = hydra_compose("config", overrides=[*args, *overrides], return_hydra_config=True)
    monkeypatch.setattr(HydraConfig.instance(), "cfg", None)  # undone after the test
    HydraConfig.instance().set_config(cfg)
    with open_dict(cfg):
        del cfg.hydra
    return cfg, job_folder


def test_the_engine_refuses_a_state_of_another_config_before_writing(tmp_path, monkeypatch):
    from rnsf.engine.run import run

    cfg, folder = compose(tmp_path, monkeypatch)
    _save(folder, "0123456789abcdef", indices=(0, 1))
    with pytest.raises(UserError, match=r"0\.pt is the sampler state of another config"):
        run(cfg)
    assert sorted(p.name for p in folder.iterdir()) == ["inflight"]  # nothing else written


@pytest.mark.slow
def test_the_engine_saves_the_batch_in_flight_and_the_rerun_continues_it(
    tmp_path, monkeypatch, capsys
):
    from test_resume import assert_same_results

    from rnsf.engine.run import run

    four = ("dataset.limit=4", "method.steps=5", "metrics.lpips.enabled=false")
    cfg, straight = compose(tmp_path, monkeypatch, *four, job="straight")
    run(cfg)
    stop = [
        "+callbacks.stop._target_=kill_callback.SignalAtStep",
        "+callbacks.stop.signal=SIGINT",
        "+callbacks.stop.batch=1",
        "+callbacks.stop.step=1",
    ]
    cfg, folder = compose(tmp_path, monkeypatch, *four, *stop)
    with pytest.raises(SystemExit) as exit_:
        run(cfg)
    assert exit_.value.code == 130
    assert resume.finished_indices(folder) == {0, 1}
    saved = torch.load(folder / "inflight" / "2.pt", weights_only=True)
    assert saved["indices"] == [2, 3] and saved["state"]["step"] == 3  # read after step 2
    capsys.readouterr()
    cfg, _ = compose(tmp_path, monkeypatch, *four)  # the same job (callbacks may differ)
    run(cfg)
    assert "Traceback" not in capsys.readouterr().err
    assert not (folder / "inflight").exists()
    assert_same_results(straight, folder)


class FakeSubmitit:
    """submitit's signal handler: it checkpoints and requeues (here: records and exits)."""

    def __init__(self, timed_out: bool) -> None:
        self.timed_out, self.requeued = timed_out, []

    def has_timed_out(self) -> bool:
        return self.timed_out

    def checkpoint_and_try_requeue(self, signum, frame) -> None:
        self.requeued.append(signum)
        sys.exit(144)


@pytest.mark.parametrize("timed_out", [True, False])
def test_a_time_limit_before_any_progress_ends_the_job_without_a_requeue(
    tmp_path, monkeypatch, capsys, timed_out
):
    """The time-limit signal arrives before the first batch's first step ends: no image and no
    step is saved. At the time limit the job ends in one line; on a preemption (the same
    signal, earlier) it is requeued as always."""
    from rnsf.engine.run import run

    monkeypatch.setenv("SUBMITIT_EXECUTOR", "local")
    submitit = FakeSubmitit(timed_out)
    previous = signal.signal(signal.SIGUSR2, submitit.checkpoint_and_try_requeue)
    cfg, folder = compose(
        tmp_path,
        monkeypatch,
        "+callbacks.stop._target_=kill_callback.SignalAtStart",
        "+callbacks.stop.signal=SIGUSR2",
    )
    try:
        if timed_out:
            with pytest.raises(interrupt.NoProgress):
                run(cfg)
        else:
            with pytest.raises(SystemExit) as exit_:
                run(cfg)
            assert exit_.value.code == 144
    finally:
        signal.signal(signal.SIGUSR2, previous)
    lines = capsys.readouterr().out.splitlines()
    if timed_out:
        assert submitit.requeued == []
        (line,) = [s for s in lines if s.startswith(("no progress", "interrupted"))]
        assert line.startswith(f"no progress: the time limit stopped the job in {folder}")
        assert "0 of 2 images done" in line and "before its first batch began" in line
        assert line.endswith("raise hydra.launcher.timeout_min, or lower dataset.batch_size")
    else:
        assert submitit.requeued == [signal.SIGUSR2]
        assert any(s.startswith("interrupted by SIGUSR2: 0 of 2") for s in lines)
    assert not (folder / ".lock").exists()


def test_no_progress_line_names_the_steps_and_their_time(tmp_path):
    line = interrupt.no_progress_line(tmp_path, 0, 8, 2, 1000, 40, 20.0)
    assert "1000 steps per batch of 2, 0.50 s per step" in line
    line = interrupt.no_progress_line(tmp_path, 0, 8, 2, 1000, 0, 95.0)
    assert "its first step took over 95 s" in line


# -- the sweep's summary ------------------------------------------------------------------
class FakeJob:
    def __init__(self, result=None, stderr: str | None = None) -> None:
        self.result, self.err = result, stderr

    def results(self):
        from submitit.core.utils import UncompletedJobError

        if self.result is None:
            raise UncompletedJobError("Job 12_1 has not produced any output (state: FAILED)")
        return [self.result]

    def stderr(self):
        return self.err


def test_the_sweep_summary_has_one_line_per_unfinished_job():
    from hydra.core.utils import JobReturn, JobStatus
    from submitit.core.utils import UncompletedJobError

    from rnsf.engine.sweep import job_outcome, unfinished

    def returned(status, value):
        ret = JobReturn(status=status)
        ret.return_value = value
        return ret

    jobs = [
        FakeJob(returned(JobStatus.COMPLETED, {"psnr": 30.0})),
        FakeJob(returned(JobStatus.FAILED, interrupt.NoProgress("no progress: the time limit …"))),
        FakeJob(returned(JobStatus.FAILED, UncompletedJobError("Job not requeued because: x."))),
        FakeJob(None, stderr="Traceback …\nerror: dataset.root=/nope does not exist\n"),
        FakeJob(None, stderr=None),
    ]
    overrides = [[f"method.steps={n}", "hydra.sweep.dir=s"] for n in range(5)]
    lines = unfinished(range(10, 15), overrides, [job_outcome(j) for j in jobs])
    assert lines == [
        "error: job 11 [method.steps=1] did not finish: no progress: the time limit …",
        "error: job 12 [method.steps=2] did not finish: UncompletedJobError: Job not requeued "
        "because: x.",
        "error: job 13 [method.steps=3] did not finish: dataset.root=/nope does not exist",
        "error: job 14 [method.steps=4] did not finish: Job 12_1 has not produced any output "
        "(state: FAILED)",
    ]


@pytest.mark.slow
def test_a_sweep_whose_jobs_make_no_progress_ends_in_one_line_per_job(tmp_path):
    """submitit_local with a 2-minute limit (so short that submitit counts any signal as the
    time limit; its own signal would come after 90 s): each job sends itself submitit's signal
    before its first batch. Neither is requeued, and the sweep prints one line per job, no
    traceback, and exits with 1."""
    from conftest import run_py

    sweep = tmp_path / "sweep"
    result = run_py(
        [
            "-m",
            "hydra/launcher=submitit_local",
            "hydra.launcher.timeout_min=2",
            "debug=tiny",
            "method.steps=2,3",
            "+callbacks.stop._target_=kill_callback.SignalAtStart",
            "+callbacks.stop.signal=SIGUSR2",
            f"hydra.sweep.dir={sweep}",
        ],
        PYTHONPATH=os.pathsep.join([str(ROOT / "tests"), os.environ.get("PYTHONPATH", "")]),
    )
    assert result.returncode == 1, result.stderr[-3000:]
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    lines = result.stderr.splitlines()
    start = next(i for i, s in enumerate(lines) if s.startswith("error: job 0 ["))
    assert lines[start + 2].startswith(
        "error: 2 of 2 jobs of the sweep did not finish (the others finished); rerun the sweep "
        f"with hydra.sweep.dir={sweep} to resume them"
    ), lines[start + 2]
    for n, line in enumerate(lines[start : start + 2]):
        assert line.startswith(f"error: job {n} [debug=tiny method.steps={n + 2} +callbacks"), line
        assert "did not finish: no progress: the time limit stopped the job in" in line, line
    logs = "\n".join(p.read_text() for p in (sweep / ".submitit").rglob("*_log.*"))
    assert "Requeued" not in logs
