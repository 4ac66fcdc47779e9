"""Against a real SLURM controller: the local one-node cluster of `scripts/slurm_local.sh`
(slurmctld, slurmd, slurmdbd on MariaDB, munge). The sweeps go through the launcher preset for
real clusters (`hydra/launcher=submitit_slurm`), changed only where this cluster differs: its
partition, no GPU (so one task per job), one core per task (the node has as many as the
machine). Skipped, with the reason, where no such cluster runs; `.ci/run` starts one (and sets
RNSF_SLURM_REQUIRED=1, which turns the skip into a failure).

Every job is tiny (debug=tiny: two images, five steps); every wait is bounded and fails with
what it waited for and the job's log.
"""

from __future__ import annotations

import itertools
import json
import os
import re
import shlex
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

import pandas as pd
import pytest
import yaml
from test_resume import TESTS_PATH, assert_same_results

from conftest import ROOT

pytestmark = [pytest.mark.slurm, pytest.mark.slow]

SCRIPT = ROOT / "scripts" / "slurm_local.sh"
PRESET = ROOT / "conf" / "hydra" / "launcher" / "submitit_slurm.yaml"
LOCAL = [
    "hydra/launcher=submitit_slurm",
    "hydra.launcher.partition=debug",
    "hydra.launcher.gpus_per_node=null",
    "hydra.launcher.tasks_per_node=1",
    "hydra.launcher.cpus_per_task=1",
]
TINY = ["debug=tiny", "dataset.batch_size=1"]  # two images, one per batch
# the first attempt waits for a stop signal after its first image (tests/slurm_callbacks.py)
WAIT = ["+callbacks.wait._target_=slurm_callbacks.WaitForSignal"]
SWEEP_S = 900  #: the longest any sweep of these tests may take on a busy 2-core machine


# -- the cluster and its commands -----------------------------------------------------------
@pytest.fixture(scope="module")
def env() -> dict[str, str]:
    """The environment of the jobs (sbatch passes the submitter's on): the cluster's config,
    one thread per process (byte-equal results across process counts), tests/ importable."""
    status = subprocess.run(
        ["bash", str(SCRIPT), "status"], capture_output=True, text=True, timeout=60
    )
    if status.returncode != 0:
        reason = (
            "no local SLURM cluster runs: start one with `scripts/slurm_local.sh start` (as "
            "root; it installs Debian's slurm-wlm, munge and MariaDB if missing)"
        )
        if os.environ.get("RNSF_SLURM_REQUIRED") == "1":
            pytest.fail(f"{reason}\n{status.stdout}{status.stderr}")
        pytest.skip(reason)
    line = subprocess.run(["bash", str(SCRIPT), "env"], capture_output=True, text=True).stdout
    return {
        **os.environ,
        "SLURM_CONF": line.strip().split("=", 1)[1],
        "OMP_NUM_THREADS": "1",
        "WANDB_MODE": "offline",
        "WANDB_SILENT": "true",
        "HYDRA_FULL_ERROR": "0",
        "PYTHONPATH": TESTS_PATH,
    }


def slurm(env, *command: str, timeout: float = 60) -> str:
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, f"{shlex.join(command)}: {done.stderr}"
    return done.stdout


def sacct(env, job: str, duplicates: bool = False) -> list[dict]:
    """The allocations of `job` (an array's id gives all its elements; steps left out), in the
    order sacct lists them; with `duplicates`, every attempt of a requeued job."""
    fields = "JobID,State,ExitCode,Submit,Start,End"
    out = slurm(env, "sacct", "-n", "-P", "-X", "-j", job, "-o", fields, *["-D"] * duplicates)
    return [dict(zip(fields.split(","), line.split("|"), strict=True)) for line in out.splitlines()]


