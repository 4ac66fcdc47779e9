"""The samplers' arithmetic against the official code's: SSD's timesteps, the ᾱ tables at each
method's precision, DDNM+ on the upstream deblurring operators and their GPU order."""

from __future__ import annotations

import math
import re
import warnings
from importlib import resources
from pathlib import Path

import numpy as np
import pytest
import torch

from rnsf.denoisers import GaussianPrior
from rnsf.methods import DDNM, DPS, SSD
from rnsf.methods.dps import posterior_tables
from rnsf.methods.respace import space_timesteps
from rnsf.methods.ssd import generation_coefficients, inversion_coefficients, spaced_timesteps
from rnsf.operators import BicubicSR, Task, UpstreamDeblurring
from rnsf.operators.compat import CUDA_ORDER_SHA256, cuda_order_table, load_cuda_order
from rnsf.utils.random import image_generators

# -- 1. SSD's timesteps: create_space_timesteps accumulates the float stride -----------------

SSD_550_85 = [
    0, 7, 13, 20, 26, 33, 39, 46, 52, 59, 65, 72, 78, 85, 92, 98, 105, 111, 118, 124, 131, 137,
    144, 150, 157, 163, 170, 176, 183, 190, 196, 203, 209, 216, 222, 229, 235, 242, 248, 255, 261,
    268, 274, 281, 288, 294, 301, 307, 314, 320, 327, 333, 340, 346, 353, 359, 366, 373, 379, 386,
    392, 399, 405, 412, 418, 425, 431, 438, 444, 451, 457, 464, 471, 477, 484, 490, 497, 503, 510,
    516, 523, 529, 536, 542, 549,
]  # fmt: skip
SSD_750_85 = [
    0, 9, 18, 27, 36, 45, 53, 62, 71, 80, 89, 98, 107, 116, 125, 134, 143, 152, 160, 169, 178, 187,
    196, 205, 214, 223, 232, 241, 250, 259, 267, 276, 285, 294, 303, 312, 321, 330, 339, 348, 357,
    366, 375, 383, 392, 401, 410, 419, 428, 437, 446, 455, 464, 473, 482, 490, 499, 508, 517, 526,
    535, 544, 553, 562, 571, 580, 589, 597, 606, 615, 624, 633, 642, 651, 660, 669, 678, 687, 695,
    704, 713, 722, 731, 740, 749,
]  # fmt: skip


def test_ssd_timesteps_accumulate_the_float_stride():
    assert spaced_timesteps(550, 85) == SSD_550_85
    assert spaced_timesteps(750, 85) == SSD_750_85
    # where k·stride rounded directly would differ (the lists the project used to build)
    assert spaced_timesteps(550, 85)[70] == 457 and round(70 * 549 / 84) == 458
    picks = [spaced_timesteps(750, 85)[i] for i in (6, 30, 42, 66, 78)]
    assert picks == [53, 267, 375, 589, 695]
    assert spaced_timesteps(550, 25) == [
        0, 23, 46, 69, 92, 114, 137, 160, 183, 206, 229, 252, 274, 297, 320, 343, 366, 389, 412,
        435, 458, 480, 503, 526, 549,
    ]  # fmt: skip
    assert spaced_timesteps(750, 25) == [
        0, 31, 62, 94, 125, 156, 187, 218, 250, 281, 312, 343, 374, 406, 437, 468, 499, 531, 562,
        593, 624, 655, 687, 718, 749,
    ]  # fmt: skip
    assert spaced_timesteps(750, 15) == [
        0, 54, 107, 160, 214, 268, 321, 374, 428, 482, 535, 588, 642, 696, 749,
    ]  # fmt: skip
    with pytest.raises(ValueError, match="cannot space"):
        spaced_timesteps(10, 20)


