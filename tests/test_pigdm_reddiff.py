"""ΠGDM and RED-diff against known answers: NVlabs/RED-diff's timesteps, closed forms of one step
with the unit-variance Gaussian prior (whose x̂₀ = √ᾱ_t x_t is linear, J_t = √ᾱ_t I), dense
float64 solves, a hand-written Adam loop, NFE and batch independence."""

from __future__ import annotations

import json
import math

import pytest
import torch

from rnsf.denoisers import FiniteSetPrior, GaussianPrior
from rnsf.denoisers.base import Denoiser
from rnsf.methods import PiGDM, REDDiff
from rnsf.methods.constraint import KnownRegion
from rnsf.methods.pigdm import pigdm_timesteps, regularized_pinv
from rnsf.metrics import psnr
from rnsf.operators import (
    AverageSR,
    BicubicSR,
    BoxInpainting,
    Colorization,
    Composition,
    RandomInpainting,
    SVDOperator,
    Task,
    WalshHadamardCS,
)
from rnsf.utils.errors import UserError
from rnsf.utils.random import image_generators, randn

from conftest import run_py

F64 = torch.float64


def measure(task, x, indices=(0,), seed=0):
    gens = image_generators(seed, indices)
    op, y = task.measure(x, gens)
    return op, y, image_generators(seed, indices)


def dense(fn, shape, dtype=F64) -> torch.Tensor:
    """The matrix of a linear map of tensors of `shape` (batch 1), column j = fn(e_j)."""
    n = math.prod(shape)
    basis = torch.eye(n, dtype=dtype).view(n, *shape)
    return torch.stack([fn(e[None]).flatten() for e in basis], dim=1)


class RandomSVD(SVDOperator):
    """A random m × n matrix (n = C·H·W) given by its SVD, for dense reference solves."""

    def __init__(self, shape, m: int, seed: int = 0, zero: int = 0) -> None:
        self.shape, self.n = tuple(shape), math.prod(shape)
        g = torch.Generator().manual_seed(seed)
        matrix = torch.randn(m, self.n, generator=g, dtype=F64)
        u, s, vh = torch.linalg.svd(matrix, full_matrices=True)
        if zero:
            s[-zero:] = 0  # a rank-deficient A: zero singular values must map to 0
        self.u, self.s, self.v, self.m = u, s, vh.T, m

    def Vt(self, x):
        return (x.flatten(1) @ self.v).view_as(x)

    def V(self, z):
        return (z.flatten(1) @ self.v.T).view_as(z)

    def Ut(self, y):
        z = y @ self.u
        return torch.nn.functional.pad(z, (0, self.n - self.m)).view(-1, *self.shape)

    def U(self, z):
        return z.flatten(1)[:, : self.m] @ self.u.T

    def singulars(self, like):
        return torch.nn.functional.pad(self.s, (0, self.n - self.m)).view(self.shape).to(like)

    def matrix(self):
        return self.u @ torch.diag(self.s) @ self.v[:, : self.m].T


# -- timesteps, σ_t, NFE ------------------------------------------------------------------
def test_timesteps_and_noise_levels_are_upstreams():
    """`ts = range(0, 1000, 1000 // S)` (utils/functions.py L20-24), visited from the last;
    ᾱ(−1) = 1 and σ_t = √(1−ᾱ_t)/√ᾱ_t of the float32 table as the spec's table gives it."""
    assert pigdm_timesteps(50) == list(range(0, 1000, 20)) and pigdm_timesteps(50)[-1] == 980
    assert pigdm_timesteps(100)[-1] == 990 and len(pigdm_timesteps(100)) == 100
    assert len(pigdm_timesteps(30)) == 31 and pigdm_timesteps(1000) == list(range(1000))
    abar = GaussianPrior().alphas_cumprod(torch.float32, "cpu")
    assert abar[0] == 1.0
    sigma = ((1 - abar) / abar).sqrt()
    for t, expected in ((0, 0.0100), (99, 0.3388), (499, 3.424), (999, 157.4)):
        assert sigma[t + 1].item() == pytest.approx(expected, rel=5e-4)
    assert PiGDM().nfe == 50 and PiGDM(steps=30).nfe == 31 and PiGDM(steps=100).nfe == 100
    assert REDDiff().nfe == 50 and REDDiff(steps=1000).nfe == 1000
    # RED-diff's linear weight λσ_t: 39.35 at t = 999, 35.95 at 990, 0.0025 at 0 (λ = 0.25)
    red = REDDiff()
    assert red.weight(abar[1000].item()) == pytest.approx(39.35, rel=1e-3)
    assert red.weight(abar[991].item()) == pytest.approx(35.95, rel=1e-3)
    assert red.weight(abar[1].item()) == pytest.approx(0.0025, rel=1e-2)


