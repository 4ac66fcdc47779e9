"""Methods against cases whose answer is known."""

from __future__ import annotations

import pytest
import torch

from rnsf.denoisers import FiniteSetPrior, GaussianPrior
from rnsf.methods import DDNM, RNSF, Pinv
from rnsf.metrics import psnr
from rnsf.operators import BicubicSR, BoxInpainting, Colorization, Denoising, Task
from rnsf.schedules import ConstantSchedule, ExpSchedule
from rnsf.utils.random import image_generators


def restore(method, task, x, prior, seed=0, indices=None):
    gens = image_generators(seed, indices if indices is not None else range(x.shape[0]))
    op, y = task.measure(x, gens)
    out = method.restore(y, op, prior, gens, sigma_y=task.sigma_model)
    return out, op, y


@pytest.mark.parametrize("method", [DDNM(steps=20), RNSF(steps=20, schedule=ExpSchedule())])
def test_finite_set_prior_recovers_set_image_from_sr4(method, small_set):
    prior = FiniteSetPrior(small_set)
    x = small_set[1:3]
    out, op, y = restore(method, Task("sr4", BicubicSR(4)), x, prior)
    assert psnr(out, x).min() > 40
    baseline = psnr(op.A_pinv(y), x).max()
    assert baseline < 30  # the measurement alone is far from it


def test_noise_free_ddnm_is_exactly_consistent(small_set):
    prior = FiniteSetPrior(small_set)
    for operator in (BicubicSR(4), Colorization(), BoxInpainting(0.5)):
        out, op, y = restore(DDNM(steps=10), Task("t", operator), small_set[:2], prior)
        residual = (op.A(out) - y).flatten(1).norm(dim=1)
        assert residual.max() <= 1e-4, (type(operator).__name__, residual)


def test_rnsf_with_constant_one_is_ddnm_to_the_byte(small_set):
    prior = FiniteSetPrior(small_set)
    x = small_set[:2] * 0.9  # not in the set: the correction matters at every step
    task = Task("sr4", BicubicSR(4))
    a, _, _ = restore(DDNM(steps=15), task, x, prior)
    b, _, _ = restore(RNSF(steps=15, schedule=ConstantSchedule(level=1.0)), task, x, prior)
    assert torch.equal(a, b)
    c, _, _ = restore(RNSF(steps=15, schedule=ExpSchedule()), task, x, prior)
    assert not torch.equal(a, c)


def test_rnsf_consistency_tracks_lambda(small_set):
    """With λ < 1 at the last step, A x̃₀ = λ y + (1 − λ) A x̂₀ ≠ y (the paper's claim is false)."""
    prior = GaussianPrior(0.0, 0.5)
    x = small_set[:2]
    task = Task("sr4", BicubicSR(4))
    ddnm, op, y = restore(DDNM(steps=10), task, x, prior)
    half, _, _ = restore(RNSF(steps=10, schedule=ConstantSchedule(level=0.5)), task, x, prior)
    assert (op.A(ddnm) - y).norm() < 1e-4
    assert (op.A(half) - y).norm() > 1e-2
    # `exp` ends at λ = 1 and is exactly consistent; reversed, it ends at λ = 0 and is not
    rising, _, _ = restore(RNSF(steps=10, schedule=ExpSchedule()), task, x, prior)
    falling, _, _ = restore(RNSF(steps=10, schedule=ExpSchedule(reverse=True)), task, x, prior)
    assert (op.A(rising) - y).norm() < 1e-4
    assert (op.A(falling) - y).norm() > 1e-2


def test_result_independent_of_batch_composition(small_set):
    prior = FiniteSetPrior(small_set)
    x = small_set * 0.8
    task = Task("sr4", BicubicSR(4), sigma=0.02)
    method = RNSF(steps=8, schedule=ExpSchedule())
    batch, _, _ = restore(method, task, x, prior, indices=[10, 11, 12, 13])
    single, _, _ = restore(method, task, x[2:3], prior, indices=[12])
    assert torch.allclose(batch[2:3], single, atol=1e-5)


