"""DiffPIR and DAPS against their upstream schedules, closed forms and known answers
(specs upstream-diffpir-daps §6)."""

from __future__ import annotations

import math

import pytest
import torch

from rnsf.denoisers import FiniteSetPrior, GaussianPrior
from rnsf.denoisers.base import Denoiser
from rnsf.diffusion import alphas_cumprod, linear_betas
from rnsf.methods import DAPS, DiffPIR
from rnsf.methods import diffpir as diffpir_module
from rnsf.methods.constraint import KnownRegion
from rnsf.methods.daps import annealing_sigmas, c_noise, is_box_mask, ode_sigmas, vp_time
from rnsf.methods.diffpir import diffpir_timesteps, prox, rho_table
from rnsf.metrics import psnr
from rnsf.operators import (
    AverageSR,
    BicubicSR,
    BoxInpainting,
    Colorization,
    Composition,
    Denoising,
    GaussianBlur,
    RandomInpainting,
    Task,
    WalshHadamardCS,
)
from rnsf.utils.errors import UserError
from rnsf.utils.random import image_generators, randn

from conftest import run_py

ABAR32 = alphas_cumprod(linear_betas(), torch.float32)


def restore(method, task, x, prior, indices=None, **kwargs):
    gens = image_generators(0, indices if indices is not None else range(x.shape[0]))
    op, y = task.measure(x, gens)
    out = method.restore(y, op, prior, gens, sigma_y=task.sigma_model, **kwargs)
    return out, op, y