def test_bad_knobs_are_refused():
    with pytest.raises(ValueError, match=r"method\.form"):
        PiGDM(form="noisy")
    with pytest.raises(ValueError, match=r"method\.eta"):
        PiGDM(eta=2.0)
    with pytest.raises(ValueError, match=r"method\.weighting"):
        REDDiff(weighting="cubic")


# -- ΠGDM: the guidance vector --------------------------------------------------------------
def test_official_residual_is_the_masked_or_upsampled_difference():
    """A†y − A†(A x̂₀) is m ⊙ (y − x̂₀) for a 0/1 mask, and the nearest-neighbour upsampling of
    blockmean(x) − blockmean(x̂₀) for 4×4 block averaging."""
    g = torch.Generator().manual_seed(0)
    x, x0 = torch.randn(2, 2, 3, 16, 16, generator=g)
    method = PiGDM()
    op = RandomInpainting(0.5).bind(x.shape, image_generators(0, [0, 1]))
    v = method.guidance_vector(op, op.A(x), x0, 0.5, 0.0, "official")
    assert torch.equal(v, op.mask * (op.A(x) - x0))
    sr = AverageSR(4)
    v = method.guidance_vector(sr, sr.A(x), x0, 0.5, 0.0, "official")
    diff = torch.nn.functional.avg_pool2d(x, 4) - torch.nn.functional.avg_pool2d(x0, 4)
    up = torch.nn.functional.interpolate(diff, scale_factor=4, mode="nearest")
    assert torch.allclose(v, up, atol=1e-6)


@pytest.mark.parametrize("zero", [0, 5])
def test_closed_form_inverse_matches_a_dense_solve(zero):
    """Aᵀ(AAᵀ + cI)⁻¹ r through the SVD equals a dense float64 solve (rank-deficient A too), and
    c = 0 gives A† (the dense pseudo-inverse and the operator's own)."""
    op = RandomSVD((3, 4, 4), m=20, zero=zero)
    a = op.matrix()
    r = torch.randn(2, 20, generator=torch.Generator().manual_seed(1), dtype=F64)
    for c in (1e-3, 0.3, 4.0):
        expect = torch.linalg.solve(a @ a.T + c * torch.eye(20, dtype=F64), r.T).T @ a
        got = regularized_pinv(op, r, c).flatten(1)
        assert torch.allclose(got, expect, rtol=0, atol=1e-10), (c, (got - expect).abs().max())
    pinv = r @ torch.linalg.pinv(a).T
    assert torch.allclose(regularized_pinv(op, r, 0.0).flatten(1), pinv, atol=1e-10)
    assert torch.allclose(op.A_pinv(r).flatten(1), pinv, atol=1e-10)


@pytest.mark.parametrize("operator", [BicubicSR(2), Colorization(), WalshHadamardCS(4)])
def test_paper_vector_matches_dense_solve_on_real_operators(operator):
    """v = r_t² Aᵀ(r_t² AAᵀ + σ_y² I)⁻¹(y − A x̂₀) with r_t² = 1 − ᾱ_t, i.e. c = σ_y²/(1 − ᾱ_t),
    against the dense operator in float64."""
    shape = (3, 8, 8)
    op = operator.bind((1, *shape), image_generators(0, [0]))
    a = dense(op.A, shape)
    g = torch.Generator().manual_seed(2)
    x, x0 = torch.randn(2, 1, *shape, generator=g, dtype=F64)
    y = op.A(x)
    abar_t, sigma_y = 0.3, 0.2
    r2 = 1 - abar_t
    v = PiGDM().guidance_vector(op, y, x0, abar_t, sigma_y, "paper")
    gram = r2 * a @ a.T + sigma_y**2 * torch.eye(a.shape[0], dtype=F64)
    expect = r2 * a.T @ torch.linalg.solve(gram, (y - op.A(x0)).flatten())
    assert torch.allclose(v.flatten(), expect, atol=1e-10)
    # at σ_y = 0 the paper's vector is the official one
    official = PiGDM().guidance_vector(op, y, x0, abar_t, 0.0, "official")
    assert torch.allclose(PiGDM().guidance_vector(op, y, x0, abar_t, 0.0, "paper"), official)


