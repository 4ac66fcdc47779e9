"""Mask-shift restoration of images larger than the prior's window (`rnsf.tiling`)."""

from __future__ import annotations

import pytest
import torch

from rnsf.denoisers import FiniteSetPrior, GaussianPrior
from rnsf.denoisers.builtin import load_tiny_prior
from rnsf.methods import DDNM, DDRM, RNSF, Pinv
from rnsf.operators import (
    AverageSR,
    BicubicSR,
    BoxInpainting,
    Colorization,
    Denoising,
    GaussianBlur,
    RandomInpainting,
    UpstreamDeblurring,
    WalshHadamardCS,
)
from rnsf.schedules.lambdas import ExpSchedule
from rnsf.tiling import MaskShift, NotTileable, axis_starts, plan
from rnsf.utils.errors import UserError
from rnsf.utils.random import image_generators

H, W, WIN, STRIDE = 96, 120, 64, 32  # 2 x 3 windows, the last column aligned to the edge


def smooth_image(seed: int, height: int = H, width: int = W) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    coarse = torch.rand(1, 3, height // 8, width // 8, generator=g) * 2 - 1
    return torch.nn.functional.interpolate(coarse, size=(height, width), mode="bilinear")


def window_set_prior(images: list[torch.Tensor], window=WIN, stride=STRIDE) -> FiniteSetPrior:
    """A finite-set prior whose set holds every window of `images` and two distractors."""
    crops = [
        x[0, :, w.rows, w.cols]
        for x in images
        for w in plan(x.shape[-2], x.shape[-1], window, stride)
    ]
    g = torch.Generator().manual_seed(99)
    crops += [torch.rand(3, window, window, generator=g) * 2 - 1 for _ in range(2)]
    return FiniteSetPrior(torch.stack(crops))


def tiled(method, op, x, prior, indices=(0,), seed=0, window=WIN, stride=STRIDE, sigma_y=0.0):
    generators = image_generators(seed, list(indices))
    op = op.bind(x.shape, generators)
    y = op.A(x)
    tiling = MaskShift(window=window, stride=stride, progress=False)
    return tiling.restore(method, y, op, prior, generators, sigma_y=sigma_y), op, y


def psnr(a, b) -> float:
    return float(10 * torch.log10(4 / ((a - b) ** 2).mean()))


def rms_01(r) -> float:  # [0, 1] pixel units, as the consistency metric
    return float(r.pow(2).mean().sqrt() / 2)


# -- the grid ----------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("length", "expected"),
    [(256, [0]), (200, [0]), (384, [0, 128]), (400, [0, 128, 144]), (512, [0, 128, 256])],
)
def test_axis_starts_follow_hq_demo(length, expected):
    # hq_demo: ceil(n/128) - 1 windows at 128 k, the last aligned to the edge when 128 ∤ n
    assert axis_starts(length, 256, 128) == expected


def test_plan_known_bands_are_what_earlier_windows_cover():
    for order in ("row", "column"):
        windows = plan(H, W, WIN, STRIDE, order)
        covered = torch.zeros(H, W, dtype=torch.bool)
        for w in windows:
            known = torch.zeros(w.height, w.width, dtype=torch.bool)
            known[: w.known_top] = True
            known[:, : w.known_left] = True
            assert torch.equal(covered[w.rows, w.cols], known), (order, w)
            covered[w.rows, w.cols] = True
        assert covered.all() and len(windows) == 2 * 3


def test_image_smaller_than_window_is_one_shrunk_window():
    (w,) = plan(24, 40, 64, 32)
    assert (w.top, w.left, w.height, w.width, w.has_known) == (0, 0, 24, 40, False)
    assert [(w.height, w.width) for w in plan(24, 100, 64, 32)] == [(24, 64)] * 3


# -- restoration on analytic priors ---------------------------------------------------------
def test_one_window_image_equals_untiled_to_the_byte(small_set):
    prior, x = FiniteSetPrior(small_set), small_set[:2]
    for op in (BicubicSR(4), BoxInpainting(0.3)):
        generators = image_generators(0, [3, 7])
        bound = op.bind(x.shape, generators)
        y = bound.A(x)
        untiled = DDNM(steps=10).restore(y, bound, prior, image_generators(0, [3, 7]))
        for window in (32, 64):  # the image is exactly one window, or smaller than it
            tiling = MaskShift(window=window, stride=16, progress=False)
            out = tiling.restore(DDNM(steps=10), y, bound, prior, image_generators(0, [3, 7]))
            assert torch.equal(out, untiled)