def test_ssd_calls_the_network_at_the_spaced_timesteps():
    seen = []

    class Recording(GaussianPrior):
        def forward(self, x, t):
            seen.append(int(t[0]))
            return super().forward(x, t)

    x = torch.linspace(-0.5, 0.5, 3 * 16 * 16).reshape(1, 3, 16, 16)
    gens = image_generators(0, [0])
    op, y = Task("sr4", BicubicSR(4)).measure(x, gens)
    SSD(steps=100).restore(y, op, Recording(), gens)
    forward = spaced_timesteps(550, 15)
    assert seen == forward[:-1] + SSD_550_85[::-1]


# -- 4. ᾱ tables at each method's precision, as upstream builds them -------------------------


def _numpy_diffusion(timesteps):
    """guided-diffusion's float64 tables of a SpacedDiffusion over `timesteps` (respace.py +
    gaussian_diffusion.py), written out in NumPy."""
    betas = np.linspace(1e-4, 0.02, 1000, dtype=np.float64)
    base = np.cumprod(1.0 - betas)
    keep, last, new = set(timesteps), 1.0, []
    for i, a in enumerate(base):
        if i in keep:
            new.append(1 - a / last)
            last = a
    b = np.array(new)
    ac = np.cumprod(1.0 - b)
    prev = np.append(1.0, ac[:-1])
    pv = b * (1.0 - prev) / (1.0 - ac)
    return {
        "betas": b,
        "ac": ac,
        "prev": prev,
        "next": np.append(ac[1:], 0.0),
        "sqrt_recip": np.sqrt(1.0 / ac),
        "sqrt_recipm1": np.sqrt(1.0 / ac - 1),
        "coef1": b * np.sqrt(prev) / (1.0 - ac),
        "coef2": (1.0 - prev) * np.sqrt(1.0 - b) / (1.0 - ac),
        "log_clipped": np.log(np.append(pv[1], pv[1:])),
        "log_betas": np.log(b),
    }


def _f32(a):
    return torch.from_numpy(np.asarray(a, dtype=np.float64).astype(np.float32))


def test_float32_table_is_compute_alpha():
    """DDNM/DDRM: float32 cumprod of the float32 betas with a 0 prepended (`compute_alpha`)."""
    betas = torch.from_numpy(np.linspace(1e-4, 0.02, 1000)).float()
    reference = (1 - torch.cat([torch.zeros(1), betas])).cumprod(dim=0)
    table = GaussianPrior().alphas_cumprod(torch.float32)
    assert table.dtype == torch.float32 and torch.equal(table, reference)
    x, eps = torch.randn(2, 3, 8, 8), torch.randn(2, 3, 8, 8)
    for t in (0, 1, 500, 999):
        at = reference[t + 1]
        # svd_ddnm.py / ddrm denoising.py, with correctly rounded float32 roots (CUDA's sqrtf)
        root, root_1m = (torch.tensor(np.sqrt(v.numpy())) for v in (at, 1 - at))
        expected = (x - eps * root_1m) / root
        assert torch.equal(GaussianPrior().x0_from_eps(x, eps, t), expected)


