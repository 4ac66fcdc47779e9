"""λ-schedule ablations that search: the searchable schedules, the validation/test split, the
objective a job returns, the test-split evaluation after a sweep, the report's ablation view,
and a real two-trial Optuna sweep through run.py."""

from __future__ import annotations

import json
import math

import pytest
import yaml
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from omegaconf import OmegaConf

from rnsf.ablation import Objective
from rnsf.ablation.evaluate import BASELINES, RESULTS_FILE, split_jobs
from rnsf.data.demo import DEMO_DIR
from rnsf.data.folder import ImageFolder, split_range
from rnsf.report.ablation import best_trial, trials, write_ablation
from rnsf.schedules import BreakpointSchedule, ExpSchedule, PiecewiseSchedule
from rnsf.utils.cli import CONF_DIR
from rnsf.utils.errors import UserError

from conftest import run_py

GRID = [i / 100 for i in range(101)]


def compose_config(*overrides: str, hydra: bool = False):
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        return compose("config", overrides=list(overrides), return_hydra_config=hydra)


# -- schedules ------------------------------------------------------------------------------
def test_breakpoint_schedule_is_piecewise_through_its_four_knots():
    b = BreakpointSchedule(start=0.1, break_1=0.3, level_1=0.9, break_2=0.8, level_2=0.2, end=0.6)
    knots = ((1.0, 0.1), (0.3, 0.9), (0.8, 0.2), (0.0, 0.6))  # breakpoints out of order
    piecewise = PiecewiseSchedule(knots=knots)
    assert all(b(s) == pytest.approx(piecewise(s)) for s in GRID)
    assert (b(1.0), b(0.8), b(0.3), b(0.0)) == pytest.approx((0.1, 0.2, 0.9, 0.6))
    reverse = BreakpointSchedule(**{**vars(b), "reverse": True})
    assert all(reverse(s) == pytest.approx(b(1 - s)) for s in GRID)


def test_breakpoint_defaults_rise_over_the_first_half_like_exp():
    default, exp = instantiate(compose_config("schedule=breakpoints").schedule), ExpSchedule()
    assert default(1.0) == exp(1.0) == 0.0
    assert all(default(s) == exp(s) == 1.0 for s in GRID if s <= 0.5)


def test_exp_rate_changes_only_the_first_quarter():
    assert all(ExpSchedule(rate=5.0)(s) == ExpSchedule()(s) for s in GRID)
    fast = ExpSchedule(rate=20.0)
    assert fast(0.9) == pytest.approx(0.5 * (1 - math.exp(-2.0)))
    assert all(fast(s) == ExpSchedule()(s) for s in GRID if s < 0.75)
    assert instantiate(compose_config("schedule.rate=20").schedule) == fast


@pytest.mark.parametrize("space", ["breakpoints", "exp", "linear", "cosine", "constant"])
def test_search_spaces_name_parameters_of_their_schedule(space):
    cfg = compose_config("experiment=lambda_search", f"search={space}", hydra=True)
    params = cfg.hydra.sweeper.params
    assert params and cfg.hydra.sweeper.direction == "maximize"
    schedule = instantiate(cfg.schedule)
    assert type(schedule).__name__.lower().startswith(space.rstrip("s"))
    for key in params:
        assert key.startswith("schedule.") and key.removeprefix("schedule.") in cfg.schedule


def test_experiment_searches_the_val_split_and_follows_the_objective_direction():
    cfg = compose_config("experiment=lambda_search", hydra=True)
    assert cfg.dataset.split == "val" and cfg.method._target_.endswith("RNSF")
    assert cfg.hydra.sweeper.n_trials == 16 and cfg.hydra.sweeper.sampler.seed == 0
    assert cfg.objective == {"weights": {"psnr": 1.0}, "direction": "maximize"}
    assert "TestSplitEvaluation" in cfg.hydra.callbacks.test_split._target_
    lpips = compose_config("experiment=lambda_search", "objective=lpips", hydra=True)
    assert lpips.hydra.sweeper.direction == "minimize"
    assert lpips.metrics.lpips.required  # a missing backbone stops the job at start-up