def test_paper_guidance_is_the_exact_likelihood_score_for_unit_gaussian_data():
    """x₀ ~ N(0, I): p(x₀ | x_t) = N(√ᾱ x_t, (1−ᾱ) I) exactly, so J_tᵀ v / r_t² must equal
    ∇ log N(y; √ᾱ A x_t, (1−ᾱ) AAᵀ + σ_y² I), here by autograd of the dense log-density."""
    prior = GaussianPrior(0.0, 1.0)
    shape = (3, 8, 8)
    op = BicubicSR(2)
    a = dense(op.A, shape)
    g = torch.Generator().manual_seed(3)
    x_t = torch.randn(1, *shape, generator=g, dtype=F64)
    y = op.A(torch.randn(1, *shape, generator=g, dtype=F64))
    sigma_y, method = 0.1, PiGDM(form="paper")
    # x̂₀ from ε through the float32 √ᾱ tables loses ~1e-8/ᾱ_t relative: t ≤ 600 keeps it < 1e-5
    for t in (50, 300, 600):
        abar = prior.alphas_cumprod(torch.float32, "cpu")[t + 1].double()
        # the method's guidance: one VJP through x̂₀(x_t)
        x = x_t.clone().requires_grad_(True)
        x0 = prior.x0_from_eps(x, prior.eps(x, t), t)
        v = method.guidance_vector(op, y, x0.detach(), abar.item(), sigma_y, "paper")
        (grad,) = torch.autograd.grad(x0, x, grad_outputs=v)
        # the exact score of the Gaussian likelihood p(y | x_t)
        x = x_t.clone().requires_grad_(True)
        cov = (1 - abar) * a @ a.T + sigma_y**2 * torch.eye(a.shape[0], dtype=F64)
        mean = abar.sqrt() * a @ x.flatten()
        logp = torch.distributions.MultivariateNormal(mean, cov).log_prob(y.flatten())
        (score,) = torch.autograd.grad(logp, x)
        assert torch.allclose(grad / (1 - abar), score, rtol=1e-5, atol=1e-8), t


# -- ΠGDM: whole runs against a reference loop ----------------------------------------------
class UnitGaussian(Denoiser):
    """The exact ε̂ = √(1−ᾱ_t) x_t of x₀ ~ N(0, I), with x̂₀ in float64 arithmetic (the float32
    √ᾱ tables of `x0_from_eps` lose ~1e-8/ᾱ_t relative, 1e-4 near t = 1000)."""

    def forward(self, x, t):
        abar = self.alphas_cumprod(torch.float32, x.device)[t + 1].to(x.dtype)
        return (1 - abar).sqrt().view(-1, 1, 1, 1) * x

    def x0_from_eps(self, x, eps, t, dtype=torch.float32):
        a = self.alphas_cumprod(torch.float32, "cpu")[t + 1].item()
        return (x - math.sqrt(1 - a) * eps) / math.sqrt(a)


def reference_pigdm(op, y, gens, steps, eta, weight, sigma_y, form, abar32, inpainting=False):
    """NVlabs' loop for x̂₀ = √ᾱ_t x_t (J_t = √ᾱ_t I), written from the paper's algebra with a
    dense float64 A: one init normal, then one normal per step after the guidance."""
    ts = pigdm_timesteps(steps)
    shape = (*y.shape[:1], 3, 8, 8)
    a = dense(op.A, shape[1:])
    pinv = torch.linalg.pinv(a)
    ab = [abar32[t + 1].item() for t in range(-1, 1000)]
    x = math.sqrt(ab[ts[-1] + 1]) * (y.flatten(1) @ pinv.T).view(shape)
    x = x + math.sqrt(1 - ab[ts[-1] + 1]) * randn(shape[1:], gens, "cpu", F64)
    for t, s in zip(reversed(ts), reversed([-1, *ts[:-1]]), strict=True):
        a_t, a_s = ab[t + 1], ab[s + 1]
        x0 = math.sqrt(a_t) * x
        eps = math.sqrt(1 - a_t) * x
        res = (y.flatten(1) - x0.flatten(1) @ a.T).T
        if form == "official":
            r = (pinv @ res).T.view(shape)
        else:
            r2 = 1 - a_t
            gram = r2 * a @ a.T + sigma_y**2 * torch.eye(a.shape[0], dtype=F64)
            r = (r2 * a.T @ torch.linalg.solve(gram, res)).T.view(shape)
        g = math.sqrt(a_t) * r  # Jᵀ r with J = √ᾱ_t I
        if inpainting:  # observed pixels of x̂₀ ← y, guidance only in the holes
            m = op.mask
            x0, g = x0 * (1 - m) + y, g * (1 - m)
        c1 = eta * math.sqrt((1 - a_t / a_s) * (1 - a_s) / (1 - a_t))
        c2 = math.sqrt(max(1 - a_s - c1**2, 0.0))
        z = randn(shape[1:], gens, "cpu", F64)
        x = math.sqrt(a_s) * x0 + c1 * z + c2 * eps + math.sqrt(a_s) * math.sqrt(a_t) * weight * g
    return x