def test_float64_tables_are_guided_diffusions():
    """DPS and SSD: guided-diffusion's float64 tables, cast to float32 at use, to the last bit."""
    prior = GaussianPrior()
    abar = prior.alphas_cumprod(torch.float64)
    assert abar.dtype == torch.float64
    full = _numpy_diffusion(range(1000))
    assert torch.equal(abar[1:], torch.from_numpy(np.cumprod(1 - full["betas"])))
    # DPS: posterior mean coefficients, clipped log-variance, log β
    expected = torch.stack([_f32(full[k]) for k in ("coef1", "coef2", "log_clipped", "log_betas")])
    assert torch.equal(posterior_tables(abar, list(range(1000))), expected)
    # a respaced DPS chain (method.steps < 1000) is guided-diffusion's SpacedDiffusion as well
    taus = space_timesteps(1000, 50)
    short = _numpy_diffusion(taus)
    expected = torch.stack([_f32(short[k]) for k in ("coef1", "coef2", "log_clipped", "log_betas")])
    assert torch.equal(posterior_tables(abar, taus), expected)
    # x̂₀ = √(1/ᾱ) x − √(1/ᾱ−1) ε with the factors cast to float32 (_predict_xstart_from_eps)
    ones = torch.ones(1, 1, 1, 1000)
    t_all = range(1000)
    recip = [prior.x0_from_eps(ones, 0 * ones, t, torch.float64)[..., 0] for t in t_all]
    recipm1 = [-prior.x0_from_eps(0 * ones, ones, t, torch.float64)[..., 0] for t in t_all]
    got_recip, got_recipm1 = torch.stack(recip), torch.stack(recipm1)
    assert torch.equal(got_recip.flatten(), _f32(full["sqrt_recip"]))
    assert torch.equal(got_recipm1.flatten(), _f32(full["sqrt_recipm1"]))
    # SSD: the two respaced chains of SSD-100 (t0 = 550) and colorization (t0 = 750)
    for t0, eta in ((550, 0.4), (750, 0.8)):
        fwd = _numpy_diffusion(spaced_timesteps(t0, 15))
        b_next = np.append(fwd["betas"][1:], 0.0)
        inv = inversion_coefficients(abar, spaced_timesteps(t0, 15), eta)
        assert torch.equal(inv[0], torch.from_numpy(np.sqrt(fwd["next"][:-1].astype(np.float32))))
        assert torch.equal(inv[1], _f32(np.sqrt(1 - fwd["next"] - eta * b_next)[:-1]))
        assert torch.equal(inv[2], _f32(np.sqrt(eta * b_next)[:-1]))
        back = _numpy_diffusion(spaced_timesteps(t0, 85))
        prev32 = back["prev"].astype(np.float32)
        root = np.sqrt(np.float32(1) - prev32)
        gen = generation_coefficients(abar, spaced_timesteps(t0, 85), 0.8)
        assert torch.equal(gen[0], torch.from_numpy(np.sqrt(prev32)))
        assert torch.equal(gen[1], torch.from_numpy(np.float32((1 - 0.8**2) ** 0.5) * root))
        assert torch.equal(gen[2], torch.from_numpy(np.float32(0.8) * root))


def test_x0_factors_of_every_ssd_chain_are_those_of_its_respaced_diffusion():
    """x̂₀ reads ᾱ at the original timestep; upstream's respaced chains recompute ᾱ as
    cumprod(1 − β̂). The two differ in the last float64 bits only, and after the cast to float32
    not at all, for every t₀ and chain length SSD uses."""
    b = np.linspace(1e-4, 0.02, 1000)
    base = np.cumprod(1 - b)
    for t0 in range(30, 1001, 7):
        for n in (5, 15, 25, 85):
            if n > t0:
                continue
            taus = spaced_timesteps(t0, n)
            spaced = _numpy_diffusion(taus)
            for key, f in (
                ("sqrt_recip", lambda a: np.sqrt(1 / a)),
                ("sqrt_recipm1", lambda a: np.sqrt(1 / a - 1)),
            ):
                assert np.array_equal(
                    spaced[key].astype(np.float32), f(base[taus]).astype(np.float32)
                ), (t0, n, key)


def test_tables_are_built_once_and_kept_on_the_device(monkeypatch):
    import rnsf.denoisers.base as base
    import rnsf.methods.dps as dps_module
    import rnsf.methods.ssd as ssd_module

    builds = []

    def counting(name, function):
        def wrapper(*args, **kwargs):
            builds.append(name)
            return function(*args, **kwargs)

        return wrapper

    monkeypatch.setattr(base, "alphas_cumprod", counting("abar", base.alphas_cumprod))
    for module, name in (
        (ssd_module, "inversion_coefficients"),
        (ssd_module, "generation_coefficients"),
        (dps_module, "posterior_tables"),
    ):
        monkeypatch.setattr(module, name, counting(name, getattr(module, name)))
    prior = GaussianPrior(0.0, 0.5)
    x = torch.linspace(-0.5, 0.5, 3 * 16 * 16).reshape(1, 3, 16, 16)
    op, y = Task("sr4", BicubicSR(4)).measure(x, image_generators(0, [0]))
    ssd, dps = SSD(steps=30), DPS(steps=5)  # respaced DPS: the tables' plumbing, quickly
    for _ in range(2):
        ssd.restore(y, op, prior, image_generators(0, [0]))
        dps.restore(y, op, prior, image_generators(0, [0]))
    # ᾱ in float32 (the prior's own forward) and float64, each once; each method's tables once
    assert sorted(builds) == sorted(
        ["abar", "abar", "inversion_coefficients", "generation_coefficients", "posterior_tables"]
    )
    taus = space_timesteps(1000, 5)
    assert dps.tables(prior, taus, "cpu") is dps.tables(prior, taus, "cpu")
    assert prior.alphas_cumprod(torch.float64) is prior.alphas_cumprod(torch.float64)