# -- the validation / test split ------------------------------------------------------------
def test_val_and_test_are_disjoint_index_ranges_that_keep_global_indices():
    full = ImageFolder(DEMO_DIR, resize="none")
    val = ImageFolder(DEMO_DIR, resize="none", split="val")
    test = ImageFolder(DEMO_DIR, resize="none", split="test")
    assert (val.split_range, test.split_range) == ((0, 8), (8, 16))
    assert val.paths + test.paths == full.paths
    assert [test[i]["index"] for i in range(len(test))] == list(range(8, 16))
    assert test[0]["name"] == full[8]["name"]
    assert (test[0]["image"] == full[8]["image"]).all()
    limited = ImageFolder(DEMO_DIR, resize="none", split="test", val_images=12, limit=2)
    assert [limited[i]["index"] for i in range(len(limited))] == [12, 13]


@pytest.mark.parametrize(
    ("split", "val_images", "match"),
    [("train", None, "dataset.split='train'"), ("val", 16, "val_images=16"), ("test", 0, "=0")],
)
def test_bad_split_settings_are_one_line_errors(split, val_images, match):
    with pytest.raises(UserError, match=match):
        split_range(16, split, val_images)


def test_split_is_recorded_in_the_dataset_description():
    datamodule = instantiate(compose_config("dataset.split=test", "dataset.val_images=10").dataset)
    described = datamodule.describe()
    assert described["split"] == "test" and described["split_range"] == [10, 16]
    assert instantiate(compose_config().dataset).describe()["split"] is None


# -- the objective --------------------------------------------------------------------------
def test_objective_is_the_weighted_sum_of_the_metrics():
    summary = {"psnr": 25.0, "lpips": 0.2, "ssim": 0.7}
    assert Objective({"psnr": 1.0})(summary) == 25.0
    assert Objective({"psnr": 1.0, "lpips": -10.0})(summary) == pytest.approx(23.0)
    assert Objective({"lpips": 1.0}, "minimize")(summary) == pytest.approx(0.2)
    assert Objective({"lpips": 2.0, "psnr": -0.1}, "minimize")(summary) == pytest.approx(-2.1)


@pytest.mark.parametrize(
    ("weights", "direction", "match"),
    [
        ({"lpips": 1.0}, "maximize", "rewards a worse lpips"),
        ({"psnr": 1.0}, "minimize", "rewards a worse psnr"),
        ({"psnr": 1.0}, "up", "direction='up'"),
        ({"sharpness": 1.0}, "maximize", "'sharpness', which is not a metric"),
        ({}, "maximize", "empty"),
        ({"psnr": 0}, "maximize", "non-zero"),
    ],
)
def test_bad_objectives_are_one_line_errors(weights, direction, match):
    with pytest.raises(UserError, match=match):
        Objective(weights, direction)


def test_objective_needs_metrics_the_job_computes():
    assert Objective.from_config(compose_config()) is None
    assert Objective.from_config(compose_config("objective=psnr")).weights == {"psnr": 1.0}
    assert Objective.from_config(compose_config("objective=lpips")).direction == "minimize"
    with pytest.raises(UserError, match=r"metrics\.lpips\.required=true"):
        Objective.from_config(compose_config("objective=lpips", "metrics.lpips.required=false"))
    with pytest.raises(UserError, match="mode=predict"):
        Objective.from_config(
            compose_config(
                "objective=psnr", "mode=predict", "dataset=measurements", "dataset.root=/tmp"
            )
        )
    with pytest.raises(UserError, match=r"computed no lpips, .*alexnet"):
        Objective({"lpips": 1.0}, "minimize")(
            {"lpips": None, "metric_notes": {"lpips": "alexnet weights missing"}}
        )


# -- the test-split jobs --------------------------------------------------------------------
def test_test_jobs_take_the_best_parameters_and_the_baselines():
    task = [
        "experiment=lambda_search",
        "task=inpaint_box",
        "schedule.start=0.3",
        "dataset.split=val",
    ]
    best = {"schedule.start": 0.25, "schedule.reverse": True}
    jobs = split_jobs(task, best, BASELINES)
    assert list(jobs) == ["tuned", "exp", "ddnm", "pinv"]
    assert jobs["tuned"] == [
        "experiment=lambda_search",
        "task=inpaint_box",
        "schedule.start=0.25",
        "schedule.reverse=true",
        "dataset.split=test",
    ]
    assert jobs["exp"] == [
        "experiment=lambda_search",
        "task=inpaint_box",
        "schedule=exp",
        "dataset.split=test",
    ]
    assert jobs["ddnm"][-2:] == ["method=ddnm", "dataset.split=test"]


