"""DPS with fewer steps: respaced ancestral sampling as guided-diffusion's `timestep_respacing`,
an explicit, recorded departure from the paper's 1,000 steps."""

from __future__ import annotations

import pytest
import torch

from rnsf.denoisers.analytic import FiniteSetPrior, GaussianPrior
from rnsf.diffusion import linear_betas
from rnsf.methods import DPS
from rnsf.methods.respace import respaced_betas, space_timesteps
from rnsf.metrics.image import psnr
from rnsf.operators import BicubicSR, Task
from rnsf.utils.random import image_generators


def test_space_timesteps_is_guided_diffusions_rule():
    # guided-diffusion space_timesteps(1000, [S]): round(k * 999 / (S - 1)), half to even
    assert space_timesteps(1000, 5) == [0, 250, 500, 749, 999]
    assert space_timesteps(1000, 1000) == list(range(1000))
    hundred = space_timesteps(1000, 100)
    assert len(hundred) == 100 and hundred[:3] == [0, 10, 20] and hundred[-1] == 999
    assert space_timesteps(1000, 1) == [0]
    with pytest.raises(ValueError):
        space_timesteps(1000, 0)


def test_respaced_betas_keep_the_marginals():
    abar = torch.cumprod(1 - linear_betas(), 0).tolist()
    for count in (5, 50, 1000):
        taus = space_timesteps(1000, count)
        betas = torch.tensor(respaced_betas(abar, taus), dtype=torch.float64)
        kept = torch.cumprod(1 - betas, 0)
        torch.testing.assert_close(
            kept, torch.tensor(abar, dtype=torch.float64)[taus], rtol=1e-12, atol=0
        )
    full = respaced_betas(abar, list(range(1000)))
    torch.testing.assert_close(
        torch.tensor(full, dtype=torch.float64), linear_betas(), rtol=1e-9, atol=0
    )


def test_fewer_steps_visit_the_kept_timesteps_and_are_labelled(small_set):
    calls = []

    class Counting(GaussianPrior):
        def forward(self, x, t):
            calls.append(int(t[0]))
            return super().forward(x, t)

    method = DPS(steps=20)
    gens = image_generators(0, [0])
    op, y = Task("sr4", BicubicSR(4)).measure(small_set[:1], gens)
    method.restore(y, op, Counting(0.0, 0.5), gens)
    assert calls == space_timesteps(1000, 20)[::-1] and method.nfe == 20 == len(calls)
    assert method.hyperparameters()["protocol"].startswith("non-paper: 20 of 1000 steps")
    assert DPS().hyperparameters()["protocol"] == "paper: 1000 ancestral DDPM steps"
    with pytest.raises(ValueError, match="1 to 1000"):
        DPS(steps=1001)


def test_respaced_dps_recovers_a_set_image_and_is_batch_independent(small_set):
    prior = FiniteSetPrior(small_set)
    x = small_set[1:3]
    gens = image_generators(0, [1, 2])
    op, y = Task("sr4", BicubicSR(4)).measure(x, gens)
    out = DPS(steps=100).restore(y, op, prior, gens)
    assert psnr(out, x).min() > 30, psnr(out, x)
    gens = image_generators(0, [2])
    op1, y1 = Task("sr4", BicubicSR(4)).measure(x[1:], gens)
    one = DPS(steps=100).restore(y1, op1, prior, gens)
    assert torch.allclose(out[1:], one, atol=1e-5)