@pytest.mark.parametrize("op", [BicubicSR(4), AverageSR(4)], ids=["bicubic", "average"])
def test_finite_set_prior_tiled_sr4_recovers_a_stitched_image(op):
    x = smooth_image(1)
    out, _, _ = tiled(DDNM(steps=10), op, x, window_set_prior([x]))
    assert psnr(out, x) > 40


class Recording:
    """A DDNM that records each window's known region and output."""

    def __init__(self, method):
        self.method, self.calls = method, []
        self.nfe, self.name, self.steps = method.nfe, method.name, method.steps
        self.supports_known = True

    def restore(self, y, op, prior, generators, **kw):
        out = self.method.restore(y, op, prior, generators, **kw)
        known = kw.get("known")  # its values are a view of the stitched image: copy them now
        self.calls.append((known and (known.mask, known.values.clone()), out.clone()))
        return out


@pytest.mark.parametrize(
    "op", [BicubicSR(4), RandomInpainting(0.5), Colorization()], ids=["sr", "inpaint", "color"]
)
def test_neighbouring_windows_agree_exactly_on_their_overlap(op):
    x = smooth_image(2)
    prior = GaussianPrior(0.0, 0.5)  # a prior that does not know the answer
    method = Recording(RNSF(steps=8, schedule=ExpSchedule()))
    out, _, _ = tiled(method, op, x, prior)
    assert len(method.calls) == 6 and method.calls[0][0] is None
    for (mask, values), window_out in method.calls[1:]:
        assert mask.any()
        mask = mask.expand_as(window_out)
        assert torch.equal(window_out[mask], values[mask])
    assert torch.isfinite(out).all()


@pytest.mark.parametrize(
    ("op", "bound"),
    [
        (BicubicSR(4), 1e-4),
        (BicubicSR(2), 1e-4),
        (AverageSR(4), 1e-6),
        (Colorization(), 1e-6),
        (RandomInpainting(0.5), 1e-6),
        (Denoising(), 1e-6),
    ],
    ids=["bicubic4", "bicubic2", "average4", "color", "inpaint", "identity"],
)
def test_noise_free_tiled_output_is_consistent_over_the_whole_image(op, bound):
    # the stated bounds (RMS of A x̂ − y in [0, 1] units): float rounding for the pointwise and
    # block operators, as for one window; bicubic adds the rounding of the straddling rows'
    # small singular values (a hundredth of an 8-bit level at most)
    x = smooth_image(3)
    out, op, y = tiled(DDNM(steps=6), op, x, GaussianPrior(0.0, 0.5))
    assert rms_01(op.A(out) - y) < bound


def test_gaussian_blur_consistency_within_its_truncation_bound():
    # the whole-image blur is the SVD-truncated matrix, each window truncates its own: the
    # residual is bounded by the truncated part (stated bound: 1e-3 in [0, 1] units)
    x = smooth_image(4)
    op = GaussianBlur(sigma=3.0, kernel_size=19)
    prior = window_set_prior([x], stride=24)
    out, bound, y = tiled(DDNM(steps=6), op, x, prior, stride=24)
    assert rms_01(bound.A(out) - y) < 1e-3
    assert psnr(out, x) > 40


def test_result_does_not_depend_on_batch_size():
    a, b = smooth_image(5), smooth_image(6)
    prior = GaussianPrior(0.0, 0.5)
    both, _, _ = tiled(DDNM(steps=5), RandomInpainting(0.5), torch.cat([a, b]), prior, (4, 9))
    alone, _, _ = tiled(DDNM(steps=5), RandomInpainting(0.5), b, prior, (9,))
    assert torch.equal(both[1:], alone)


def test_windows_draw_different_noise():
    x = smooth_image(7)
    out, _, _ = tiled(DDNM(steps=5), Colorization(), x, GaussianPrior(0.0, 0.5))
    first, second = out[..., :32, :32], out[..., :32, 88:120]
    assert not torch.allclose(first - first.mean(), second - second.mean())


def test_pinv_is_not_tiled():
    x = smooth_image(8)
    out, bound, y = tiled(Pinv(), BicubicSR(4), x, None)
    assert torch.equal(out, bound.A_pinv(y))


