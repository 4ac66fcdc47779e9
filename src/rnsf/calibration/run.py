"""One cell of the calibration table: a method, an operator and a noise level, many samples.

One ground truth is drawn from the Gaussian prior and measured once; the method then restores
that one measurement `samples` times, each sample an image with its own generator (seeded from
(seed, sample index), so the result does not depend on `batch`). The samples are compared with
the exact posterior in the operator's spectral coordinates (`rnsf.calibration.stats`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import torch

from rnsf.calibration.posterior import exact_posterior
from rnsf.calibration.stats import calibration_stats
from rnsf.utils.errors import UserError
from rnsf.utils.random import image_generators

#: the index of the ground truth's and the measurement noise's generator (the samples use
#: 0 … n−1 of the same seed)
TRUTH_INDEX = 2**40


@dataclass
class Cell:
    """A row of the table: what ran, and its statistics or why it did not."""

    method: str
    task: str
    sigma: float  #: [0, 1] pixel units, as in the configs
    steps: int | None = None
    nfe: int | None = None
    seconds: float | None = None
    stats: dict = field(default_factory=dict)
    refused: str | None = None  #: Method.check's one line
    failed: str | None = None  #: an error of `restore` on a pair the checks let through


def measure(task, prior, size: int, seed: int, device):
    """The ground truth x ~ prior, the bound operator and y = A x + σ n (batch 1)."""
    generators = image_generators(seed, [TRUTH_INDEX], device)
    mean = prior.mean.to(device).expand(1, 3, size, size)
    x = mean + prior.std.to(device) * torch.randn(
        1, 3, size, size, generator=generators[0], device=device
    )
    operator, y = task.measure(x, generators)
    return x, operator, y


def run_cell(
    method_name: str,
    method,
    task,
    prior,
    *,
    samples: int,
    size: int,
    seed: int,
    batch: int | None = None,
    device: str | torch.device = "cpu",
) -> Cell:
    """Restore one measurement `samples` times and score the samples against the exact
    posterior; a pair that `Method.check` refuses gets its one-line reason instead."""
    prior = prior.to(device)
    _, operator, y = measure(task, prior, size, seed, device)
    cell = Cell(method_name, task.name, task.sigma, getattr(method, "steps", None))
    try:
        method.check(operator, task.sigma_model)
    except UserError as err:
        cell.refused = str(err)
        return cell
    cell.nfe = method.nfe
    posterior = exact_posterior(operator, y, prior, task.sigma_model)
    batch = batch or samples
    start = time.perf_counter()
    chunks = []
    try:
        for first in range(0, samples, batch):
            indices = range(first, min(first + batch, samples))
            generators = image_generators(seed, indices, device)
            ys = y.expand(len(indices), *y.shape[1:])
            with torch.no_grad():
                x_hat = method.restore(ys, operator, prior, generators, sigma_y=task.sigma_model)
            chunks.append(operator.Vt(x_hat.detach().double()))
    except Exception as err:  # reported as the row, the table goes on
        cell.failed = f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"
        return cell
    cell.seconds = time.perf_counter() - start
    cell.stats = calibration_stats(torch.cat(chunks), posterior)
    return cell