def test_no_sampler_touches_a_private_attribute_of_the_denoiser():
    methods = Path(__file__).parents[1] / "src" / "rnsf" / "methods"
    for path in methods.glob("*.py"):
        assert not re.search(r"denoiser\._", path.read_text()), path.name


# -- 3. upstream's GPU order of the deblurring singular values ------------------------------

KERNELS = {"ddrm5": (5, 10.0), "ssd9": (9, 15.0)}


def test_the_shipped_table_is_the_recorded_file():
    data = resources.files("rnsf.operators").joinpath("data", "deblur_cuda_order.npz").read_bytes()
    import hashlib

    assert hashlib.sha256(data).hexdigest() == CUDA_ORDER_SHA256
    assert sorted(cuda_order_table()) == sorted(
        f"{k}_{n}_{part}" for k in KERNELS for n in (64, 128, 256) for part in ("perm", "singulars")
    )
    damaged = bytearray(data)
    damaged[-1] ^= 1
    with pytest.raises(RuntimeError, match="sha256"):
        load_cuda_order(bytes(damaged))


def test_operator_with_the_table_is_upstreams_flat_operator():
    """A 64×64 image through a literal flat re-implementation of upstream `Deblurring` built
    from the table (Vt permuted by _perm, singulars().repeat(1, 3), U scattered back)."""
    n = 64
    table = cuda_order_table()
    perm = torch.from_numpy(table[f"ddrm5_{n}_perm"].astype(np.int64))
    values = torch.from_numpy(table[f"ddrm5_{n}_singulars"]).double()
    op = UpstreamDeblurring(5, 10.0)
    f = op.factors(n, n, torch.empty(0, dtype=torch.float64))[0]
    x = torch.randn(2, 3, n, n, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    spectral = (f.V.T @ x @ f.V).reshape(2, 3, n * n)[:, :, perm].permute(0, 2, 1).reshape(2, -1)
    scaled = values.repeat(1, 3).reshape(-1) * spectral
    back = torch.zeros(2, n * n, 3, dtype=torch.float64)
    back[:, perm, :] = scaled.reshape(2, n * n, 3)
    expected = f.U @ back.permute(0, 2, 1).reshape(2, 3, n, n) @ f.U.T
    assert torch.allclose(op.A(x), expected, atol=1e-12, rtol=0)


def test_other_sizes_fall_back_with_one_warning():
    op = UpstreamDeblurring(9, 15.0)
    with pytest.warns(UserWarning, match="not upstream's GPU order"):
        op.singulars(torch.zeros(1, 3, 32, 32))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        op.singulars(torch.zeros(1, 3, 48, 48))
        op.singulars(torch.zeros(1, 3, 64, 64))  # the table: no warning either


# -- 2. DDNM+ on the upstream deblurring operators ------------------------------------------


def _upstream_lambda_weights(op, n, a, sigma_y, sigma_t, eta):
    """`Deblurring.Lambda`'s λ and `Lambda_noise`'s d₁, d₂ laid out as upstream computes them:
    over k in _perm order, from `_singulars_orig[_perm]`, then scattered back to the grid
    positions _perm[k] that the coordinates they multiply came from."""
    _, perm = op.sorted_singulars(n)
    sv = torch.linalg.svdvals(op.matrix(n))
    orig = (sv[:, None] * sv[None, :]).reshape(-1)[perm]  # _singulars_orig[_perm]
    inv = 1.0 / orig
    inv[orig == 0] = 0.0
    change = (sigma_t < a * sigma_y * inv).double()
    lam = (1 - change) + change * (orig * sigma_t * (1 - eta**2) ** 0.5 / a / sigma_y)
    d1 = torch.full_like(orig, sigma_t * eta)
    d2 = torch.full_like(orig, sigma_t * (1 - eta**2) ** 0.5)
    d1 = d1 * (1 - change) + change * sigma_t * eta
    d2 = d2 * (1 - change)
    more = (sigma_t > a * sigma_y * inv).double()
    d1 = d1 * (1 - more) + torch.sqrt(more * (sigma_t**2 - a**2 * sigma_y**2 * inv**2))
    d2 = d2 * (1 - more)
    null = (orig == 0).double()
    d1 = d1 * (1 - null) + null * sigma_t * eta
    d2 = d2 * (1 - null) + null * sigma_t * (1 - eta**2) ** 0.5

    def grid(values):
        out = torch.empty_like(values)
        out[perm] = values
        return out.view(1, n, n)

    return grid(lam), grid(d1), grid(d2)


@pytest.mark.parametrize("kernel", [(5, 10.0), (9, 15.0)], ids=["ddrm5", "ssd9"])
def test_ddnm_plus_weighs_deblurring_with_the_unthresholded_singulars(kernel):
    n, eta, a, sigma_y = 64, 0.85, 0.98, 0.1
    op = UpstreamDeblurring(*kernel)
    method = DDNM(eta=eta)
    like = torch.zeros(1, 3, n, n, dtype=torch.float64)
    w = torch.randn(1, 3, n, n, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    u = torch.randn(1, 3, n, n, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    s1 = op.factors(n, n, like)[0].s
    thresholded = (s1[:, None] * s1[None, :])[None]  # the thresholded grid, untiled
    for sigma_t in (0.002, 0.05, 0.4):
        lam, d1, d2 = _upstream_lambda_weights(op, n, a, sigma_y, sigma_t, eta)
        ours = method._ddnm_plus_weight(op, like, a, sigma_t, sigma_y)
        assert torch.allclose(ours.expand(3, n, n), lam.expand(3, n, n), rtol=1e-12, atol=0)
        # Lambda: V diag(λ) Vᵀ, each coordinate with its own singular value in every channel
        v = op.V(w)
        expected = op.V(lam * op.Vt(v))
        assert torch.allclose(op.V(ours * op.Vt(v)), expected, atol=1e-12)
        # Lambda_noise with Vᵀ applied (the documented departure): z = V w gives Vᵀz = w
        noise = method._ddnm_plus_noise(op, op.V(w), op.V(u), a, sigma_t, sigma_y)
        assert torch.allclose(noise, op.V(d1 * w + d2 * u), atol=1e-12)
    # the unthresholded values reach coordinates whose thresholded singular value is 0
    lam = method._ddnm_plus_weight(op, like, a, 0.4, sigma_y)
    assert (thresholded == 0).any() and (lam[thresholded == 0] < 1).all()
    assert (lam[thresholded > 0.5] == 1).all()


def test_ddnm_plus_runs_on_the_benchmark_deblur_with_noise():
    x = torch.linspace(-0.8, 0.8, 3 * 64 * 64).reshape(1, 3, 64, 64)
    task = Task("deblur_gauss_ddrm", UpstreamDeblurring(5, 10.0), sigma=0.05)
    gens = image_generators(0, [0])
    op, y = task.measure(x, gens)
    out = DDNM(steps=5).restore(y, op, GaussianPrior(0.0, 0.5), gens, sigma_y=task.sigma_model)
    assert out.shape == x.shape and torch.isfinite(out).all()
    assert math.isfinite(float((op.A(out) - y).norm()))
