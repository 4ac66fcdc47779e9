"""rnsf.report: tidy collection, the paper layout, reference rows, files and the CLI."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from rnsf.report import collect, paper_table, with_reference, write_report
from rnsf.report.__main__ import main
from rnsf.report.figures import choose_axis

from conftest import ROOT, run_py


def job(root, name, **fields):
    """A job folder with a metrics.json (and the config.yaml every job writes)."""
    base = {
        "method": "ddnm",
        "task": "sr4",
        "dataset": "demo",
        "model": "tiny",
        "schedule": None,
        "schedule_params": None,
        "steps": 100,
        "nfe": 100,
        "n_images": 16,
        "psnr": 25.0,
        "ssim": 0.7,
        "consistency": 1e-3,
        "metric_protocol": "float",
        "seed": 0,
    }
    base.update(fields)
    folder = root / name
    folder.mkdir(parents=True)
    (folder / "config.yaml").write_text("seed: 0\n")
    (folder / "metrics.json").write_text(json.dumps(base))
    return folder


@pytest.fixture
def sweep(tmp_path):
    root = tmp_path / "sweep"
    job(root, "0", method="pinv", steps=None, nfe=0, psnr=24.0, ssim=0.75)
    job(root, "1", method="ddnm", steps=100, psnr=25.5)
    job(root, "2", method="ddnm", steps=30, nfe=30, psnr=25.1)
    exp = {"_target_": "rnsf.schedules.ExpSchedule", "reverse": False}
    job(root, "3", method="rnsf", schedule="exp", schedule_params=exp, psnr=25.9)
    rev = {**exp, "reverse": True}
    job(root, "4", method="rnsf", schedule="exp", schedule_params=rev, psnr=25.4)
    job(root, "5", method="ddnm", task="colorization", psnr=18.0, n_images=8)
    job(root, "6", method="pinv", task="colorization", steps=None, psnr=17.0, n_images=8)
    (root / "7_unfinished").mkdir()
    (root / "7_unfinished" / "config.yaml").write_text("seed: 0\n")
    return root


def test_collect_reads_every_finished_job(sweep):
    frame = collect([sweep])
    assert len(frame) == 7
    assert set(frame["label"]) == {"A†y", "DDNM", "RNSF (exp)", "RNSF (exp, reversed)"}
    # the paper's task order: sr4 before colorization
    assert list(dict.fromkeys(frame["task"])) == ["sr4", "colorization"]


def test_paper_table_layout(sweep):
    table = paper_table(collect([sweep]), ["psnr", "ssim"])
    assert list(table.index.get_level_values(0)) == [
        "A†y",
        "DDNM",
        "DDNM",
        "RNSF (exp)",
        "RNSF (exp, reversed)",
    ]
    assert list(table.index.get_level_values(1).astype("object").fillna(0)) == [
        0,
        30,
        100,
        100,
        100,
    ]
    assert table.loc[("DDNM", 30), ("sr4", "psnr")] == pytest.approx(25.1)
    assert pd.isna(table.loc[("DDNM", 30), ("colorization", "psnr")])
    # N differs between the tasks (16 vs 8): one N column per task
    assert table.loc[("DDNM", 100), ("colorization", "N")] == 8
    assert table.loc[("DDNM", 100), ("sr4", "N")] == 16


def test_repeated_jobs_are_averaged(tmp_path):
    job(tmp_path, "a", psnr=25.0, seed=0)
    job(tmp_path, "b", psnr=26.0, seed=1)
    table = paper_table(collect([tmp_path]), ["psnr"])
    assert len(table) == 1
    assert table.iloc[0][("sr4", "psnr")] == pytest.approx(25.5)
    assert table.iloc[0][("", "N")] == 16


def test_reference_rows_sit_under_the_reproduced_ones(sweep):
    frame = collect([sweep])
    reference = [
        {
            "table": "1",
            "dataset": "demo",
            "method": "ddnm",
            "task": "sr4",
            "steps": 100,
            "psnr": 31.6,
            "ssim": None,
            "fid": 20.0,
            "lpips": 0.2,
            "note": "",
        },
        {
            "table": "1",
            "dataset": "demo",
            "method": "rnsf",
            "task": "sr4",
            "steps": 100,
            "psnr": 32.0,
            "ssim": None,
            "fid": 19.0,
            "lpips": 0.2,
            "note": "",
        },
        {
            "table": "1",
            "dataset": "other",
            "method": "ddnm",
            "task": "sr4",
            "steps": 100,
            "psnr": 1.0,
            "ssim": None,
            "fid": None,
            "lpips": None,
            "note": "",
        },
    ]
    table = paper_table(with_reference(frame, reference, "demo"), ["psnr"])
    labels = list(table.index.get_level_values(0))
    assert labels.index("DDNM (paper)") == labels.index("DDNM") + 2  # after DDNM 30 and 100
    assert labels[-1] == "RNSF (paper)"  # after both RNSF variants
    assert table.loc[("DDNM (paper)", 100), ("sr4", "psnr")] == pytest.approx(31.6)
    assert 1.0 not in table[("sr4", "psnr")].tolist()  # other datasets stay out


def test_write_report_files_and_bold_best(sweep, tmp_path):
    out = tmp_path / "report"
    text = write_report(collect([sweep]), out, metrics=["psnr", "ssim"])
    for name in (
        "results.csv",
        "table_demo.md",
        "table_demo.csv",
        "table_demo.tex",
        "metrics_demo.png",
    ):
        assert (out / name).stat().st_size > 0, name
    assert "**25.90**" in text  # the best sr4 PSNR is bold
    assert "**0.7500**" in text  # the best SSIM (A†y) too
    tex = (out / "table_demo.tex").read_text()
    assert r"\multicolumn{2}{c}{sr4}" in tex and r"\textbf{25.90}" in tex
    assert r"$A^\dagger y$" in tex
    tidy = pd.read_csv(out / "results.csv")
    assert len(tidy) == 7 and {"label", "psnr", "n_images", "git_sha"} <= set(tidy.columns)


def test_figure_axis_follows_the_sweep(sweep, tmp_path):
    frame = collect([sweep])
    assert choose_axis(frame) == "steps"  # DDNM ran with 30 and 100 steps
    only_100 = frame[frame["steps"].fillna(100) == 100]
    assert choose_axis(only_100) == "schedule"  # two RNSF schedules
    assert choose_axis(only_100[only_100["method"] != "rnsf"]) == "method"


def test_cli_errors_are_one_line(tmp_path, capsys):
    assert main([str(tmp_path / "missing")]) == 2
    assert main([str(tmp_path)]) == 2
    assert "no metrics.json" in capsys.readouterr().err
    job(tmp_path, "a")
    assert main([str(tmp_path), "--metrics", "psnr,bogus"]) == 2
    assert "unknown metric 'bogus'" in capsys.readouterr().err


@pytest.mark.slow
def test_report_on_a_generated_sweep(tmp_path):
    """A real 4-job sweep through run.py, then the report command on its folder."""
    sweep = tmp_path / "sweep"
    done = run_py(
        [
            "-m",
            "method=ddnm,rnsf",
            "method.steps=2,3",
            "dataset.limit=2",
            "dataset.batch_size=2",
            "logger=none",
            "save_images=false",
            f"hydra.sweep.dir={sweep}",
        ]
    )
    assert done.returncode == 0, done.stderr[-2000:]
    report = subprocess.run(
        [sys.executable, "-m", "rnsf.report", str(sweep)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert report.returncode == 0, report.stderr[-2000:]
    assert "4 jobs" in report.stdout
    table = pd.read_csv(sweep / "report" / "table_demo.csv")
    assert list(table["label"]) == ["DDNM", "DDNM", "RNSF (exp)", "RNSF (exp)"]
    assert list(table["steps"]) == [2, 3, 2, 3]
    assert (table["N"] == 2).all()
    assert (sweep / "report" / "metrics_demo.png").is_file()


def test_report_modules_import_each_other_without_a_cycle():
    """Each module of rnsf.report imports (anywhere in it, lazily too) only modules before it."""
    import ast

    import rnsf.report

    folder = Path(rnsf.report.__file__).parent
    imports = {}
    for path in folder.glob("*.py"):
        tree = ast.parse(path.read_text())
        imports[path.stem] = {
            node.module.rsplit(".", 1)[-1]
            for node in ast.walk(tree)
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("rnsf.report.")
        }
    order: list[str] = []
    while len(order) < len(imports):
        ready = [m for m in imports if m not in order and imports[m] <= set(order)]
        assert ready, f"import cycle among {sorted(set(imports) - set(order))}"
        order += sorted(ready)


def test_later_baselines_sit_after_the_paper_baselines_and_before_rnsf(tmp_path):
    """ΠGDM, DiffPIR, RED-diff and DAPS-1K, in the order of their papers, after the paper's
    baselines; RNSF, the paper's method, stays last."""
    root = tmp_path / "sweep"
    for i, method in enumerate(["rnsf", "daps", "reddiff", "ddnm", "diffpir", "pigdm", "pinv"]):
        job(root, str(i), method=method, schedule="exp" if method == "rnsf" else None)
    labels = list(paper_table(collect([root])).index.get_level_values(0))
    assert labels == ["A†y", "DDNM", "ΠGDM", "DiffPIR", "RED-diff", "DAPS-1K", "RNSF (exp)"]


