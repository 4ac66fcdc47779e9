"""Intervals, seeds and paired comparisons of a report's cells, from the jobs' per-image scores.

A cell is one entry of the paper's table: the jobs of one (label, steps, task), several when
several seeds ran. Its value is the mean over seeds of the per-seed means (each job's
`metrics.json` mean); its 95 % interval a bootstrap over the images of `per_image.csv` (over seeds
and images when several seeds ran, `rnsf.metrics.intervals.seeds_interval`); its `_sd` the
standard deviation of the per-seed means. KID's interval is torch-fidelity's standard deviation
over subsets (`kid_std`, ± around the mean); FID, one number for the whole set, has none.

`compare` pairs each cell with the baseline's cell of the same task (and steps, when the baseline
ran with several) on the images both scored (same dataset, split, image index and seed): the mean
paired difference, its paired-bootstrap interval, a sign-flip permutation p-value, and Holm's
adjustment over all the comparisons of the table.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd

from rnsf.metrics.intervals import (
    BOOTSTRAP_SEED,
    N_RESAMPLES,
    holm,
    mean_interval,
    seeds_interval,
    sign_flip_pvalue,
)
from rnsf.report.collect import METRICS
from rnsf.utils.errors import UserError

log = logging.getLogger(__name__)

#: scores a job records per image (per_image.csv); FID and KID are set-level
IMAGE_METRICS = ("psnr", "ssim", "lpips", "consistency")
#: what makes two jobs' images the same image
PAIR_KEYS = ["dataset", "split", "index", "seed"]
CELL_KEYS = ["label", "steps", "task"]
ALPHA = 0.05


def image_scores(frame: pd.DataFrame) -> pd.DataFrame:
    """One row per (job, image) of the jobs in `frame` that wrote `per_image.csv`: `job` (the
    job's index in `frame`), dataset, split ("all" without one), seed, image index, scores."""
    parts = []
    for job, row in frame.iterrows():
        folder = row.get("output_dir")
        path = Path(folder) / "per_image.csv" if isinstance(folder, str) else None
        if path is None or not path.is_file():
            continue
        scores = pd.read_csv(path)
        parts.append(
            scores.assign(
                job=job,
                dataset=row.get("dataset"),
                split=row.get("split") if isinstance(row.get("split"), str) else "all",
                seed=row.get("seed") if pd.notna(row.get("seed")) else 0,
            )
        )
    columns = ["job", *PAIR_KEYS, *IMAGE_METRICS]
    if not parts:
        return pd.DataFrame(columns=columns)
    scores = pd.concat(parts, ignore_index=True)
    for metric in IMAGE_METRICS:
        if metric not in scores:
            scores[metric] = np.nan
    return scores[columns]


def _by_seed(scores: pd.DataFrame, metric: str) -> np.ndarray:
    """(S seeds, N images) array of `metric` (NaN where a seed did not score an image)."""
    table = scores.pivot_table(
        index=["dataset", "split", "index"], columns="seed", values=metric, aggfunc="mean"
    )
    return table.to_numpy(dtype=float).T


def job_intervals(
    frame: pd.DataFrame, seed: int = BOOTSTRAP_SEED, n_resamples: int = N_RESAMPLES
) -> pd.DataFrame:
    """`frame` with `<metric>_lo` and `<metric>_hi` after the metrics: each job's 95 % bootstrap
    interval over its images (what its metrics.json records), KID ± its subset std, FID none."""
    out = frame.copy()
    scores = image_scores(frame)
    bounds = {f"{m}_{end}": np.full(len(frame), np.nan) for m in METRICS for end in ("lo", "hi")}
    for i, job in enumerate(frame.index):
        mine = scores[scores["job"] == job]
        for metric in IMAGE_METRICS:
            if metric in frame and mine[metric].notna().sum() >= 2:
                lo, hi = mean_interval(mine[metric].to_numpy(float), seed, n_resamples)
                bounds[f"{metric}_lo"][i], bounds[f"{metric}_hi"][i] = lo, hi
    if "kid_std" in frame:
        kid = pd.to_numeric(frame["kid"], errors="coerce")
        std = pd.to_numeric(frame["kid_std"], errors="coerce")
        bounds["kid_lo"], bounds["kid_hi"] = (kid - std).to_numpy(), (kid + std).to_numpy()
    out = out.drop(columns=[c for c in bounds if c in out])  # recomputed from the images
    at = list(out.columns).index(list(METRICS)[-1]) + 1
    for name, values in bounds.items():
        out.insert(at, name, values)
        at += 1
    return out


def cell_stats(
    frame: pd.DataFrame,
    metrics: list[str],
    intervals: bool = True,
    seed: int = BOOTSTRAP_SEED,
    n_resamples: int = N_RESAMPLES,
) -> pd.DataFrame:
    """One row per (label, steps, task) cell: `<metric>` (mean over seeds of the per-seed
    means), `<metric>_sd` (between seeds), with `intervals` `<metric>_lo` / `_hi`; `N` (the most
    images a job of the cell scored) and `seeds`."""
    frame = frame.assign(steps=frame["steps"].fillna(0))
    scores = image_scores(frame) if intervals else None
    rows = []
    for key, jobs in frame.groupby(CELL_KEYS, dropna=False, sort=False):
        seeds = jobs["seed"].fillna(0)
        row = dict(zip(CELL_KEYS, key, strict=True))
        row["N"] = pd.to_numeric(jobs["n_images"], errors="coerce").max()
        row["seeds"] = seeds.nunique()
        mine = scores[scores["job"].isin(jobs.index)] if intervals else None
        kid_std = pd.to_numeric(jobs.get("kid_std", pd.Series(dtype=float)), errors="coerce")
        for metric in metrics:
            values = pd.to_numeric(jobs[metric], errors="coerce")
            per_seed = values.groupby(seeds).mean().dropna()
            row[metric] = per_seed.mean() if len(per_seed) else np.nan
            row[f"{metric}_sd"] = per_seed.std(ddof=1) if len(per_seed) > 1 else np.nan
            if not intervals:
                continue
            lo = hi = np.nan
            if metric in IMAGE_METRICS and mine[metric].notna().sum() >= 2:
                lo, hi = seeds_interval(_by_seed(mine, metric), seed, n_resamples)
            elif metric == "kid" and kid_std.notna().any():
                std = np.sqrt(np.nanmean(kid_std**2))
                lo, hi = row[metric] - std, row[metric] + std
            row[f"{metric}_lo"], row[f"{metric}_hi"] = lo, hi
        rows.append(row)
    return pd.DataFrame(rows).set_index(CELL_KEYS)


def paired(
    a: pd.DataFrame,
    b: pd.DataFrame,
    metrics: list[str],
    seed: int = BOOTSTRAP_SEED,
    n_resamples: int = N_RESAMPLES,
) -> dict[str, dict]:
    """Per metric: `n` shared images (× seeds), the mean paired difference a − b (mean over
    seeds of the per-seed means), its 95 % paired-bootstrap interval `lo`, `hi`, and `p`, the
    sign-flip permutation test's two-sided p-value on the per-image differences (averaged over
    seeds). `a` and `b` are `image_scores` rows; images pair on dataset, split, index, seed."""
    both = (
        a.groupby(PAIR_KEYS)[list(IMAGE_METRICS)]
        .mean()
        .join(b.groupby(PAIR_KEYS)[list(IMAGE_METRICS)].mean(), how="inner", rsuffix="_b")
    )
    out = {}
    for metric in metrics:
        if metric not in IMAGE_METRICS:
            continue
        d = (both[metric] - both[f"{metric}_b"]).dropna().rename("d").reset_index()
        if d.empty:
            out[metric] = {"n": 0, "diff": np.nan, "lo": np.nan, "hi": np.nan, "p": np.nan}
            continue
        by_seed = _by_seed(d, "d")
        per_image = np.nanmean(by_seed, axis=0)
        lo, hi = seeds_interval(by_seed, seed, n_resamples)
        out[metric] = {
            "n": len(d),
            "diff": float(np.nanmean(np.nanmean(by_seed, axis=1))),
            "lo": lo,
            "hi": hi,
            "p": sign_flip_pvalue(per_image, seed, n_resamples),
        }
    return out


def baseline_label(frame: pd.DataFrame, name: str) -> str:
    """The row label `name` designates: a label (`DDNM`, `RNSF (exp)`, any case) or a method
    (`ddnm`) that has one label in `frame`; otherwise a one-line UserError."""
    labels = list(dict.fromkeys(frame["label"]))
    exact = [lab for lab in labels if lab.lower() == name.lower()]
    if exact:
        return exact[0]
    by_method = list(dict.fromkeys(frame.loc[frame["method"] == name.lower(), "label"]))
    if len(by_method) == 1:
        return by_method[0]
    if by_method:
        raise UserError(
            f"--baseline {name} names several rows ({', '.join(by_method)}); pass one of them"
        )
    raise UserError(f"--baseline {name} is no row of the table; rows: {', '.join(labels)}")


def compare(
    frame: pd.DataFrame,
    baseline: str,
    metrics: list[str],
    seed: int = BOOTSTRAP_SEED,
    n_resamples: int = N_RESAMPLES,
) -> pd.DataFrame:
    """Every other cell against the baseline's cell of the same task (same steps when the
    baseline ran with several): one row per (label, steps, task, metric) with the baseline's
    label and steps, `n` pairs, `diff`, `lo`, `hi`, `p`, `p_holm` (Holm over all rows) and
    `significant` (p_holm < 0.05). Cells that share no image with the baseline, or whose
    baseline is ambiguous, are refused with one log line each and left out."""
    base = baseline_label(frame, baseline)
    frame = frame.assign(steps=frame["steps"].fillna(0))
    scores = image_scores(frame)
    rows = []
    for (label, steps, task), jobs in frame.groupby(CELL_KEYS, dropna=False, sort=False):
        if label == base or jobs["output_dir"].isna().all():  # published rows have no images
            continue
        candidates = frame[(frame["label"] == base) & (frame["task"] == task)]
        if candidates["steps"].nunique() > 1:
            candidates = candidates[candidates["steps"] == steps]
        if candidates.empty:
            log.warning(
                "%s (%s steps) on %s: no %s row with the same steps to compare with; not compared",
                label,
                int(steps),
                task,
                base,
            )
            continue
        a = scores[scores["job"].isin(jobs.index)]
        b = scores[scores["job"].isin(candidates.index)]
        found = paired(a, b, metrics, seed, n_resamples)
        if not found or all(r["n"] == 0 for r in found.values()):
            log.warning(
                "%s on %s shares no image with %s (pairs need the same dataset, split, image "
                "index and seed); not compared",
                label,
                task,
                base,
            )
            continue
        for metric, result in found.items():
            rows.append(
                {
                    "label": label,
                    "steps": steps,
                    "task": task,
                    "metric": metric,
                    "baseline": base,
                    "baseline_steps": candidates["steps"].iloc[0],
                    **result,
                }
            )
    columns = [*CELL_KEYS, "metric", "baseline", "baseline_steps", "n", "diff", "lo", "hi", "p"]
    out = pd.DataFrame(rows, columns=columns)
    out["p_holm"] = holm(out["p"].to_numpy(float)) if len(out) else []
    out["significant"] = out["p_holm"] < ALPHA
    out.attrs["baseline"] = base
    return out