@torch.no_grad()
def test_builtin_prior_tiled_beats_pinv_and_stays_consistent(demo_images):
    # the built-in prior takes any size: a 32x64 strip of two demo crops, windows of 32
    x = torch.nn.functional.avg_pool2d(torch.cat([demo_images[0], demo_images[9]], -1), 2)[None]
    prior = load_tiny_prior().requires_grad_(False)
    out, op, y = tiled(DDNM(steps=3), AverageSR(2), x, prior, window=32, stride=16)
    assert psnr(out, x) > psnr(op.A_pinv(y), x) and rms_01(op.A(out) - y) < 1e-6


# -- the one-line errors --------------------------------------------------------------------
def test_non_local_operators_refuse_tiling():
    tiling = MaskShift(window=32, stride=16)
    with pytest.raises(NotTileable, match="compressed sensing"):
        tiling.check(DDNM(), WalshHadamardCS(ratio=2), 64, 64, None)
    with pytest.raises(NotTileable, match="deblur_gauss_ddrm"):
        tiling.check(DDNM(), UpstreamDeblurring(), 64, 64, None)


def test_methods_without_the_overlap_hook_refuse_tiling():
    with pytest.raises(UserError, match="method ddrm cannot be tiled"):
        MaskShift(window=32, stride=16).check(DDRM(), BicubicSR(4), 64, 64, None)


def test_overlap_narrower_than_the_kernel_is_refused():
    with pytest.raises(UserError, match=r"needs 36 px\); use tiling\.stride <= 28"):
        MaskShift(window=64, stride=32).check(DDNM(), GaussianBlur(), 96, 160, None)
    with pytest.raises(UserError, match=r"needs 30 px\); use a larger tiling\.window"):
        MaskShift(window=24, stride=8).check(DDNM(), BicubicSR(4), 96, 160, None)
    MaskShift(window=64, stride=32).check(DDNM(), BicubicSR(4), 96, 160, None)


def test_bad_settings_are_refused():
    prior = load_tiny_prior()
    with pytest.raises(UserError, match="stride must lie"):
        MaskShift(window=32, stride=40).resolve(prior)
    with pytest.raises(UserError, match="multiple of 8"):
        MaskShift(window=36).resolve(prior)
    with pytest.raises(UserError, match="order"):
        MaskShift(order="spiral").resolve(prior)
    assert (MaskShift().resolve(prior).window, MaskShift().resolve(prior).stride) == (64, 32)


def test_fixed_size_prior_refuses_a_smaller_image():
    class Native(GaussianPrior):
        native_size = 64

    tiling = MaskShift().resolve(Native())
    assert (tiling.window, tiling.stride) == (64, 32)
    with pytest.raises(UserError, match="smaller than the 64x64 window"):
        tiling.check(DDNM(), BicubicSR(4), 48, 128, Native())
    with pytest.raises(UserError, match=r"set tiling\.window=64"):
        MaskShift(window=32).resolve(Native())


def test_images_of_mixed_sizes_are_batched_by_size():
    from rnsf.data.datamodule import SizeBatches

    sizes = [(72, 120), (64, 96), (72, 120), (72, 120), (64, 96)]
    batches = list(SizeBatches(range(5), sizes, 2))
    assert batches == [[0, 2], [3], [1, 4]] and len(SizeBatches(range(5), sizes, 2)) == 3
    assert list(SizeBatches([1, 3], sizes, 2)) == [[1], [3]]  # one rank's share


def test_ddnm_plus_tiles_with_noisy_measurements():
    x = smooth_image(10)
    generators = image_generators(0, [0])
    op = BicubicSR(4)
    y = op.A(x) + 0.1 * torch.randn(op.A(x).shape, generator=torch.Generator().manual_seed(1))
    method = Recording(DDNM(steps=5))
    tiling = MaskShift(window=WIN, stride=STRIDE, progress=False)
    out = tiling.restore(method, y, op, GaussianPrior(0.0, 0.5), generators, sigma_y=0.1)
    assert torch.isfinite(out).all() and len(method.calls) == 6
    for (mask, values), window_out in method.calls[1:]:
        mask = mask.expand_as(window_out)
        assert torch.equal(window_out[mask], values[mask])


def test_odd_sizes_tile_pointwise_operators():
    # 75x123: windows of 64 at stride 32, the last ones aligned to the odd edges (2 x 3)
    x = smooth_image(11, 80, 128)[..., :75, :123]
    assert len(plan(75, 123, 64, 32)) == 2 * 3
    for op in (Colorization(), BoxInpainting(0.3)):
        out, bound, y = tiled(DDNM(steps=4), op, x, GaussianPrior(0.0, 0.5))
        assert out.shape == x.shape and rms_01(bound.A(out) - y) < 1e-6
