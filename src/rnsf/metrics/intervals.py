"""Confidence intervals and paired tests for per-image scores (numpy and scipy only).

- `mean_interval`: the 95 % percentile-bootstrap interval of a mean over images (scipy's
  `bootstrap`), for one array or a stack of them (the last axis holds the images);
- `seeds_interval`: the same over seeds and images when several seeds ran: a two-level bootstrap
  that resamples the seeds, then the images, of an (S, N) array;
- `sign_flip_pvalue`: the two-sided p-value of a paired sign-flip permutation test of a mean
  difference (scipy's `permutation_test`);
- `holm`: Holm's step-down adjustment of a family of p-values.

Every function takes a `seed` (or a `numpy.random.Generator`), so the same scores give the same
intervals.
"""

from __future__ import annotations

import warnings

import numpy as np
from scipy import stats

CONFIDENCE = 0.95
#: bootstrap resamples of an interval, and permutations of a test
N_RESAMPLES = 4000
#: the default seed of every interval and test (`--bootstrap-seed`)
BOOTSTRAP_SEED = 0


def _rng(seed) -> np.random.Generator:
    return seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)


def _mean(x, axis=-1):
    return np.mean(x, axis=axis)


def mean_interval(
    values, seed=BOOTSTRAP_SEED, n_resamples: int = N_RESAMPLES, confidence: float = CONFIDENCE
) -> tuple:
    """(lo, hi) of the percentile-bootstrap interval of the mean of `values` over its last axis
    (NaN dropped for a 1-d array; a stack must have none). Fewer than 2 values: (nan, nan)."""
    x = np.asarray(values, dtype=float)
    if x.ndim == 1:
        x = x[~np.isnan(x)]
    if x.shape[-1] < 2:
        nan = np.full(x.shape[:-1], np.nan)
        return (float(nan), float(nan)) if x.ndim == 1 else (nan, nan)
    res = stats.bootstrap(
        (x,),
        _mean,
        n_resamples=n_resamples,
        confidence_level=confidence,
        method="percentile",
        vectorized=True,
        axis=-1,
        rng=_rng(seed),
    )
    lo, hi = res.confidence_interval
    return (float(lo), float(hi)) if x.ndim == 1 else (lo, hi)


def seeds_interval(
    values, seed=BOOTSTRAP_SEED, n_resamples: int = N_RESAMPLES, confidence: float = CONFIDENCE
) -> tuple[float, float]:
    """(lo, hi) of the 95 % interval of the mean over seeds of the per-seed means of `values`,
    an (S seeds, N images) array (NaN: an image a seed did not score). A two-level bootstrap
    (scipy's `bootstrap` resamples one level only): each resample draws S seeds, then N image
    positions, with replacement; one seed reduces to the bootstrap over images."""
    x = np.asarray(values, dtype=float)
    if x.shape[0] == 1:
        return mean_interval(x[0], seed, n_resamples, confidence)
    rng = _rng(seed)
    s, n = x.shape
    seeds = rng.integers(0, s, size=(n_resamples, s))
    images = rng.integers(0, n, size=(n_resamples, n))
    draws = x[seeds[:, :, None], images[:, None, :]]  # (B, S, N)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a resample of only unscored images
        means = np.nanmean(np.nanmean(draws, axis=2), axis=1)
    alpha = (1 - confidence) / 2
    lo, hi = np.nanquantile(means, [alpha, 1 - alpha])
    return float(lo), float(hi)


def sign_flip_pvalue(differences, seed=BOOTSTRAP_SEED, n_resamples: int = N_RESAMPLES):
    """Two-sided p-value of H0 "the paired differences are symmetric about 0" for their mean,
    by flipping the sign of each difference (exact when 2^N ≤ `n_resamples`). `differences`
    is 1-d (NaN dropped) or a stack with the pairs on the last axis."""
    d = np.asarray(differences, dtype=float)
    if d.ndim == 1:
        d = d[~np.isnan(d)]
    if d.shape[-1] < 1:
        return float("nan")
    res = stats.permutation_test(
        (d,),
        _mean,
        permutation_type="samples",
        vectorized=True,
        n_resamples=n_resamples,
        alternative="two-sided",
        axis=-1,
        rng=_rng(seed),
    )
    return float(res.pvalue) if d.ndim == 1 else res.pvalue


def holm(pvalues) -> np.ndarray:
    """Holm's step-down adjusted p-values (NaN entries stay NaN and do not count): the k-th
    smallest of m p-values becomes max over j ≤ k of min(1, (m − j + 1) p_(j))."""
    p = np.asarray(pvalues, dtype=float)
    out = np.full_like(p, np.nan)
    ok = ~np.isnan(p)
    m = int(ok.sum())
    if m:
        order = np.argsort(p[ok])
        scaled = np.minimum(1.0, (m - np.arange(m)) * p[ok][order])
        adjusted = np.empty(m)
        adjusted[order] = np.maximum.accumulate(scaled)
        out[ok] = adjusted
    return out
