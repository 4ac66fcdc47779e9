"""The report's statistics: intervals, seeds, paired comparisons, Holm, refusals, reproducibility.

Synthetic jobs are folders with the files a job writes (metrics.json, per_image.csv through the
engine's own writer, config.yaml). Rates over simulated repeats are checked against the binomial:
with R repeats at nominal rate q the observed rate has standard deviation sqrt(q (1 − q) / R), and
the tolerance is 3 of them (a 0.3 % chance of failing when the method is right).
"""

from __future__ import annotations

import json
import logging
import math
import re

import numpy as np
import pandas as pd
import pytest
import yaml

from rnsf.engine.outputs import write_rows
from rnsf.metrics.intervals import holm, mean_interval, seeds_interval, sign_flip_pvalue
from rnsf.report import collect, paper_table, write_report
from rnsf.report.__main__ import main
from rnsf.report.ablation import paired_test_table, write_ablation
from rnsf.report.stats import compare
from rnsf.report.tables import to_markdown


def fake_job(root, name, psnr, first=0, split="test", **fields):
    """A finished job whose images `first`, `first + 1`, … scored `psnr` (SSIM follows it)."""
    psnr = np.asarray(psnr, dtype=float)
    ssim = 0.5 + psnr / 100
    folder = root / name
    folder.mkdir(parents=True)
    rows = [
        {"index": first + i, "name": f"im{first + i}", "psnr": p, "ssim": s, "seconds": 0.1}
        for i, (p, s) in enumerate(zip(psnr.tolist(), ssim.tolist(), strict=True))
    ]
    write_rows(folder / "per_image.csv", rows, ["index", "name", "psnr", "ssim", "seconds"])
    metrics = {
        "method": "ddnm",
        "task": "sr4",
        "dataset": "demo",
        "split": split,
        "model": "tiny",
        "steps": 25,
        "n_images": len(rows),
        "psnr": float(psnr.mean()),
        "ssim": float(ssim.mean()),
        "metric_protocol": "float",
        "seed": 0,
        **fields,
    }
    (folder / "metrics.json").write_text(json.dumps(metrics))
    (folder / "config.yaml").write_text("seed: 0\n")
    return folder


def read_back(values):
    """The scores as per_image.csv stores them (6 significant digits)."""
    return np.array([float(f"{v:.6g}") for v in values])


# -- the interval covers a known difference at its nominal rate -----------------------------
def test_paired_interval_of_two_jobs_is_the_bootstrap_of_their_differences(tmp_path):
    rng = np.random.default_rng(1)
    base = rng.normal(25.0, 2.0, size=40)  # images differ a lot; the pairs cancel that
    other = base + 0.3 + rng.normal(0.0, 0.2, size=40)
    fake_job(tmp_path, "ddnm", base)
    fake_job(tmp_path, "rnsf", other, method="rnsf", schedule="exp")
    rows = compare(collect([tmp_path]), "ddnm", ["psnr"])
    (row,) = rows.itertuples()
    d = read_back(other) - read_back(base)
    assert row.label == "RNSF (exp)" and row.n == 40
    assert row.diff == pytest.approx(d.mean())
    assert (row.lo, row.hi) == pytest.approx(mean_interval(d))  # same seed, same draws
    assert row.lo < 0.3 < row.hi and row.hi - row.lo < 0.2  # narrow: the pairing removes 2 dB
    assert row.p < 1e-3 and row.significant


def test_interval_covers_the_true_difference_at_its_nominal_rate():
    """Per-image difference = 0.3 + N(0, 0.5²) noise on 50 images, 600 repeats. The percentile
    bootstrap is a little narrow on small samples (≈ 94 % at N = 50), inside the tolerance."""
    repeats, n, truth = 600, 50, 0.3
    d = truth + np.random.default_rng(7).normal(0.0, 0.5, size=(repeats, n))
    lo, hi = mean_interval(d, seed=0, n_resamples=999)
    covered = np.mean((lo < truth) & (truth < hi))
    tolerance = 3 * math.sqrt(0.95 * 0.05 / repeats)  # 0.027
    assert abs(covered - 0.95) < tolerance, covered


def test_test_rejects_a_zero_difference_at_about_5_percent_and_finds_a_real_one():
    repeats, n = 400, 30
    noise = np.random.default_rng(3).normal(0.0, 1.0, size=(repeats, n))
    rejected = np.mean(sign_flip_pvalue(noise, seed=0, n_resamples=999) < 0.05)
    assert abs(rejected - 0.05) < 3 * math.sqrt(0.05 * 0.95 / repeats), rejected  # 0.033
    found = np.mean(sign_flip_pvalue(noise[:100] + 1.0, seed=0, n_resamples=999) < 0.05)
    assert found > 0.95  # one noise s.d. on 30 images is a finding