@pytest.mark.parametrize(
    ("form", "sigma_y", "eta"),
    [("official", 0.0, 0.0), ("official", 0.0, 1.0), ("paper", 0.3, 0.0), ("paper", 0.3, 1.0)],
)
def test_pigdm_run_equals_the_closed_form_loop(form, sigma_y, eta):
    """With the unit Gaussian prior one step is exactly x_s = √ᾱ_s x̂₀ + c₁ z + c₂ ε̂ +
    √ᾱ_s ᾱ_t w v; the run replays the reference's random draws (also at η = 0) to 1e-10."""
    prior = UnitGaussian()
    x = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(4), dtype=F64)
    op = BicubicSR(2)
    y = op.A(x) + sigma_y * torch.randn(2, 3, 4, 4, generator=torch.Generator(), dtype=F64)
    method = PiGDM(steps=10, eta=eta, weight=0.7, form=form)
    out = method.restore(y, op, prior, image_generators(0, [0, 1]), sigma_y=sigma_y)
    abar32 = prior.alphas_cumprod(torch.float32, "cpu")
    ref = reference_pigdm(op, y, image_generators(0, [0, 1]), 10, eta, 0.7, sigma_y, form, abar32)
    assert torch.allclose(out, ref, rtol=0, atol=1e-10), (out - ref).abs().max()


def test_pigdm_inpainting_replaces_observed_pixels_and_masks_the_guidance():
    """Upstream's `in2` branch: with a diagonal J the guidance cannot reach the holes, so the
    step is DDIM from the hard-replaced x̂₀, and the output equals y on observed pixels."""
    prior = UnitGaussian()
    x = torch.randn(1, 3, 8, 8, generator=torch.Generator().manual_seed(5), dtype=F64)
    op = RandomInpainting(0.5).bind(x.shape, image_generators(0, [0]))
    y = op.A(x)
    out = PiGDM(steps=10, eta=1.0).restore(y, op, prior, image_generators(0, [0]))
    abar32 = prior.alphas_cumprod(torch.float32, "cpu")
    ref = reference_pigdm(
        op, y, image_generators(0, [0]), 10, 1.0, 1.0, 0.0, "official", abar32, inpainting=True
    )
    assert torch.allclose(out, ref, rtol=0, atol=1e-10)
    assert torch.equal(op.A(out), y)


# -- RED-diff: a hand-written loop with torch's Adam ----------------------------------------
def reference_reddiff(op, y, prior, gens, steps, lam, lr, weighting, discard):
    """Upstream's loop at batch size 1: autograd of w_t·mean(sg(ε̂−ε)·x̃₀) + mean((y−Ax̃₀)²)/2,
    Adam(lr, betas (0.9, 0.99), eps 1e-8), draws n₀ then ε per step."""
    mu = op.A_pinv(y).detach().clone().requires_grad_(True)
    adam = torch.optim.Adam([mu], lr=lr, betas=(0.9, 0.99), weight_decay=0.0)
    abar = prior.alphas_cumprod(torch.float32, "cpu")
    for t in reversed(pigdm_timesteps(steps)):
        a_t = abar[t + 1].item()
        n0 = randn(mu.shape[1:], gens, "cpu", mu.dtype)
        noise = randn(mu.shape[1:], gens, "cpu", mu.dtype)
        x0 = mu + 0.0 * n0
        out = x0.detach().clone()
        x_t = math.sqrt(a_t) * x0 + math.sqrt(1 - a_t) * noise
        with torch.no_grad():
            eps = prior.eps(x_t, t)
        sigma = math.sqrt(1 - a_t) / math.sqrt(a_t)
        w = lam * (sigma if weighting == "linear" else 1.0)
        loss = w * ((eps - noise).detach() * x0).mean() + ((y - op.A(x0)) ** 2).mean() / 2
        adam.zero_grad()
        loss.backward()
        adam.step()
    return out if discard else mu.detach()