@pytest.mark.slow
def test_every_method_of_the_comparison_lands_in_one_table(tmp_path):
    """`run.py -m method=pinv,ddnm,rnsf,ddrm,dps,ssd,pigdm,diffpir,reddiff,daps debug=tiny`
    (those of them that have a config), then the report: one table, one row per method, in
    the report's order."""
    from rnsf.report.collect import method_label
    from rnsf.report.tables import METHOD_ORDER
    from rnsf.utils.cli import group_options

    wanted = ["pinv", "ddnm", "rnsf", "ddrm", "dps", "ssd", "pigdm", "diffpir", "reddiff", "daps"]
    methods = [m for m in wanted if m in group_options("method")]
    sweep = tmp_path / "sweep"
    args = ["-m", f"method={','.join(methods)}", "debug=tiny", "save_images=false"]
    done = run_py([*args, f"hydra.sweep.dir={sweep}"])
    assert done.returncode == 0, done.stderr[-2000:]
    report = subprocess.run(
        [sys.executable, "-m", "rnsf.report", str(sweep)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert report.returncode == 0, report.stderr[-2000:]
    assert f"{len(methods)} jobs" in report.stdout
    assert [p.name for p in (sweep / "report").glob("table_*.csv")] == ["table_demo.csv"]
    table = pd.read_csv(sweep / "report" / "table_demo.csv")
    order = sorted(methods, key=METHOD_ORDER.index)
    expected = [method_label(m, "exp" if m == "rnsf" else None) for m in order]
    assert list(table["label"]) == expected
    assert (table["N"] == 2).all()