def test_two_level_interval_reduces_to_images_for_one_seed_and_widens_with_seed_spread():
    x = np.random.default_rng(0).normal(0.0, 1.0, size=(1, 30))
    assert seeds_interval(x) == pytest.approx(mean_interval(x[0]))
    same = np.repeat(x, 3, axis=0)
    spread = same + np.array([[-1.0], [0.0], [1.0]])  # seeds that disagree by 1
    lo0, hi0 = seeds_interval(same)
    lo1, hi1 = seeds_interval(spread)
    assert hi1 - lo1 > 2 * (hi0 - lo0)


# -- seeds ------------------------------------------------------------------------------------
def test_jobs_that_differ_only_in_seed_are_one_row(tmp_path):
    rng = np.random.default_rng(0)
    per_seed = [rng.normal(25 + s, 1.0, size=n) for s, n in ((0, 12), (1, 12), (2, 6))]
    for seed, scores in enumerate(per_seed):
        fake_job(tmp_path, f"seed{seed}", scores, seed=seed)
    frame = collect([tmp_path])
    table = paper_table(frame, ["psnr"], intervals=True)
    assert len(table) == 1
    means = [s.mean() for s in per_seed]
    row = table.iloc[0]
    # the mean over seeds of the per-seed means (not the pooled mean of 30 images)
    assert row[("sr4", "psnr")] == pytest.approx(np.mean(means))
    assert np.mean(np.concatenate(per_seed)) != pytest.approx(np.mean(means))
    assert row[("sr4", "psnr_sd")] == pytest.approx(np.std(means, ddof=1))
    assert row[("", "seeds")] == 3
    assert row[("sr4", "psnr_lo")] < np.mean(means) < row[("sr4", "psnr_hi")]
    text = to_markdown(table)
    assert "12 × 3" in text and f"(sd {np.std(means, ddof=1):.2f})" in text
    assert "per-seed means" in text


# -- Holm -------------------------------------------------------------------------------------
def test_holm_adjusts_step_down_and_keeps_nan_out_of_the_family():
    p = [0.01, 0.04, 0.03, 0.005, np.nan]
    # sorted 0.005·4 = 0.02, 0.01·3 = 0.03, 0.03·2 = 0.06, 0.04·1 = 0.04 → running max
    assert holm(p)[:4] == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert np.isnan(holm(p)[4])
    # 0.5·2 caps at 1, and the larger p may not come out smaller: both 1
    assert holm([0.5, 0.9]) == pytest.approx([1.0, 1.0])


def test_marks_follow_holm_over_the_tables_comparisons(tmp_path):
    """Two rows differ from the baseline: one clearly, one at a p that survives alone but not
    after Holm over the table's 4 comparisons (2 rows × PSNR, SSIM)."""
    rng = np.random.default_rng(5)
    base = rng.normal(25.0, 1.0, size=30)
    fake_job(tmp_path, "ddnm", base)
    fake_job(tmp_path, "a", base + 1.0 + rng.normal(0, 0.1, 30), method="rnsf", schedule="exp")
    fake_job(tmp_path, "b", base + rng.normal(0, 0.3, 30), method="rnsf", schedule="linear")
    frame = collect([tmp_path])
    table = paper_table(frame, ["psnr", "ssim"], intervals=True, baseline="DDNM")
    assert table.attrs["comparisons"] == 4 and table.attrs["baseline"] == "DDNM"
    rows = compare(frame, "ddnm", ["psnr", "ssim"])
    assert rows["p_holm"].to_numpy() == pytest.approx(holm(rows["p"].to_numpy()))
    assert table.loc[("RNSF (exp)", 25), ("sr4", "psnr_p_holm")] < 0.05
    text = to_markdown(table)
    assert "* | " in text and "Holm's correction over the table's 4 paired comparisons" in text
    marked = [line for line in text.splitlines() if line.startswith("| RNSF (exp)")]
    assert len(re.findall(r"\d\* \|", marked[0])) == 2  # PSNR and SSIM of the clear row
    assert not re.findall(r"\d\* \|", text.split("RNSF (linear)")[1].splitlines()[0])