# -- the report's ablation view -------------------------------------------------------------
def _job(folder, objective, **metrics):
    folder.mkdir(parents=True)
    (folder / "metrics.json").write_text(json.dumps(metrics))
    (folder / "config.yaml").write_text(yaml.safe_dump({"objective": objective}))


def test_ablation_view_of_a_search_folder(tmp_path):
    objective = {"weights": {"psnr": 1.0, "lpips": -10.0}, "direction": "maximize"}
    exp = {"_target_": "rnsf.schedules.ExpSchedule", "rate": 5.0, "reverse": False}
    for n, (psnr, lpips, rate) in enumerate([(24.0, 0.30, 2.0), (24.5, 0.2, 9.0), (25.0, 0.5, 1)]):
        params = {**exp, "rate": rate}
        split = {"split": "val", "split_range": [0, 8]}
        _job(tmp_path / f"trial_{n}", objective, psnr=psnr, lpips=lpips, schedule="exp",
             schedule_params=params, **split)  # fmt: skip
    (tmp_path / RESULTS_FILE).write_text(yaml.safe_dump({"best_params": {"schedule.rate": 9.0}}))
    test = {"split": "test", "split_range": [8, 16], "n_images": 8}
    _job(tmp_path / "test" / "tuned", objective, psnr=26.0, lpips=0.1, **test)
    _job(tmp_path / "test" / "ddnm", objective, psnr=25.5, lpips=0.1, **test)
    frame = trials(tmp_path)
    assert list(frame["trial"]) == [0, 1, 2]
    assert list(frame["objective"]) == pytest.approx([21.0, 22.5, 20.0])
    assert best_trial(frame)["trial"] == 1  # the weighted sum, not PSNR alone
    text = write_ablation(tmp_path, tmp_path / "report")
    assert "best: trial 1, objective 22.5000 on the val split (exp: rate 9" in text
    assert "RNSF (tuned)" in text and "DDNM" in text and "8–15" in text
    for name in ("ablation_trials.csv", "ablation_objective.png", "ablation_lambda.png"):
        assert (tmp_path / "report" / name).stat().st_size > 0
    table = (tmp_path / "report" / "ablation_test.md").read_text()
    assert "| RNSF (tuned) | 25.00       | 26.00  | 0.1000  | test    | 8–15 " in table


# -- a real sweep ---------------------------------------------------------------------------
@pytest.mark.slow
def test_a_two_trial_optuna_sweep_then_the_test_split_then_the_report(tmp_path):
    sweep = tmp_path / "search"
    result = run_py(
        [
            "-m",
            "experiment=lambda_search",
            "search=exp",
            "hydra.sweeper.n_trials=2",
            "method.steps=3",
            "dataset.val_images=2",
            "dataset.limit=2",
            f"hydra.sweep.dir={sweep}",
        ],
        OMP_NUM_THREADS="1",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    best = OmegaConf.load(sweep / RESULTS_FILE)
    assert set(best.best_params) == {"schedule.rate", "schedule.reverse"}
    frame = trials(sweep)
    assert list(frame["trial"]) == [0, 1] and set(frame["split"]) == {"val"}
    # the job returned its PSNR, and Optuna kept the best
    assert best.best_value == pytest.approx(frame["psnr"].max())
    for row in ("tuned", "exp", "ddnm", "pinv"):
        metrics = json.loads((sweep / "test" / row / "metrics.json").read_text())
        assert metrics["split"] == "test" and metrics["split_range"] == [2, 16]
        assert metrics["n_images"] == 2 and metrics["nfe"] == (0 if row == "pinv" else 3)
    tuned = json.loads((sweep / "test" / "tuned" / "metrics.json").read_text())
    assert tuned["schedule_params"]["rate"] == pytest.approx(best.best_params["schedule.rate"])
    assert tuned["schedule_params"]["reverse"] == best.best_params["schedule.reverse"]
    assert json.loads((sweep / "test" / "exp" / "metrics.json").read_text())["schedule_params"] == {
        "_target_": "rnsf.schedules.ExpSchedule",
        "rate": 5.0,
        "reverse": False,
    }
    from rnsf.report.__main__ import main as report

    assert report([str(sweep)]) == 0
    table = (sweep / "report" / "ablation_test.md").read_text()
    assert all(row in table for row in ("RNSF (tuned)", "RNSF (exp)", "DDNM", "A†y"))
    assert (sweep / "report" / "ablation_lambda.png").is_file()