def test_gaussian_prior_fills_the_null_space_with_prior_samples():
    """Inpainting with an i.i.d. Gaussian prior: missing pixels are independent of y, so with
    the deterministic sampler (η = 0, the probability-flow limit) they must follow
    N(mean, std²); kept pixels equal y exactly. With η > 0 the DDRM-style update re-noises from
    the posterior mean and the samples shrink towards the mean (upstream behaviour)."""
    mean, std = 0.2, 0.3
    prior = GaussianPrior(mean, std)
    x = torch.zeros(1, 3, 64, 64)
    op = BoxInpainting(0.75).bind(x.shape, image_generators(0, [0]))
    y = op.A(x + 0.5)
    stds = []
    for eta in (0.0, 0.85):
        out = DDNM(steps=200, eta=eta).restore(y, op, prior, image_generators(0, [0]))
        missing = out[op.mask.expand_as(out) == 0]
        assert abs(missing.mean().item() - mean) < 0.02
        assert torch.allclose(op.A(out), y, atol=1e-5)
        stds.append(missing.std().item())
    assert abs(stds[0] - std) < 0.015
    assert stds[1] < stds[0]


def test_ddnm_plus_denoises_where_plain_ddnm_returns_y():
    """Denoising with a Gaussian prior: noise-free DDNM projects onto y (returns y itself);
    DDNM+ weighs y against the prior and lands closer to the truth than y."""
    mean, std, sigma = 0.0, 0.3, 0.1  # sigma in pixel units: 0.2 on [-1, 1]
    prior = GaussianPrior(mean, std)
    x = mean + std * torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    task = Task("denoise", Denoising(), sigma=sigma)
    gens = image_generators(0, [0, 1])
    op, y = task.measure(x, gens)
    plain = DDNM(steps=50).restore(y, op, prior, image_generators(0, [0, 1]), sigma_y=0.0)
    assert torch.allclose(plain, y, atol=1e-5)
    plus = DDNM(steps=50).restore(y, op, prior, image_generators(0, [0, 1]), sigma_y=0.2)
    assert (plus - x).pow(2).mean() < 0.95 * (y - x).pow(2).mean()


@pytest.mark.parametrize("operator", [BicubicSR(4), Colorization(), Denoising()])
def test_ddnm_plus_keeps_the_noise_budget_per_coordinate(operator):
    """Each range coordinate of x_{t'} carries the variance σ_t² in total: fresh noise d₁² plus
    y's noise passed through the weighted correction (a λ_k σ_y / s_k)² (specs §1.5)."""
    method = DDNM(eta=0.85)
    x = torch.zeros(1, 3, 32, 32)
    s = operator.singulars(x).expand_as(x)
    a, sigma_y = 0.9, 0.2
    for sigma_t in (0.01, 0.05, 0.3, 0.8):
        lam = method._ddnm_plus_weight(operator, x, a, sigma_t, sigma_y).expand_as(x)
        ones = torch.ones_like(x)
        # with z = V(1) the spectral coordinates of the fresh noise are d₁ themselves
        d1 = operator.Vt(
            method._ddnm_plus_noise(operator, operator.V(ones), 0 * ones, a, sigma_t, sigma_y)
        )
        rng = s > 0
        total = d1[rng] ** 2 + (a * lam[rng] * sigma_y / s[rng]) ** 2
        assert torch.allclose(total, torch.full_like(total, sigma_t**2), rtol=1e-4)


def test_pinv_and_nfe():
    assert Pinv().nfe == 0
    assert DDNM(steps=100).nfe == 100
    assert DDNM(steps=100, travel_length=2, travel_repeat=2).nfe == 198
    assert RNSF(steps=30, schedule=ExpSchedule()).nfe == 30


def test_callback_sees_every_network_evaluation(small_set):
    seen = []
    prior = FiniteSetPrior(small_set)
    op, y = Task("sr4", BicubicSR(4)).measure(small_set[:1], image_generators(0, [0]))
    DDNM(steps=7).restore(y, op, prior, image_generators(0, [0]), callback=seen.append)
    assert [s.index for s in seen] == list(range(7))
    assert seen[0].t == 6 * 142 and seen[-1].t == 0
    assert seen[-1].x0.shape == (1, 3, 32, 32)


def test_eta_out_of_range_is_rejected():
    with pytest.raises(ValueError, match=r"method.eta must lie in \[0, 1\]"):
        DDNM(eta=1.5)


def test_pinv_ignores_steps_so_step_sweeps_compose():
    from rnsf.methods import Pinv

    method = Pinv(steps=5)
    assert method.steps is None and method.nfe == 0
