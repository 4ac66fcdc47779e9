"""The paper's tables as experiments: every sweep point of `experiment=rnsf_table*` composes to
the right method, steps, operator, metrics, dataset and model, and the grid is exactly the set of
cells the paper prints (reference/paper_tables.csv). Nothing is run."""

from __future__ import annotations

import csv
from functools import cache

import pytest
from hydra import compose, initialize_config_dir
from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.utils import instantiate
from omegaconf import DictConfig

from rnsf.data.reference import COLUMNS, PAPER_TABLES, load_reference
from rnsf.utils.cli import group_options
from rnsf.utils.errors import UserError

from conftest import ROOT

CONF = ROOT / "conf"
#: experiment -> (dataset, model, number of jobs)
EXPERIMENTS = {
    "rnsf_table1_celebahq": ("celebahq_1k", "ddpm_celebahq256", 36),
    "rnsf_table1_celebahq_dps": ("celebahq_1k", "ddpm_celebahq256", 3),
    "rnsf_table2_imagenet": ("imagenet_1k", "adm_imagenet256", 36),
    "rnsf_table2_imagenet_dps": ("imagenet_1k", "adm_imagenet256", 3),
}
TABLES = {"celebahq_1k": "rnsf_table1_celebahq", "imagenet_1k": "rnsf_table2_imagenet"}
#: table row -> (method, steps, network evaluations per image)
ROWS = {
    "pinv": ("pinv", None, 0),
    "dps": ("dps", 1000, 1000),
    "ddrm_100": ("ddrm", 100, 100),
    "ddrm_30": ("ddrm", 30, 31),
    "ddnm_100": ("ddnm", 100, 100),
    "ddnm_30": ("ddnm", 30, 30),
    "ssd_100": ("ssd", 100, 99),
    "ssd_30": ("ssd", 30, 29),
    "rnsf_100": ("rnsf", 100, 100),
    "rnsf_30": ("rnsf", 30, 30),
    "ddrm_20": ("ddrm", 20, 20),
}
#: task -> (operator class, its defining attributes)
OPERATORS = {
    "sr4": ("BicubicSR", {"factor": 4}),
    "sr8": ("BicubicSR", {"factor": 8}),
    "deblur_gauss_ssd": ("UpstreamDeblurring", {"taps": 9, "sigma": 15.0}),
    "colorization": ("Colorization", {}),
}


def _compose(overrides: list[str]) -> DictConfig:
    with initialize_config_dir(str(CONF), version_base="1.3"):
        return compose("config", overrides=overrides, return_hydra_config=True)


@cache
def sweep_points(experiment: str) -> tuple[tuple[str, ...], ...]:
    """The jobs of `python run.py -m experiment=NAME`, expanded by Hydra's basic sweeper from
    the experiment's `hydra.sweeper.params`."""
    params = _compose([f"experiment={experiment}"]).hydra.sweeper.params
    parsed = OverridesParser.create().parse_overrides([f"{k}={v}" for k, v in params.items()])
    (batch,) = BasicSweeper.split_arguments(parsed, None)
    return tuple(tuple(job) for job in batch)


@cache
def point_config(experiment: str, point: tuple[str, ...]) -> DictConfig:
    return _compose([f"experiment={experiment}", *point])


def cells(experiment: str) -> set[tuple]:
    """(method, steps, task) of every job of the experiment."""
    out = set()
    for point in sweep_points(experiment):
        cfg = point_config(experiment, point)
        method = instantiate(cfg.method)
        out.add((method.name, method.steps, cfg.task.name))
    return out


def test_table_rows_are_a_config_group():
    assert set(group_options("table_row")) == set(ROWS)
    assert set(EXPERIMENTS) <= set(group_options("experiment"))


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_every_sweep_point_composes_to_its_cell(experiment):
    dataset, model, jobs = EXPERIMENTS[experiment]
    points = sweep_points(experiment)
    assert len(points) == len(set(points)) == jobs
    for point in points:
        overrides = dict(p.split("=", 1) for p in point)
        assert set(overrides) == {"table_row", "task"}
        cfg = point_config(experiment, point)
        method_name, steps, nfe = ROWS[overrides["table_row"]]
        assert cfg.hydra.runtime.choices.method == method_name
        method = instantiate(cfg.method)
        assert (method.name, method.steps, method.nfe) == (method_name, steps, nfe), point
        if method_name == "rnsf":
            assert cfg.hydra.runtime.choices.schedule == "exp"
            assert cfg.schedule.get("reverse", False) is False
        task = instantiate(cfg.task)
        cls, attributes = OPERATORS[overrides["task"]]
        assert task.name == overrides["task"] and task.sigma == 0.0
        assert type(task.operator).__name__ == cls
        assert {k: getattr(task.operator, k) for k in attributes} == attributes
        assert cfg.dataset.name == dataset and cfg.dataset.num_images == 1000
        assert cfg.model.name == model
        assert cfg.metrics.protocol == "uint8"
        assert cfg.metrics.lpips.net == "vgg"
        assert cfg.metrics.fid.enabled is True
        assert cfg.hydra.launcher._target_.endswith("BasicLauncher")  # no launcher hard-wired
        assert TABLES[dataset] in cfg.hydra.sweep.dir