class Counting(GaussianPrior):
    """The Gaussian prior, recording the timestep of every network call."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.calls: list[float] = []

    def forward(self, x, t):
        self.calls.append(t[0].item())
        return super().forward(x, t)


# -- DiffPIR: timesteps, ρ_t and units ----------------------------------------------------------
def test_diffpir_timesteps_are_upstreams_lists():
    quad100 = diffpir_timesteps(100, "quad")
    assert len(quad100) == 100 and len(set(quad100)) == 100
    assert quad100[:5] == [999, 899, 857, 825, 798] and quad100[-5:] == [20, 15, 10, 5, 0]
    assert diffpir_timesteps(20, "quad") == [
        *(999, 770, 675, 602, 541, 487, 438, 393, 351, 311),
        *(274, 239, 205, 172, 141, 111, 82, 54, 26, 0),
    ]
    assert diffpir_timesteps(100, "uniform") == [999, *range(989, 8, -10), 0]
    assert diffpir_timesteps(20, "uniform") == [999, *range(949, 48, -50), 0]
    assert DiffPIR().nfe == 100 and DiffPIR(skip_type="uniform").nfe == 101
    assert DiffPIR(steps=20).nfe == 20 and DiffPIR(output="x0").nfe == 99


@pytest.mark.parametrize("output", ["state", "x0"])
def test_diffpir_network_sees_the_listed_integer_timesteps(output, small_set):
    prior = Counting(0.0, 0.5)
    method = DiffPIR(steps=12, output=output)
    restore(method, Task("sr4", BicubicSR(4)), small_set[:1], prior)
    expected = diffpir_timesteps(12)[: method.nfe]
    assert prior.calls == expected and len(prior.calls) == method.nfe
    assert all(float(t).is_integer() for t in prior.calls)


def test_diffpir_rho_and_noise_units():
    """task.sigma 0.05 (pixel units) reaches the sampler as 0.1 and ρ as upstream's σ_n = 0.05:
    with λ = 7, ρ_999 = 7.06e-7 and ρ_0 = 174.95; σ_y = 0 uses the 0.001 floor, ρ_0 = 0.0100 λ."""
    task = Task("t", Denoising(), sigma=0.05)
    assert task.sigma_model == pytest.approx(0.1)
    rho = rho_table(ABAR32, 7.0, task.sigma_model)
    assert rho[999].item() == pytest.approx(7.06e-7, rel=1e-3)
    assert rho[0].item() == pytest.approx(174.95, rel=1e-3)
    rho = rho_table(ABAR32, 3.0, 0.0)
    assert rho[0].item() == pytest.approx(0.0100 * 3.0, rel=1e-3)
    assert rho[999].item() == pytest.approx(4.04e-11 * 3.0, rel=1e-2)
    # the measurement's noise has the configured std in pixel units
    x = torch.zeros(4, 3, 32, 32)
    _, y = task.measure(x, image_generators(0, range(4)))
    assert (y - x).std().item() / 2 == pytest.approx(0.05, rel=0.02)


def test_diffpir_uses_rho_of_the_visited_timestep_and_task_defaults(monkeypatch, small_set):
    seen = []

    def spy(operator, x0, y, rho):
        seen.append(rho)
        return prox(operator, x0, y, rho)

    monkeypatch.setattr(diffpir_module, "prox", spy)
    method = DiffPIR(steps=10)
    task = Task("sr4", BicubicSR(4), sigma=0.05)
    restore(method, task, small_set[:1], GaussianPrior(0.0, 0.5))
    lam, zeta = method.settings(BicubicSR(4))
    assert (lam, zeta) == (7.0, 0.25)
    rho = rho_table(ABAR32, lam, task.sigma_model)
    assert seen == pytest.approx([rho[t].item() for t in diffpir_timesteps(10)[:-1]], rel=1e-12)
    box = BoxInpainting(0.5).bind((1, 3, 8, 8), image_generators(0, [0]))
    assert method.settings(box) == (1.0, 1.0)
    assert method.settings(GaussianBlur(3.0, 5)) == (7.0, 0.3)
    assert DiffPIR(lam=2.0, zeta=0.5).settings(box) == (2.0, 0.5)


# -- DiffPIR: the proximal step -------------------------------------------------------------------
def dense(operator, shape) -> torch.Tensor:
    """The float64 matrix of `operator` on images of `shape` (columns: A of basis images)."""
    n = math.prod(shape)
    basis = torch.eye(n, dtype=torch.float64).view(n, *shape)
    return operator.A(basis).reshape(n, -1).T


PROX_OPERATORS = {
    "bicubic_sr2": lambda: BicubicSR(2),
    "average_sr2": lambda: AverageSR(2),
    "blur": lambda: GaussianBlur(1.5, 5),
    "colorization": Colorization,
    "cs4": lambda: WalshHadamardCS(4),
    "denoising": Denoising,
    "random_inpainting": lambda: RandomInpainting(0.5).bind((1, 3, 8, 8), image_generators(3, [0])),
}


@pytest.mark.parametrize("rho", [1.0, 1e-3, 3e-10])
@pytest.mark.parametrize("name", sorted(PROX_OPERATORS))
def test_prox_equals_the_dense_float64_solve(name, rho):
    op = PROX_OPERATORS[name]()
    shape = (3, 8, 8)
    g = torch.Generator().manual_seed(1)
    x0 = torch.randn(1, *shape, generator=g, dtype=torch.float64)
    y = op.A(torch.randn(1, *shape, generator=g, dtype=torch.float64))
    y = y + 0.1 * torch.randn(y.shape, generator=g, dtype=torch.float64)
    a = dense(op, shape)
    rhs = a.T @ y.flatten() + rho * x0.flatten()
    want = torch.linalg.solve(a.T @ a + rho * torch.eye(a.shape[1], dtype=a.dtype), rhs)
    got = prox(op, x0, y, rho).flatten()
    scale = want.abs().max()
    assert ((got - want).abs().max() / scale).item() < (1e-10 if rho >= 1e-3 else 1e-6)
    if name == "random_inpainting":  # the elementwise form (M y + ρ x̂₀) / (M + ρ)
        m = op.mask.double()
        assert torch.allclose(prox(op, x0, y, rho), (m * y + rho * x0) / (m + rho), atol=1e-12)


def fft_prox(x0, y, kernel, sf, rho):
    """Upstream's USRNet solve (utils_sisr.py L65-95, per channel) for A = decimation (offset 0,
    stride sf) of the circular convolution with `kernel`, centred as `p2o` does, in x0's dtype."""
    h, w = x0.shape[-2:]
    k = torch.zeros(h, w, dtype=x0.dtype)
    k[: kernel.shape[0], : kernel.shape[1]] = kernel
    k = torch.roll(k, (-(kernel.shape[0] // 2), -(kernel.shape[1] // 2)), dims=(0, 1))
    fb = torch.fft.fft2(k)
    up = torch.zeros_like(x0)
    up[..., ::sf, ::sf] = y
    d = fb.conj() * torch.fft.fft2(up) + rho * torch.fft.fft2(x0)

    def mean_blocks(a):
        return a.reshape(*a.shape[:-2], sf, h // sf, sf, w // sf).mean(dim=(-4, -2))

    ratio = mean_blocks(fb * d) / (mean_blocks(fb.abs() ** 2) + rho)
    x = (d - fb.conj() * ratio.repeat(*[1] * (ratio.dim() - 2), sf, sf)) / rho
    return torch.fft.ifft2(x).real


def circular(x, kernel, sf):
    """The operator `fft_prox` inverts: circular convolution, then offset-0 decimation."""
    h, w = x.shape[-2:]
    k = torch.zeros(h, w, dtype=x.dtype)
    k[: kernel.shape[0], : kernel.shape[1]] = kernel
    k = torch.roll(k, (-(kernel.shape[0] // 2), -(kernel.shape[1] // 2)), dims=(0, 1))
    blurred = torch.fft.ifft2(torch.fft.fft2(k) * torch.fft.fft2(x)).real
    return blurred[..., ::sf, ::sf]


@pytest.mark.parametrize("sf", [1, 2, 4])
def test_upstream_fft_prox_is_the_dense_solve_of_the_circular_operator(sf):
    """What the official SR/deblur prox computes: the exact prox of a circular operator."""
    g = torch.Generator().manual_seed(sf)
    kernel = torch.rand(7, 7, generator=g, dtype=torch.float64)
    kernel /= kernel.sum()
    n = 16
    basis = torch.eye(n * n, dtype=torch.float64).view(-1, n, n)
    a = circular(basis, kernel, sf).reshape(n * n, -1).T
    x0 = torch.randn(n, n, generator=g, dtype=torch.float64)
    y = circular(torch.randn(n, n, generator=g, dtype=torch.float64), kernel, sf)
    for rho in (1.0, 1e-3):
        rhs = a.T @ y.flatten() + rho * x0.flatten()
        want = torch.linalg.solve(a.T @ a + rho * torch.eye(n * n, dtype=a.dtype), rhs)
        got = fft_prox(x0, y, kernel, sf, rho).flatten()
        assert (got - want).abs().max() < 1e-10 * want.abs().max()


def test_float32_prox_holds_at_tiny_rho_where_upstreams_form_breaks():
    """ρ = 7e-7 (λ = 7, t = 999, σ_y = 0.05) and 3e-10 (the σ_y = 0 floor): the SVD prox in
    float32 stays within 1e-5 of float64 (relative to the largest value; measured 6e-7), while
    upstream's FFT subtraction form in float32 is off by more than the image's range at 3e-10
    (measured 21; specs D6)."""
    g = torch.Generator().manual_seed(0)
    x = torch.rand(1, 3, 64, 64, generator=g, dtype=torch.float64) * 2 - 1
    x0 = torch.rand(1, 3, 64, 64, generator=g, dtype=torch.float64) * 2 - 1
    for op in (GaussianBlur(3.0, 19), BicubicSR(4)):
        y = op.A(x) + 0.1 * torch.randn(op.A(x).shape, generator=g, dtype=torch.float64)
        for rho in (7e-7, 3e-10):
            exact = prox(op, x0, y, rho)
            single = prox(op, x0.float(), y.float(), rho).double()
            assert ((single - exact).abs().max() / exact.abs().max()).item() < 1e-5
    kernel = GaussianBlur(3.0, 19).kernel()
    kernel = kernel[:, None] * kernel[None, :]
    y = circular(x[0, 0], kernel, 1)
    exact = fft_prox(x0[0, 0], y, kernel, 1, 3e-10)
    single = fft_prox(x0[0, 0].float(), y.float(), kernel.float(), 1, 3e-10).double()
    assert (single - exact).abs().max() > 2.0


# -- DiffPIR: the re-noising algebra and the output ----------------------------------------------
@pytest.mark.parametrize("zeta", [0.0, 0.3, 1.0])
def test_diffpir_renoising_replays_exactly(zeta, small_set):
    """x_{t'} = √ᾱ_{t'} x̃₀ + √(1−ᾱ_{t'}) (√(1−ζ) ε̂ + √ζ z), ε̂ from the post-prox x̃₀ and z the
    image's next draw; x̂₀ is clamped before the prox. The prior's std 3 puts x̂₀ outside [-1, 1]."""
    prior = GaussianPrior(0.0, 3.0)
    method = DiffPIR(steps=8, zeta=zeta)
    task = Task("sr4", BicubicSR(4), sigma=0.05)
    x = small_set[:2]
    gens = image_generators(0, [0, 1])
    op, y = task.measure(x, gens)
    steps = []
    out = method.restore(y, op, prior, gens, sigma_y=task.sigma_model, callback=steps.append)
    replay = image_generators(0, [0, 1])
    task.measure(x, replay)  # the measurement's draw
    abar = ABAR32.double()
    lam, _ = method.settings(op)
    rho = rho_table(ABAR32, lam, task.sigma_model)
    ts = method.timesteps
    x_t = abar[ts[0] + 1].sqrt() * op.A_pinv(y) + (1 - abar[ts[0] + 1]).sqrt() * randn(
        (3, 32, 32), replay, "cpu"
    )
    assert torch.allclose(
        steps[0].x0,
        GaussianPrior(0.0, 3.0)
        .x0_from_eps(x_t, prior.eps(x_t, ts[0]), ts[0], torch.float64)
        .clamp(-1, 1),
        atol=1e-6,
    )
    for i, info in enumerate(steps[:-1]):
        t, t_next = ts[i], ts[i + 1]
        assert info.x0.abs().max() <= 1.0
        assert torch.allclose(info.x0_corrected, prox(op, info.x0, y, rho[t].item()), atol=1e-5)
        eps_hat = (x_t - abar[t + 1].sqrt() * info.x0_corrected) / (1 - abar[t + 1]).sqrt()
        z = randn((3, 32, 32), replay, "cpu")
        a = abar[t_next + 1]
        want = a.sqrt() * info.x0_corrected + (1 - a).sqrt() * (
            math.sqrt(1 - zeta) * eps_hat + math.sqrt(zeta) * z
        )
        assert torch.allclose(info.x, want.float(), atol=1e-5), i
        x_t = info.x
    # D2: the output is the state at t = 0, not the network's last x̂₀
    assert steps[-1].t == 0 and torch.equal(out, steps[-1].x)
    assert not torch.allclose(out, steps[-1].x0, atol=1e-4) or zeta == 0.0


def test_diffpir_output_x0_returns_the_last_corrected_estimate(small_set):
    steps = []
    out, _, _ = restore(
        DiffPIR(steps=6, output="x0"),
        Task("sr4", BicubicSR(4)),
        small_set[:1],
        GaussianPrior(0.0, 0.5),
        callback=steps.append,
    )
    assert len(steps) == 5 and torch.equal(out, steps[-1].x0_corrected)


# -- DAPS: the denoiser wrapper and the schedules -------------------------------------------------
class LinearStub(Denoiser):
    """ε(x, t) = a x + b t, with t as the network receives it (float)."""

    a, b = 0.3, 0.002

    def forward(self, x, t):
        return self.a * x + self.b * t.view(-1, 1, 1, 1).to(x.dtype)


def test_daps_denoiser_is_vpprecond_with_a_float_timestep():
    x = torch.randn(2, 3, 4, 4, dtype=torch.float64)
    stub = LinearStub()
    for sigma in (100.0, 3.0, 0.5, 0.01):
        t = (math.sqrt(0.1**2 + 2 * 19.9 * math.log(1 + sigma**2)) - 0.1) / 19.9
        want = x - sigma * (stub.a * x / math.sqrt(1 + sigma**2) + stub.b * 999 * t)
        got = DAPS.denoise(stub, x, sigma)
        assert torch.allclose(got, want, atol=1e-5 * max(1.0, sigma)), sigma
        assert vp_time(sigma) == pytest.approx(t, rel=1e-12)


def test_daps_timestep_lies_half_a_step_to_three_steps_above_the_discrete_index():
    """c(σ̄_i) − i ∈ [0.507, 3.377] (specs A5), σ̄ in float64 from the float32 ᾱ table."""
    a = ABAR32.double()[1:]
    sigma_bar = ((1 - a).sqrt() / a.sqrt()).tolist()
    offsets = [c_noise(s) - i for i, s in enumerate(sigma_bar)]
    assert min(offsets) == pytest.approx(0.507, abs=1e-3)
    assert max(offsets) == pytest.approx(3.377, abs=1e-3) and offsets[999] == max(offsets)
    assert offsets[0] == pytest.approx(0.916, abs=1e-3)


def test_daps_annealing_and_ode_grids():
    main = annealing_sigmas(200)
    assert len(main) == 201 and main[-1] == 0.0
    assert main[:3] == pytest.approx([100.0, 97.825, 95.691], abs=1e-3)
    assert main[-4:-1] == pytest.approx([0.11906, 0.11240, 0.10604], abs=1e-5)
    legacy = annealing_sigmas(200, variant="legacy")
    assert len(legacy) == 201 and legacy[-2:] == pytest.approx([0.1, 0.0])
    inner = ode_sigmas(100.0)
    assert inner == pytest.approx([100, 33.035, 8.8564, 1.7480, 0.21063, 0.01], rel=1e-4)
    assert ode_sigmas(100.0, variant="legacy")[-2:] == pytest.approx([0.01, 0.0])
    assert DAPS().lr_at(0, 1.0) == 1.0
    assert DAPS().lr_at(199, 1.0) == pytest.approx(0.01985, abs=1e-5)
    assert DAPS(variant="legacy").lr_at(199, 1.0) == pytest.approx(0.01495, abs=1e-5)
    assert DAPS().nfe == 1000 and DAPS().levels == 200
    assert DAPS(steps=5).nfe == 5 and DAPS(steps=7).nfe == 5 and DAPS(steps=30).levels == 6


def test_daps_calls_the_network_five_times_per_level_and_never_in_langevin(small_set):
    prior = Counting(0.0, 0.5)
    method = DAPS(steps=15, langevin_steps=7)
    restore(method, Task("sr4", BicubicSR(4)), small_set[:1], prior)
    assert len(prior.calls) == method.nfe == 15
    want = [c_noise(s) for k in range(3) for s in ode_sigmas(method.sigmas[k])[:-1]]
    assert prior.calls == pytest.approx(want, abs=1e-3)


class OnlyAAt:
    """An operator that offers A and Aᵀ only, and counts their calls."""

    def __init__(self, operator):
        self.operator, self.calls = operator, {"A": 0, "A_adjoint": 0}

    def A(self, x):
        self.calls["A"] += 1
        return self.operator.A(x)

    def A_adjoint(self, y):
        self.calls["A_adjoint"] += 1
        return self.operator.A_adjoint(y)


@pytest.mark.parametrize("variant, weight", [("main", 2.0), ("legacy", 1.0)])
def test_daps_langevin_target_on_identity(variant, weight):
    """A = I: the chain x ← x + η(−w (x − y)/τ² + (x̂₀ − x)/σ²) + √(2η) z is Gaussian with
    precision P = w/τ² + 1/σ² and mean (w y/τ² + x̂₀/σ²)/P; the discretised chain's stationary
    variance is 1 / (P (1 − ηP/2)). 12,288 independent pixels: the sample mean and variance are
    within 4 standard errors (variance: relative SE √(2/n) = 1.3 %, 5 % allowed)."""
    tau, sigma, lr = 0.5, 0.5, 0.01
    method = DAPS(tau=tau, langevin_steps=400, variant=variant)
    x0 = torch.full((1, 3, 64, 64), 0.3)
    y = torch.full((1, 3, 64, 64), -0.2)
    op = OnlyAAt(Denoising())
    gens = image_generators(0, [0])
    out = method.langevin(x0, y, op, sigma, lr, lambda: randn((3, 64, 64), gens, "cpu"))
    precision = weight / tau**2 + 1 / sigma**2
    mean = (weight * -0.2 / tau**2 + 0.3 / sigma**2) / precision
    var = 1 / (precision * (1 - lr * precision / 2))
    n = out.numel()
    assert abs(out.mean().item() - mean) < 4 * math.sqrt(var / n)
    assert out.var().item() == pytest.approx(var, rel=0.05)
    assert op.calls == {"A": 400, "A_adjoint": 400}


def test_daps_nan_reset_is_per_image():
    method = DAPS(langevin_steps=3)
    x0 = torch.zeros(2, 3, 8, 8)
    x0[0, 0, 0, 0] = float("nan")
    gens = image_generators(0, [0, 1])
    out = method.langevin(
        x0, x0.nan_to_num(), Denoising(), 1.0, 1e-4, lambda: randn((3, 8, 8), gens, "cpu")
    )
    assert torch.isfinite(out).all() and out[1].abs().sum() > 0
    assert torch.equal(out[0], torch.zeros_like(out[0]))  # upstream zeroes the whole batch


def test_daps_step_size_per_task():
    gens = image_generators(0, [0, 1])
    box = BoxInpainting(0.5).bind((2, 3, 16, 16), gens)
    rand = RandomInpainting(0.5).bind((2, 3, 16, 16), gens)
    assert is_box_mask(box) and not is_box_mask(rand)
    assert DAPS().step_size(box) == 5e-5 and DAPS().step_size(rand) == 1e-4
    assert DAPS().step_size(BicubicSR(4)) == 1e-4 and DAPS(lr=3e-5).step_size(box) == 3e-5


def test_daps_never_differentiates_through_the_network(small_set):
    class NoGrad(GaussianPrior):
        def forward(self, x, t):
            assert not torch.is_grad_enabled() and not x.requires_grad
            return super().forward(x, t)

    assert not DAPS.needs_grad
    with torch.enable_grad():
        out, _, _ = restore(
            DAPS(steps=10, langevin_steps=3), Task("sr4", BicubicSR(4)), small_set[:1], NoGrad()
        )
    assert not out.requires_grad


# -- both: operators, batches, tiling, known answers ---------------------------------------------
METHODS = {
    "diffpir": lambda: DiffPIR(steps=10),
    "daps": lambda: DAPS(steps=50, langevin_steps=30),
}
#: fewer steps where only the wiring matters
FAST = {
    "diffpir": lambda: DiffPIR(steps=6),
    "daps": lambda: DAPS(steps=20, langevin_steps=8),
}


@pytest.mark.parametrize("name", sorted(METHODS))
def test_result_independent_of_batch_size(name, small_set):
    prior = GaussianPrior(0.1, 0.4)
    task = Task("sr4", BicubicSR(4), sigma=0.05)
    x = small_set[:3] * 0.8
    batch, _, _ = restore(FAST[name](), task, x, prior, indices=[4, 5, 6])
    single, _, _ = restore(FAST[name](), task, x[1:2], prior, indices=[5])
    assert torch.allclose(batch[1:2], single, atol=1e-5)


@pytest.mark.parametrize("name", sorted(METHODS))
def test_finite_set_prior_box_inpainting_recovers_the_image(name, small_set):
    prior = FiniteSetPrior(small_set)
    x = small_set[1:3]
    out, op, y = restore(METHODS[name](), Task("box", BoxInpainting(0.5)), x, prior)
    assert psnr(out, x).min() > 30, psnr(out, x)
    assert psnr(op.A_pinv(y), x).max() < 20  # the box alone is far from it


def test_daps_runs_on_compressed_sensing_and_old_photo(small_set):
    for task in (
        Task("cs4", WalshHadamardCS(4)),
        Task("oldphoto", Composition([AverageSR(2), Colorization(), RandomInpainting(0.8)])),
    ):
        out, _, _ = restore(DAPS(steps=15, langevin_steps=10), task, small_set[:1], GaussianPrior())
        assert out.shape == (1, 3, 32, 32) and torch.isfinite(out).all()


def test_diffpir_runs_on_compressed_sensing_and_refuses_operators_without_svd(small_set):
    out, _, _ = restore(
        DiffPIR(steps=5), Task("cs4", WalshHadamardCS(4)), small_set[:1], GaussianPrior()
    )
    assert torch.isfinite(out).all()
    oldphoto = Composition([AverageSR(2), Colorization(), RandomInpainting(0.8)])
    with pytest.raises(UserError, match="needs an operator with an SVD") as err:
        DiffPIR().check(oldphoto, 0.0)
    assert "\n" not in str(err.value)
    DAPS().check(oldphoto, 0.1)  # A and Aᵀ suffice


@pytest.mark.parametrize("name", sorted(METHODS))
def test_known_region_is_kept_exactly(name, small_set):
    """Mask-shift tiling's hook: the output equals the known values on the known pixels."""
    x = small_set[:1]
    mask = torch.zeros(1, 1, 32, 32, dtype=torch.bool)
    mask[..., :8, :] = True
    known = KnownRegion(mask, x.clone())
    out, _, _ = restore(FAST[name](), Task("sr4", BicubicSR(4)), x, GaussianPrior(), known=known)
    assert torch.equal(out[mask.expand_as(out)], x[mask.expand_as(x)])
    assert FAST[name]().supports_known


@pytest.mark.slow
@pytest.mark.parametrize(
    "args",
    [
        ["method=diffpir", "task.sigma=0.05"],
        ["method=daps", "method.langevin_steps=20", "task=inpaint_box"],
    ],
    ids=["diffpir_noisy", "daps_noiseless"],
)
def test_run_py_end_to_end(args, tmp_path):
    import json

    result = run_py([*args, "debug=tiny", "dataset.limit=1", f"hydra.run.dir={tmp_path}"])
    assert result.returncode == 0, result.stderr[-2000:]
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    method = instantiate_method(args)
    assert metrics["nfe"] == method.nfe and metrics["steps"] == 5


def instantiate_method(args):
    if "method=diffpir" in args:
        return DiffPIR(steps=5)
    return DAPS(steps=5)


def test_diffpir_tiled_windows_keep_their_tasks_settings():
    """A window of a tiled restoration is a generic separable operator: SR windows (y at most
    half the side) take SR's ζ, blur windows (y smaller by the kernel's halo) the deblurring one."""
    from rnsf.methods.diffpir import task_kind
    from rnsf.tiling.grid import plan
    from rnsf.tiling.restrict import restrict

    window = plan(128, 128, 64, 32, "row")[1]
    for operator, kind in (
        (BicubicSR(4), "sr"),
        (AverageSR(2), "sr"),
        (GaussianBlur(3.0, 9), "other"),
    ):
        restricted = restrict(operator, window, 128, 128).operator
        y = restricted.A(torch.zeros(1, 3, 64, 64))
        shrinks = all(2 * m <= 64 for m in y.shape[-2:])
        assert task_kind(restricted, shrinks) == kind


def test_analytic_priors_take_float_timesteps():
    """DAPS hands the network a float timestep; the analytic priors interpolate log ᾱ."""
    prior = GaussianPrior(0.1, 0.4)
    x = torch.randn(1, 3, 4, 4, generator=torch.Generator().manual_seed(0))
    at = {t: prior(x, torch.tensor([t])) for t in (500, 501)}
    assert torch.allclose(prior(x, torch.tensor([500.0])), at[500], atol=1e-6)
    half = prior(x, torch.tensor([500.5]))
    low, high = torch.minimum(at[500], at[501]), torch.maximum(at[500], at[501])
    assert ((half >= low - 1e-6) & (half <= high + 1e-6)).all() and not torch.equal(half, at[500])