def settled(env, job: str, timeout: float = 120) -> list[dict]:
    """`sacct(job)` once no allocation of it is still pending or running (the sweep returns
    when the jobs' results are written, a moment before SLURM records their end)."""
    deadline = time.monotonic() + timeout
    while True:
        rows = sacct(env, job)
        if rows and not {r["State"] for r in rows} & {"PENDING", "RUNNING", "COMPLETING"}:
            return rows
        assert time.monotonic() < deadline, f"job {job} not ended in sacct: {rows}"
        time.sleep(1)


def seconds(stamp: str) -> float:
    return datetime.fromisoformat(stamp).timestamp()  # sacct's local time


def start_sweep(args: list[str], env) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, str(ROOT / "run.py"), "-m", *LOCAL, *args],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def finish(proc: subprocess.Popen, sweep: Path, timeout: float = SWEEP_S) -> tuple[str, str]:
    """The sweep's output once it returns; a sweep still running after `timeout` is stopped
    and the test fails with its jobs' logs."""
    try:
        return proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        _out, err = proc.communicate()
        pytest.fail(f"sweep still running after {timeout:.0f} s\n{err[-2000:]}\n{logs(sweep)}")


def run_sweep(args: list[str], env, sweep: Path) -> tuple[int, str, str]:
    proc = start_sweep([*args, f"hydra.sweep.dir={sweep}"], env)
    out, err = finish(proc, sweep)
    return proc.returncode, out, err


def array_id(sweep: Path) -> str:
    """The SLURM id of the sweep's array (submitit's folder of the sbatch script); submitit
    submits a sweep of one job as a plain job, and this is then its id."""
    (job,) = [p.name for p in (sweep / ".submitit").iterdir() if p.name.isdigit()]
    return job


def logs(sweep: Path, job: str = "") -> str:
    """The submitit logs (stdout and stderr of every task) of `job`'s folder, or of all."""
    folder = sweep / ".submitit"
    files = sorted(folder.glob(f"{job or '*'}/*_log.*")) if folder.is_dir() else []
    return "\n".join(f"== {p.name}\n{p.read_text()}" for p in files)


def wait_until(condition, what: str, proc: subprocess.Popen, sweep: Path, timeout=300.0):
    deadline = time.monotonic() + timeout
    while not condition():
        if proc.poll() is not None:
            _out, err = proc.communicate()
            pytest.fail(f"the sweep ended before {what}\n{err[-2000:]}\n{logs(sweep)}")
        if time.monotonic() > deadline:
            pytest.fail(f"not {what} after {timeout:.0f} s\n{logs(sweep)}")
        time.sleep(0.2)


def wait_for_first_image(proc, sweep: Path) -> tuple[str, Path]:
    """(SLURM id, folder) of the one job of `sweep` once its first image is done (it then waits
    for a signal: WAIT)."""
    wait_until(
        lambda: (
            (sweep / ".submitit").is_dir()
            and any(p.name.isdigit() for p in (sweep / ".submitit").iterdir())
        ),
        "submitted",
        proc,
        sweep,
    )
    job = array_id(sweep)

    def first_image() -> bool:
        folders = [p for p in sweep.glob("0_*") if (p / "rows" / "0.json").is_file()]
        return bool(folders) and (folders[0] / ".lock").is_file()

    wait_until(first_image, f"job {job} done with its first image", proc, sweep)
    (folder,) = sweep.glob("0_*")
    return job, folder