@pytest.mark.parametrize("dataset", TABLES)
def test_the_grid_is_the_papers_table(dataset):
    table = TABLES[dataset]
    jobs = cells(table) | cells(f"{table}_dps")
    printed = {
        (r["method"], r["steps"], r["task"]) for r in load_reference() if r["dataset"] == dataset
    }
    assert jobs == printed
    assert len(jobs) == 39  # 10 rows x 4 tasks, DPS colorization N/A
    assert ("dps", 1000, "colorization") not in jobs


def test_a_single_run_is_rnsf_100():
    cfg = _compose(["experiment=rnsf_table2_imagenet"])
    method = instantiate(cfg.method)
    assert (method.name, method.steps) == ("rnsf", 100)
    assert cfg.dataset.list_file == "imagenet_val_1k"


def test_the_slurm_launcher_takes_the_grid_unchanged():
    base = _compose(["experiment=rnsf_table1_celebahq"])
    cfg = _compose(
        [
            "experiment=rnsf_table1_celebahq",
            "hydra/launcher=submitit_slurm",
            "hydra.launcher.partition=gpu",
        ]
    )
    assert cfg.hydra.launcher._target_.endswith("SlurmLauncher")
    assert cfg.hydra.launcher.partition == "gpu"
    assert cfg.hydra.sweeper.params == base.hydra.sweeper.params


def test_a_command_line_sweep_narrows_the_grid():
    cfg = _compose(["experiment=rnsf_table1_celebahq", "table_row=ddnm_30", "task=sr8"])
    method = instantiate(cfg.method)
    assert (method.name, method.steps, cfg.task.name) == ("ddnm", 30, "sr8")


# --- the published numbers ---------------------------------------------------------------


def test_reference_csv_has_the_agreed_columns():
    with PAPER_TABLES.open(newline="") as f:
        header = next(csv.reader(f))
    assert tuple(header) == COLUMNS
    # reference/ at the top of the repository holds the same file
    assert (ROOT / "reference" / "paper_tables.csv").read_bytes() == PAPER_TABLES.read_bytes()


def test_reference_rows_parse_to_numbers_and_none():
    rows = load_reference()
    assert len(rows) == 78
    for row in rows:
        assert set(row) == set(COLUMNS)
        assert row["table"] in (1, 2)
        assert row["dataset"] == ("celebahq_1k" if row["table"] == 1 else "imagenet_1k")
        assert row["method"] in {m for m, _, _ in ROWS.values()}
        assert row["task"] in OPERATORS
        assert row["ssim"] is None  # not printed
        assert isinstance(row["psnr"], float) and isinstance(row["lpips"], float)
        assert (row["fid"] is None) == (row["task"] == "colorization")
        assert (row["steps"] is None) == (row["method"] == "pinv")


def _cell(rows, table, method, task, steps):
    (row,) = [
        r
        for r in rows
        if (r["table"], r["method"], r["task"], r["steps"]) == (table, method, task, steps)
    ]
    return row


def test_reference_holds_the_printed_values():
    rows = load_reference()
    rnsf_sr4 = _cell(rows, 1, "rnsf", "sr4", 100)
    assert (rnsf_sr4["psnr"], rnsf_sr4["fid"], rnsf_sr4["lpips"]) == (28.74, 32.08, 0.202)
    pinv_sr8 = _cell(rows, 1, "pinv", "sr8", None)
    assert (pinv_sr8["psnr"], pinv_sr8["fid"], pinv_sr8["lpips"]) == (24.77, 153.86, 0.460)
    deblur = _cell(rows, 2, "rnsf", "deblur_gauss_ssd", 100)
    assert (deblur["psnr"], deblur["fid"], deblur["lpips"]) == (40.32, 3.03, 0.039)
    ddnm_sr8 = _cell(rows, 2, "ddnm", "sr8", 30)
    assert (ddnm_sr8["psnr"], ddnm_sr8["fid"], ddnm_sr8["lpips"]) == (23.53, 74.60, 0.414)
    ssd_color = _cell(rows, 2, "ssd", "colorization", 100)
    assert (ssd_color["psnr"], ssd_color["lpips"]) == (35.40, 0.215)
    assert "stray" in ssd_color["note"] and "FID" in ssd_color["note"]
    dps_deblur = _cell(rows, 2, "dps", "deblur_gauss_ssd", 1000)
    assert "identical to Table 1" in dps_deblur["note"]


def test_load_reference_rejects_bad_files(tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text(",".join(COLUMNS) + "\n1,celebahq_1k,rnsf,sr4,100,28.7x,,,,\n")
    with pytest.raises(UserError, match=r"line 2: psnr='28.7x' is not a number"):
        load_reference(bad)
    bad.write_text("table,method\n1,rnsf\n")
    with pytest.raises(UserError, match=r"lacks the columns"):
        load_reference(bad)
    with pytest.raises(UserError, match=r"does not exist"):
        load_reference(tmp_path / "none.csv")
    good = tmp_path / "mine.csv"
    good.write_text(",".join(COLUMNS) + "\n1,celebahq_1k,rnsf,sr4,,28.5,,,,\n")
    (row,) = load_reference(good)
    assert row["psnr"] == 28.5 and row["steps"] is None and row["note"] is None