@pytest.mark.parametrize("weighting", ["linear", "const"])
@pytest.mark.parametrize("discard", [False, True])
def test_reddiff_equals_a_hand_written_adam_loop(weighting, discard, small_set):
    prior = FiniteSetPrior(small_set)
    x = (small_set[1:2] * 0.9).double()  # off the set: the regulariser acts at every step
    op = AverageSR(4)  # m_y = n / 16: the data term's mean is over the measurement
    y = op.A(x)
    method = REDDiff(steps=8, lam=0.25, lr=0.1, weighting=weighting, discard_last_step=discard)
    out = method.restore(y, op, prior, image_generators(0, [7]))
    ref = reference_reddiff(
        op, y, prior, image_generators(0, [7]), 8, 0.25, 0.1, weighting, discard
    )
    assert torch.allclose(out, ref, rtol=0, atol=1e-12), (out - ref).abs().max()
    if not discard:  # the last Adam step moved μ away from the x̃₀ upstream returns
        before = reference_reddiff(
            op, y, prior, image_generators(0, [7]), 8, 0.25, 0.1, weighting, True
        )
        assert (out - before).abs().max() > 1e-4


def test_reddiff_without_regulariser_keeps_the_masked_measurement():
    """λ = 0, 0/1 mask, μ₀ = m ⊙ y: the data gradient is exactly 0, μ never moves."""
    x = torch.rand(1, 3, 16, 16) * 2 - 1
    op = RandomInpainting(0.5).bind(x.shape, image_generators(0, [0]))
    y = op.A(x)
    out = REDDiff(steps=10, lam=0.0).restore(y, op, GaussianPrior(), image_generators(0, [0]))
    assert torch.equal(out, y)


# -- what each method needs from the network ------------------------------------------------
class _Count(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, owner):
        ctx.owner = owner
        return x.clone()

    @staticmethod
    def backward(ctx, grad):
        if ctx.owner.fail_on_backward:
            raise RuntimeError("backward through the network")
        ctx.owner.backwards += 1
        return grad, None


class Watched(Denoiser):
    """A prior that counts its forward and backward passes (or fails on a backward)."""

    def __init__(self, inner: Denoiser, fail_on_backward: bool = False) -> None:
        super().__init__()
        self.inner, self.fail_on_backward = inner, fail_on_backward
        self.forwards = self.backwards = 0

    def forward(self, x, t):
        self.forwards += 1
        return _Count.apply(self.inner(x, t), self)


def test_nfe_and_backward_passes(small_set):
    """RED-diff runs with a network that fails on backward; ΠGDM makes one VJP per forward."""
    x = small_set[:1]
    op, y, gens = measure(Task("sr4", BicubicSR(4), sigma=0.05), x)
    red = Watched(FiniteSetPrior(small_set), fail_on_backward=True)
    REDDiff(steps=10).restore(y, op, red, gens, sigma_y=0.1)
    assert red.forwards == REDDiff(steps=10).nfe == 10
    with pytest.raises(RuntimeError, match="backward through the network"):
        PiGDM(steps=10).restore(y, op, red, image_generators(0, [0]), sigma_y=0.1)
    watched = Watched(FiniteSetPrior(small_set))
    PiGDM(steps=30).restore(y, op, watched, image_generators(0, [0]), sigma_y=0.1)
    assert watched.forwards == watched.backwards == PiGDM(steps=30).nfe == 31
    assert PiGDM.needs_grad and not REDDiff.needs_grad


def test_upstream_forms_never_read_sigma_y(small_set):
    """Noise enters only through y: RED-diff and ΠGDM's official form ignore σ_y."""
    prior = FiniteSetPrior(small_set)
    op, y, _ = measure(Task("sr4", BicubicSR(4), sigma=0.05), small_set[:1])
    for method in (REDDiff(steps=5), PiGDM(steps=5, form="official")):
        a = method.restore(y, op, prior, image_generators(0, [0]), sigma_y=0.0)
        b = method.restore(y, op, prior, image_generators(0, [0]), sigma_y=0.3)
        assert torch.equal(a, b)
    # σ_y in [0, 1] pixel units is doubled once, as upstream's main.py L99-102
    assert Task("t", BicubicSR(4), sigma=0.05).sigma_model == 0.1