@pytest.fixture(scope="module")
def straight(env, tmp_path_factory) -> Path:
    """The uninterrupted one-process job that every SLURM job of TINY must equal."""
    folder = tmp_path_factory.mktemp("straight") / "job"
    done = subprocess.run(
        [sys.executable, str(ROOT / "run.py"), *TINY, f"hydra.run.dir={folder}"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=SWEEP_S,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return folder


def job_dirs(sweep: Path) -> list[Path]:
    return sorted(p for p in sweep.iterdir() if p.is_dir() and p.name[0].isdigit())


# -- 1. the mission's sweep ---------------------------------------------------------------
def test_mission_sweep_runs_on_slurm_and_is_reported(env, tmp_path):
    sweep = tmp_path / "sweep"
    args = ["schedule=exp,linear", "task=sr4,sr8", "debug=tiny"]
    rc, _out, err = run_sweep(args, env, sweep)
    returned = time.time()
    assert rc == 0, f"{err[-3000:]}\n{logs(sweep)}"
    job = array_id(sweep)
    rows = settled(env, job)
    assert sorted(r["JobID"] for r in rows) == [f"{job}_{i}" for i in range(4)], rows
    assert {r["State"] for r in rows} == {"COMPLETED"}, rows
    # the scheduler's overhead: submission to start (jobs that found a free core at once),
    # and the last job's end to the sweep's return
    waits = sorted(seconds(r["Start"]) - seconds(r["Submit"]) for r in rows)
    end_to_result = returned - max(seconds(r["End"]) for r in rows)
    written = max(p.stat().st_mtime for p in (sweep / ".submitit").rglob("*_result.pkl"))
    print(
        f"slurm overhead: submit to start {waits[0]:.0f} s; last job's end (sacct) to the sweep's "
        f"return {end_to_result:.0f} s, its result written to the return {returned - written:.1f} s"
    )
    assert waits[0] <= 30 and end_to_result <= 120, (waits, end_to_result)

    report = subprocess.run(
        [sys.executable, "-m", "rnsf.report", str(sweep)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert report.returncode == 0, report.stderr[-2000:]
    assert "4 jobs" in report.stdout, report.stdout
    results = pd.read_csv(sweep / "report" / "results.csv")
    assert sorted(zip(results["task"], results["schedule"], strict=True)) == [
        ("sr4", "exp"),
        ("sr4", "linear"),
        ("sr8", "exp"),
        ("sr8", "linear"),
    ]
    assert (results["n_images"] == 2).all()


# -- 2. one job on two tasks --------------------------------------------------------------
def test_one_job_on_two_slurm_tasks_equals_one_process(env, straight, tmp_path):
    sweep = tmp_path / "sweep"
    rc, _out, err = run_sweep(
        [*TINY, "trainer=ddp_cpu", "hydra.launcher.tasks_per_node=2"], env, sweep
    )
    assert rc == 0, f"{err[-3000:]}\n{logs(sweep)}"
    job = array_id(sweep)  # one job: not an array
    (folder,) = job_dirs(sweep)
    assert_same_results(straight, folder, ignore={"world_size"})
    assert json.loads((folder / "metrics.json").read_text())["world_size"] == 2
    # the ranks are SLURM's two tasks of one step (srun), each with its own log; none of them
    # started another process (rank 1 has SLURM_PROCID=1, not a launcher's LOCAL_RANK)
    settled(env, job)
    steps = slurm(env, "sacct", "-n", "-P", "-j", job, "-o", "JobID,NTasks,State")
    assert f"{job}.0|2|COMPLETED" in steps.splitlines(), steps
    rank1 = (sweep / ".submitit" / job / f"{job}_1_log.out").read_text()
    assert "global_rank=1(2)" in rank1, rank1  # submitit's JobEnvironment, from SLURM_PROCID
    assert "GLOBAL_RANK: 1, MEMBER: 2/2" in logs(sweep, job)  # Lightning's DDP over the two


# -- 3. preemption ------------------------------------------------------------------------
@pytest.mark.parametrize("how", ["signal", "requeue"])
def test_preempted_job_is_requeued_and_resumes_to_the_same_result(env, straight, tmp_path, how):
    """`scancel --signal=USR2`: submitit's preemption signal, through the scheduler, to the job
    step; the job stops after its first image and submitit requeues it. `scontrol requeue`: the
    scheduler stops the job (SIGTERM) and requeues it itself."""
    sweep = tmp_path / "sweep"
    proc = start_sweep([*TINY, *WAIT, f"hydra.sweep.dir={sweep}"], env)
    job, folder = wait_for_first_image(proc, sweep)
    if how == "signal":
        slurm(env, "scancel", "--signal=USR2", job)
    else:
        slurm(env, "scontrol", "requeue", job)
    _out, err = finish(proc, sweep)
    log = logs(sweep, job)
    assert proc.returncode == 0, f"{err[-3000:]}\n{log}"
    signal = "SIGUSR2" if how == "signal" else "SIGTERM"
    assert f"interrupted by {signal}: 1 of 2 images are done" in log, log
    assert "SLURM_RESTART_COUNT=0" in log and "SLURM_RESTART_COUNT=1" in log, log
    assert "1 images done by an earlier run are skipped" in log, log
    settled(env, job)
    attempts = sacct(env, job, duplicates=True)
    assert [a["State"] for a in attempts] == ["REQUEUED", "COMPLETED"], attempts
    assert_same_results(straight, folder)


# -- 4. the time limit ----------------------------------------------------------------------
def test_job_at_its_time_limit_is_signalled_requeued_and_completes(env, straight, tmp_path):
    """The preset's `signal_delay_s` (the README's value) before a 3-minute limit: the signal
    comes about a minute into the first attempt, which waits for it after its first image."""
    delay = yaml.safe_load(PRESET.read_text())["signal_delay_s"]
    sweep = tmp_path / "sweep"
    proc = start_sweep(
        [*TINY, *WAIT, "hydra.launcher.timeout_min=3", f"hydra.sweep.dir={sweep}"], env
    )
    job, folder = wait_for_first_image(proc, sweep)
    _out, err = finish(proc, sweep)
    log = logs(sweep, job)
    assert proc.returncode == 0, f"{err[-3000:]}\n{log}"
    script = sweep / ".submitit" / job / f"{job}_submission.sh"
    assert f"#SBATCH --signal=USR2@{delay}\n" in script.read_text()
    assert "this job is timed-out" in log and "interrupted by SIGUSR2" in log, log
    assert "SLURM_RESTART_COUNT=1" in log, log
    settled(env, job)
    attempts = sacct(env, job, duplicates=True)
    assert attempts[0]["State"] == "REQUEUED" and attempts[-1]["State"] == "COMPLETED", attempts
    # the first attempt stopped on the signal, before its limit
    assert seconds(attempts[0]["End"]) - seconds(attempts[0]["Start"]) < 180, attempts
    assert_same_results(straight, folder)


def test_batch_longer_than_an_allocation_continues_over_several_to_the_same_images(env, tmp_path):
    """One batch (two images) that needs more time than one allocation of a 1-minute limit: its
    first signal comes before the batch finishes, the batch is saved at its last step, and each
    requeued attempt continues from the step the one before saved, until the job finishes with
    the images of a run that was never stopped. (The case that made no progress in 4 attempts
    while a stopped batch restarted from its first step.)"""
    # slurmctld checks time limits every 30 s and signals at the first check that is less than
    # `delay` + 30 s before the limit: 25-55 s into an allocation, after the job's start (10-20
    # s) and its first steps. Each attempt samples for 5-45 s of the batch's 48 s (or more).
    steps, sleep_s, delay = 160, 0.3, 5
    job_args = ["debug=tiny", f"method.steps={steps}"]
    sweep = tmp_path / "sweep"
    slow = [
        "+callbacks.slow._target_=slurm_callbacks.SlowSteps",
        f"+callbacks.slow.seconds={sleep_s}",
    ]
    limit = [
        "hydra.launcher.timeout_min=1",
        f"hydra.launcher.signal_delay_s={delay}",
        "hydra.launcher.max_num_timeout=8",
    ]
    proc = start_sweep([*job_args, *slow, *limit, f"hydra.sweep.dir={sweep}"], env)
    reference = tmp_path / "straight"
    straight = subprocess.run(
        [sys.executable, str(ROOT / "run.py"), *job_args, f"hydra.run.dir={reference}"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=SWEEP_S,
    )
    assert straight.returncode == 0, straight.stderr[-2000:]
    _out, err = finish(proc, sweep)
    job = array_id(sweep)
    log = logs(sweep, job)
    assert proc.returncode == 0, f"{err[-3000:]}\n{log}"
    script = (sweep / ".submitit" / job / f"{job}_submission.sh").read_text()
    assert "#SBATCH --time=1\n" in script and f"#SBATCH --signal=USR2@{delay}\n" in script
    # the first signal came before the batch finished: nothing done, the batch saved
    assert "interrupted by SIGUSR2: 0 of 2 images are done" in log, log
    assert "no progress" not in log, log
    saved = [int(s) for s in re.findall(r"images 0-1 saved at sampler step (\d+)", log)]
    resumed = [int(s) for s in re.findall(r"images 0-1 continue from sampler step (\d+)", log)]
    assert saved and resumed == saved, log  # each attempt went on from the step saved last
    assert saved == sorted(set(saved)) and saved[-1] < steps, saved
    restarts = [int(s) for s in re.findall(r"SLURM_RESTART_COUNT=(\d+)", log)]
    assert restarts == list(range(len(saved) + 1)), restarts
    settled(env, job)
    attempts = sacct(env, job, duplicates=True)
    states = [a["State"] for a in attempts]
    assert states == ["REQUEUED"] * len(saved) + ["COMPLETED"], attempts
    (folder,) = job_dirs(sweep)
    assert not (folder / "inflight").exists() or not any((folder / "inflight").iterdir())
    assert_same_results(reference, folder)
    print(f"{len(attempts)} attempts, saved at steps {saved} of {steps}")


# -- 5. failures ---------------------------------------------------------------------------
def test_sweep_with_a_value_the_schema_refuses_stops_before_submitting(env, tmp_path):
    sweep = tmp_path / "sweep"
    rc, _out, err = run_sweep(["debug=tiny", "task=sr4,sr8", "method.steps=5,0"], env, sweep)
    assert rc == 2, err[-2000:]
    (line,) = err.strip().splitlines()[-1:]
    assert line.startswith("error:") and "method.steps" in line, err[-2000:]
    assert not sweep.exists()  # nothing written, nothing submitted


def test_failed_members_of_a_sweep_are_named_and_the_others_finish(env, tmp_path):
    """Three folders: two demo images (finishes), one whose second image is truncated (a user
    error, found when the job reads its images), one whose restoration raises."""
    from PIL import Image

    demo = sorted((ROOT / "src" / "rnsf" / "data" / "demo").glob("*.png"))[:2]
    roots = {name: tmp_path / name for name in ("good", "broken", "raising")}
    for name, root in roots.items():
        root.mkdir()
        for i, src in enumerate(demo):
            Image.open(src).save(root / ("boom.png" if name == "raising" and i else f"{i}.png"))
    (roots["broken"] / "1.png").write_bytes((roots["broken"] / "1.png").read_bytes()[:200])
    sweep = tmp_path / "sweep"
    args = [
        "debug=tiny",
        "dataset=folder",
        "dataset.image_size=64",
        "dataset.num_workers=0",
        "dataset.root=" + ",".join(str(r) for r in roots.values()),
        "+callbacks.fail._target_=slurm_callbacks.FailOnImage",
        "+callbacks.fail.name=boom",
    ]
    rc, _out, err = run_sweep(args, env, sweep)
    assert rc == 1, f"{err[-3000:]}\n{logs(sweep)}"
    print(err[-1500:])
    # the refused job leaves no folder (as a refused single run); the raising one no metrics
    good, raising = job_dirs(sweep)
    assert "dataset.root=good," in good.name and "dataset.root=raising," in raising.name
    assert json.loads((good / "metrics.json").read_text())["n_images"] == 2
    assert not (raising / "metrics.json").exists()
    # the sweep names each failed job, with its error, and counts them
    summary = [s for s in err.splitlines() if s.startswith("error:")]
    assert summary[-1].startswith(
        "error: 2 of 3 jobs of the sweep did not finish (the others finished)"
    ), err
    assert any(s.startswith("error: job 1 [") and "1.png" in s for s in summary), summary
    assert any(
        s.startswith("error: job 2 [") and "went wrong" in s and s.endswith(f"({raising})")
        for s in summary
    ), summary
    # each failed job: one error line in its log, no traceback, FAILED in sacct
    job = array_id(sweep)
    for element, expected in ((1, "1.png"), (2, "RuntimeError: restoring boom went wrong")):
        log = logs(sweep, f"{job}_{element}")
        errors = [s for s in log.splitlines() if s.startswith("error:")]
        assert len(errors) == 1 and expected in errors[0], log
        assert "Traceback" not in log, log
    states = {r["JobID"]: (r["State"], r["ExitCode"]) for r in settled(env, job)}
    assert states == {
        f"{job}_0": ("COMPLETED", "0:0"),
        f"{job}_1": ("FAILED", "2:0"),
        f"{job}_2": ("FAILED", "1:0"),
    }, states


# -- 6. the throttle ----------------------------------------------------------------------
def test_array_parallelism_one_runs_the_jobs_one_after_another(env, tmp_path):
    sweep = tmp_path / "sweep"
    args = [
        "method=pinv",
        "task=sr4,sr8",
        "dataset.limit=1,2",
        "hydra.launcher.array_parallelism=1",
    ]
    rc, _out, err = run_sweep(args, env, sweep)
    assert rc == 0, f"{err[-3000:]}\n{logs(sweep)}"
    job = array_id(sweep)
    assert (
        "#SBATCH --array=0-3%1\n"
        in (sweep / ".submitit" / job / f"{job}_submission.sh").read_text()
    )
    rows = sorted(settled(env, job), key=lambda r: seconds(r["Start"]))
    assert len(rows) == 4 and {r["State"] for r in rows} == {"COMPLETED"}, rows
    for before, after in itertools.pairwise(rows):
        assert seconds(after["Start"]) >= seconds(before["End"]), rows


# -- 7. the job folder's lock under SLURM's job ids -----------------------------------------
def test_lock_lets_a_requeued_attempt_in_and_refuses_another_job(env, tmp_path):
    sweep = tmp_path / "sweep"
    proc = start_sweep([*TINY, *WAIT, f"hydra.sweep.dir={sweep}"], env)
    job, folder = wait_for_first_image(proc, sweep)
    owner = json.loads((folder / ".lock").read_text())
    assert owner["job_id"] == job, owner  # SLURM_JOB_ID (one job: no array), kept by requeues

    # another SLURM job in the same folder stops at once, with one line naming the owner
    other_log = tmp_path / "other.out"
    command = shlex.join([sys.executable, str(ROOT / "run.py"), *TINY, f"hydra.run.dir='{folder}'"])
    other = subprocess.run(
        ["sbatch", "--parsable", "--wait", "-p", "debug", "-o", str(other_log), "--wrap", command],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=SWEEP_S,
    )
    other_id = other.stdout.strip().split(";")[0]
    errors = [s for s in other_log.read_text().splitlines() if s.startswith("error:")]
    assert len(errors) == 1 and "in use by another job" in errors[0], other_log.read_text()
    assert f"job {job})" in errors[0], errors
    (record,) = settled(env, other_id)
    assert record["State"] == "FAILED" and record["ExitCode"] == "2:0", record

    # an earlier attempt of this job left its lock behind on another node (a node that died):
    # the requeued attempt takes it over
    slurm(env, "scontrol", "requeuehold", job)
    wait_until(lambda: not (folder / ".lock").exists(), "the first attempt stopped", proc, sweep)
    left_over = {**owner, "pid": 1, "host": "a-node-that-died", "process_start": None}
    (folder / ".lock").write_text(json.dumps(left_over) + "\n")
    slurm(env, "scontrol", "release", job)
    _out, err = finish(proc, sweep)
    log = logs(sweep, job)
    assert proc.returncode == 0, f"{err[-3000:]}\n{log}"
    assert f"it is an earlier attempt of this job ({job})" in log, log
    assert json.loads((folder / "metrics.json").read_text())["n_images"] == 2
    assert not (folder / ".lock").exists()