# -- refusals ---------------------------------------------------------------------------------
def test_rows_that_share_no_image_with_the_baseline_are_refused(tmp_path, caplog, capsys):
    fake_job(tmp_path, "ddnm", np.linspace(24, 26, 8))
    fake_job(tmp_path, "rnsf", np.linspace(24, 26, 8) + 1, first=100, method="rnsf")
    fake_job(tmp_path, "pinv", np.linspace(20, 22, 8), method="pinv", steps=None)
    frame = collect([tmp_path])
    with caplog.at_level(logging.WARNING):
        rows = compare(frame, "ddnm", ["psnr"])
    assert list(rows["label"]) == ["A†y"]  # the same images 0–7
    refused = [r.getMessage() for r in caplog.records if "shares no image" in r.getMessage()]
    assert len(refused) == 1 and refused[0].startswith("RNSF on sr4 shares no image with DDNM")
    assert "\n" not in refused[0]
    # an unknown baseline is one line, before anything is written
    assert main([str(tmp_path), "--baseline", "dps", "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--baseline dps is no row of the table" in err
    assert not (tmp_path / "r").exists()


def test_a_paired_comparison_needs_the_same_seed(tmp_path):
    fake_job(tmp_path, "ddnm", np.linspace(24, 26, 8), seed=0)
    fake_job(tmp_path, "rnsf", np.linspace(24, 26, 8), seed=1, method="rnsf")
    assert compare(collect([tmp_path]), "ddnm", ["psnr"]).empty


# -- the files --------------------------------------------------------------------------------
def test_same_folders_give_the_same_intervals_and_the_seed_is_an_option(tmp_path):
    rng = np.random.default_rng(2)
    base = rng.normal(25.0, 1.0, size=20)
    fake_job(tmp_path / "sweep", "ddnm", base, kid=0.012, kid_std=0.003, fid=40.0)
    fake_job(tmp_path / "sweep", "rnsf", base + 0.1, method="rnsf", kid=0.01, kid_std=0.002)
    sweep = tmp_path / "sweep"
    for out in ("one", "two"):
        argv = [str(sweep), "--baseline", "ddnm", "--figure", "none", "--out", str(tmp_path / out)]
        assert main(argv) == 0
    for name in ("results.csv", "table_demo.md", "table_demo.csv", "paired_demo.csv"):
        assert (tmp_path / "one" / name).read_text() == (tmp_path / "two" / name).read_text()
    argv = [str(sweep), "--bootstrap-seed", "1", "--intervals", "--figure", "none"]
    argv += ["--out", str(tmp_path / "s1")]
    assert main(argv) == 0
    one = pd.read_csv(tmp_path / "one" / "results.csv")
    other = pd.read_csv(tmp_path / "s1" / "results.csv")
    assert not np.allclose(one["psnr_lo"], other["psnr_lo"])
    assert one["psnr_lo"].to_numpy() == pytest.approx(other["psnr_lo"].to_numpy(), abs=0.2)
    # results.csv: every job's interval; KID ± its subset std; FID none
    first = one.set_index("method").loc["ddnm"]
    assert first["psnr_lo"] < first["psnr"] < first["psnr_hi"]
    assert (first["kid_lo"], first["kid_hi"]) == pytest.approx((0.009, 0.015))
    assert math.isnan(first["fid_lo"])
    table = (tmp_path / "one" / "table_demo.md").read_text()
    assert "0.0120 ± 0.0030" in table and "40.00** ± n/a" in table and "no interval" in table
    body = r"\begin{tabular}"  # --intervals: ± in the LaTeX table too
    assert r"$\pm$" in (tmp_path / "s1" / "table_demo.tex").read_text().split(body)[1]
    assert r"$\pm$" not in (tmp_path / "one" / "table_demo.tex").read_text().split(body)[1]


def test_write_report_prints_intervals_and_the_paired_table(tmp_path):
    rng = np.random.default_rng(4)
    base = rng.normal(25.0, 1.0, size=16)
    fake_job(tmp_path, "ddnm", base)
    fake_job(tmp_path, "rnsf", base + 0.5, method="rnsf", schedule="exp")
    text = write_report(collect([tmp_path]), tmp_path / "r", baseline="ddnm", figure=None)
    assert "25." in text and " ± 0." in text
    assert "Paired differences from DDNM" in text and "+0.50 [+0.50, +0.50]" in text
    paired = pd.read_csv(tmp_path / "r" / "paired_demo.csv")
    assert set(paired["metric"]) == {"psnr", "ssim"} and paired["significant"].all()


# -- the λ-search view ------------------------------------------------------------------------
def test_lambda_search_view_shows_paired_differences_with_intervals(tmp_path):
    rng = np.random.default_rng(8)
    base = rng.normal(27.0, 1.5, size=8)
    (tmp_path / "optimization_results.yaml").write_text(yaml.safe_dump({"best_params": {}}))
    tuned = base + 0.05 + rng.normal(0, 0.05, 8)
    for name, scores in (("ddnm", base), ("exp", base), ("tuned", tuned)):
        fake_job(tmp_path / "test", name, scores, first=8, seed=0)
    pairs = paired_test_table(tmp_path).set_index("comparison")
    d = read_back(tuned) - read_back(base)
    row = pairs.loc["RNSF (tuned) − DDNM"]
    assert row["n"] == 8 and row["psnr_diff"] == pytest.approx(d.mean())
    assert (row["psnr_lo"], row["psnr_hi"]) == pytest.approx(mean_interval(d))
    assert pairs.loc["RNSF (exp) − DDNM", "psnr_diff"] == 0
    assert pairs.loc["RNSF (exp) − DDNM", "psnr_p"] == 1
    # 8 images: the sign-flip test is exact, and its smallest two-sided p is 2 / 2⁸
    assert row["psnr_p"] >= 2 / 2**8
    text = write_ablation(tmp_path, tmp_path / "report")
    assert "RNSF (tuned) − DDNM" in text and "Holm" in text and " ± " in text
    assert (tmp_path / "report" / "ablation_paired.csv").is_file()