# -- known answers on the finite-set prior, batch independence --------------------------------
@pytest.mark.parametrize("method", [PiGDM(), REDDiff()], ids=["pigdm", "reddiff"])
def test_box_inpainting_recovers_the_set_image(method, small_set):
    prior = FiniteSetPrior(small_set)
    x = small_set[1:3]
    op, y, gens = measure(Task("box", BoxInpainting(0.5)), x, indices=(0, 1))
    out = method.restore(y, op, prior, gens)
    assert psnr(out, x).min() > 30, psnr(out, x)
    assert psnr(op.A_pinv(y), x).max() < 30


@pytest.mark.parametrize(
    "method", [PiGDM(steps=8, eta=1.0), REDDiff(steps=8)], ids=["pigdm", "reddiff"]
)
def test_result_independent_of_batch(method, small_set):
    prior = FiniteSetPrior(small_set)
    x = small_set[:3] * 0.8
    task = Task("sr4", BicubicSR(4), sigma=0.02)
    op, y, gens = measure(task, x, indices=(10, 11, 12))
    batch = method.restore(y, op, prior, gens, sigma_y=task.sigma_model)
    op, y, gens = measure(task, x[1:2], indices=(11,))
    single = method.restore(y, op, prior, gens, sigma_y=task.sigma_model)
    assert torch.allclose(batch[1:2], single, rtol=0, atol=1e-6)


# -- operators: what runs, what is refused ---------------------------------------------------
def oldphoto():
    return Composition([AverageSR(2), Colorization(), RandomInpainting(0.8)])


def test_reddiff_runs_on_every_operator_kind(small_set):
    prior = FiniteSetPrior(small_set)
    x = small_set[:1]
    for operator in (WalshHadamardCS(4), oldphoto()):
        task = Task("t", operator, sigma=0.02)
        op, y, gens = measure(task, x)
        REDDiff().check(op, task.sigma_model)
        out = REDDiff(steps=20).restore(y, op, prior, gens, sigma_y=task.sigma_model)
        assert out.shape == x.shape and torch.isfinite(out).all()
        assert (op.A(out) - y).pow(2).mean() < (op.A(op.A_pinv(y) * 0) - y).pow(2).mean()


def test_pigdm_paper_form_needs_an_svd(small_set):
    op = oldphoto().bind((1, 3, 32, 32), image_generators(0, [0]))
    PiGDM().check(op, 0.0)  # official form: A† only
    PiGDM(form="official").check(op, 0.1)
    for method, sigma in ((PiGDM(), 0.1), (PiGDM(form="paper"), 0.0)):
        with pytest.raises(UserError, match="needs an operator with an SVD") as err:
            method.check(op, sigma)
        assert "\n" not in str(err.value)
    prior = FiniteSetPrior(small_set)
    y = op.A(small_set[:1])
    out = PiGDM(steps=5).restore(y, op, prior, image_generators(0, [0]))
    assert torch.isfinite(out).all()


def test_describe_records_the_form_that_runs():
    op = BicubicSR(4)
    method = PiGDM()
    method.check(op, 0.0)
    info = method.describe(op)
    assert info["form_run"] == "official" and info["vjps"] == 50 and info["first_timestep"] == 980
    method.check(op, 0.1)
    assert method.describe(op)["form_run"] == "paper"
    assert REDDiff().describe(op)["vjps"] == 0


@pytest.mark.parametrize("method", [PiGDM(steps=6), REDDiff(steps=6)], ids=["pigdm", "reddiff"])
def test_known_region_is_kept(method, small_set):
    """Mask-shift tiling: the output equals the earlier windows' values on the overlap."""
    prior = FiniteSetPrior(small_set)
    x = small_set[:1]
    op, y, gens = measure(Task("sr4", BicubicSR(4)), x)
    mask = torch.zeros(1, 1, 32, 32, dtype=torch.bool)
    mask[..., :8, :] = True
    values = torch.rand(1, 3, 32, 32)
    out = method.restore(y, op, prior, gens, known=KnownRegion(mask, values))
    assert torch.equal(out[..., :8, :], values[..., :8, :])


# -- end to end -------------------------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.parametrize(
    ("method", "sigma", "form"), [("pigdm", 0.0, "official"), ("reddiff", 0.05, None)]
)
def test_run_py_debug_tiny(method, sigma, form, tmp_path):
    result = run_py(
        [f"method={method}", "debug=tiny", f"task.sigma={sigma}", f"hydra.run.dir={tmp_path}"]
    )
    assert result.returncode == 0, result.stderr[-2000:]
    metrics = json.loads(next(tmp_path.rglob("metrics.json")).read_text())
    assert metrics["nfe"] == 5 and metrics["method"] == method
    if form is not None:
        assert metrics["method_params"]["form_run"] == form
