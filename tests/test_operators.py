"""Every operator passes the same property tests (deepinv-style list of operators)."""

from __future__ import annotations

import pytest
import torch

from rnsf.operators import (
    AverageSR,
    BicubicSR,
    BoxInpainting,
    Colorization,
    Composition,
    Denoising,
    GaussianBlur,
    Inpainting,
    RandomInpainting,
    SVDOperator,
    Task,
    UpstreamDeblurring,
    WalshHadamardCS,
)
from rnsf.operators.noise import pixel_sigma_to_model
from rnsf.utils.random import image_generators

H = W = 32


def _random_mask():
    g = torch.Generator().manual_seed(3)
    return (torch.rand(1, 1, H, W, generator=g) > 0.4).float()


OPERATORS = {
    "sr2": lambda: BicubicSR(2),
    "sr4": lambda: BicubicSR(4),
    "sr8": lambda: BicubicSR(8),
    "sr4_avg": lambda: AverageSR(4),
    "sr8_avg": lambda: AverageSR(8),
    "colorization": Colorization,
    "inpaint_box": lambda: BoxInpainting(0.5).bind((2, 3, H, W), image_generators(0, [0, 1])),
    "inpaint_random": lambda: RandomInpainting(0.5).bind((2, 3, H, W), image_generators(0, [0, 1])),
    "inpaint_mask": lambda: Inpainting(_random_mask()),
    "denoise": Denoising,
    "deblur_gauss": lambda: GaussianBlur(sigma=2.0, kernel_size=9),
    "deblur_gauss_ddrm": lambda: UpstreamDeblurring(5, 10.0),
    "deblur_gauss_ssd": lambda: UpstreamDeblurring(9, 15.0),
    "cs2": lambda: WalshHadamardCS(2),
    "cs4": lambda: WalshHadamardCS(4),
    "oldphoto": lambda: Composition([AverageSR(2), Colorization(), RandomInpainting(0.7)]).bind(
        (1, 3, H, W), image_generators(0, [0])
    ),
}
WITHOUT_SVD = {"oldphoto"}


@pytest.fixture(params=sorted(OPERATORS), ids=sorted(OPERATORS))
def op(request):
    return OPERATORS[request.param]()


@pytest.fixture(params=sorted(set(OPERATORS) - WITHOUT_SVD))
def svd_op(request):
    return OPERATORS[request.param]()


def _x(batch=2, dtype=torch.float64, seed=0):
    return torch.randn(batch, 3, H, W, generator=torch.Generator().manual_seed(seed), dtype=dtype)


def _close(a, b, tol=1e-9):
    scale = max(b.abs().max().item(), 1.0)
    assert (a - b).abs().max().item() <= tol * scale, (a - b).abs().max().item()


def test_pinv_is_generalised_inverse(op):
    x = _x()
    Ax = op.A(x)
    _close(op.A(op.A_pinv(Ax)), Ax)  # A A† A = A
    y = op.A(_x(seed=1))
    _close(op.A_pinv(op.A(op.A_pinv(y))), op.A_pinv(y))  # A† A A† = A†


def test_projections_are_symmetric(op):
    u, v = _x(seed=2), _x(seed=3)
    P = lambda z: op.A_pinv(op.A(z))  # noqa: E731
    assert torch.allclose((P(u) * v).sum(), (u * P(v)).sum(), rtol=1e-9)  # A†A symmetric
    a, b = op.A(u), op.A(v)
    Q = lambda z: op.A(op.A_pinv(z))  # noqa: E731
    assert torch.allclose((Q(a) * b).sum(), (a * Q(b)).sum(), rtol=1e-9)  # AA† symmetric


def test_adjoint(op):
    x, y = _x(seed=4), op.A(_x(seed=5)) + 0.1 * torch.randn_like(op.A(_x(seed=5)))
    assert torch.allclose((op.A(x) * y).sum(), (x * op.A_adjoint(y)).sum(), rtol=1e-9)


def test_svd_reconstructs_operator(svd_op):
    op = svd_op
    assert isinstance(op, SVDOperator)
    x = _x(seed=6)
    _close(op.U(op.singulars(x) * op.Vt(x)), op.A(x))
    _close(op.V(op.Vt(x)), x)  # V orthogonal
    y = op.A(_x(seed=7))
    s = op.singulars(x)
    z = op.Ut(y)
    _close(op.V(torch.where(s > 0, z / torch.where(s > 0, s, 1), 0)), op.A_pinv(y))
    _close(op.V(s * z), op.A_adjoint(y))
    _close(op.U(op.Ut(y)), y)  # U orthogonal on the range


def test_batch_independence(op):
    if isinstance(op, Inpainting) and op.mask.shape[0] > 1:
        op = Inpainting(op.mask[1:2])  # per-image masks: image 1 with its own mask
    if isinstance(op, Composition):
        op = Composition([AverageSR(2), Colorization(), Inpainting(op.operators[-1].mask[:1])])
    x = _x(batch=2)
    y = op.A(x)
    for fn, arg in ((op.A, x), (op.A_pinv, y), (op.A_adjoint, y)):
        _close(fn(arg[1:2]), fn(arg)[1:2])


def test_dtype_and_device(op):
    x = _x(dtype=torch.float32)
    outs = [op.A(x), op.A_pinv(op.A(x)), op.A_adjoint(op.A(x))]
    if isinstance(op, SVDOperator):
        outs.append(op.Vt(x))
    for out in outs:
        assert out.dtype == torch.float32 and out.device == x.device
    assert op.x_shape(op.A(x).shape) == tuple(x.shape)


def test_bicubic_taps_match_upstream():
    taps = BicubicSR(4).kernel()
    expected = [-0.00171, -0.01099, -0.01831, -0.01196, 0.02271, 0.09741, 0.18188, 0.24097]
    assert torch.allclose(taps[:8], torch.tensor(expected, dtype=torch.float64), atol=1e-5)
    assert torch.allclose(taps, taps.flip(0))
    m = BicubicSR(4).matrix(256)
    assert m.shape == (64, 256) and torch.allclose(m.sum(1), torch.ones(64, dtype=m.dtype))
    s = torch.linalg.svdvals(m)
    assert abs(s.min().item() - 0.3485) < 1e-3  # upstream: none zeroed, min 0.3485 at 256


def test_average_sr_is_avg_pool_and_nearest_upsampling():
    x = _x(dtype=torch.float32)
    op = AverageSR(4)
    y = op.A(x)
    assert torch.equal(y, torch.nn.functional.avg_pool2d(x, 4))
    assert torch.equal(op.A_pinv(y), torch.nn.functional.interpolate(y, scale_factor=4))
    assert torch.allclose(op.singulars(x).max(), torch.tensor(0.25))


def test_colorization_singular_and_grey():
    op = Colorization()
    x = _x(dtype=torch.float64)
    assert abs(op.singulars(x).max().item() - 0.57735) < 1e-4
    grey = torch.full((1, 1, 4, 4), 0.3, dtype=torch.float64)
    assert torch.allclose(op.A_pinv(grey), grey.expand(1, 3, 4, 4), atol=1e-4)


def test_sr_factor_must_divide_size():
    with pytest.raises(ValueError, match="not divisible by the SR factor 4"):
        Task("sr4", BicubicSR(4)).measure(torch.zeros(1, 3, 30, 30), image_generators(0, [0]))


def test_sigma_converted_once_to_model_units():
    assert pixel_sigma_to_model(0.05) == 0.1
    assert Task("denoise", Denoising(), sigma=0.05).sigma_model == 0.1
    with pytest.raises(ValueError, match=r"task\.sigma must be >= 0"):
        pixel_sigma_to_model(-0.1)


@pytest.mark.parametrize("name", ["denoise", "sr4", "colorization", "inpaint_random"])
def test_noise_has_the_configured_std_in_pixel_units(name):
    sigma = 0.05
    operator = {
        "denoise": Denoising(),
        "sr4": BicubicSR(4),
        "colorization": Colorization(),
        "inpaint_random": RandomInpainting(0.5),
    }[name]
    task = Task(name, operator, sigma=sigma)
    x = torch.rand(4, 3, 64, 64) * 2 - 1
    gens = image_generators(0, range(4))
    op, y = task.measure(x, gens)
    residual = (y - op.A(x)) / 2  # back to [0, 1] pixel units
    if name == "inpaint_random":
        residual = residual[op.mask.expand_as(residual) > 0]
        assert (y[op.mask.expand_as(y) == 0] == 0).all()  # no noise on missing pixels
    assert abs(residual.std().item() - sigma) < 0.05 * sigma


def test_random_masks_depend_only_on_image_index():
    op = RandomInpainting(0.5)
    both = op.bind((2, 3, H, W), image_generators(7, [3, 4])).mask
    alone = op.bind((1, 3, H, W), image_generators(7, [4])).mask
    assert torch.equal(both[1:], alone)
    assert not torch.equal(both[0], both[1])
    assert abs(both.mean().item() - 0.5) < 0.05


def test_box_mask_size():
    mask = BoxInpainting(0.5).mask(64, 64, [])
    assert mask.sum().item() == 64 * 64 - 32 * 32
    assert mask[0, 0, 32, 32] == 0 and mask[0, 0, 0, 0] == 1


def _upstream_deblurring_flat(kernel, n, zero=3e-2):
    """An independent, literal re-implementation of upstream `Deblurring` on flat vectors
    (interleaved pixel-major layout, tiled singular values), following the specs step by step."""
    K = len(kernel)
    small = torch.zeros(n, n, dtype=torch.float64)
    for i in range(n):
        for j in range(i - K // 2, i + K // 2):
            if 0 <= j < n:
                small[i, j] = kernel[j - i + K // 2]
    U, S, Vh = torch.linalg.svd(small)
    V = Vh.T
    S = torch.where(zero > S, torch.zeros_like(S), S)
    grid = (S[:, None] * S[None, :]).reshape(-1)
    ordered, perm = torch.sort(grid, descending=True, stable=True)
    tiled = ordered.repeat(3)

    def Vt(x):
        t = (V.T @ x @ V).reshape(x.shape[0], 3, n * n)[:, :, perm]
        return t.permute(0, 2, 1).reshape(x.shape[0], -1)

    def Umul(v):
        t = v.reshape(v.shape[0], n * n, 3).permute(0, 2, 1)
        out = torch.zeros_like(t)
        out[:, :, perm] = t
        return U @ out.reshape(v.shape[0], 3, n, n) @ U.T

    return lambda x: Umul(tiled * Vt(x)), small


@pytest.mark.parametrize(("taps", "sigma", "zeroed"), [(5, 10.0, 15), (9, 15.0, 29)])
def test_upstream_deblurring_is_reproduced_bit_for_bit(taps, sigma, zeroed):
    op = UpstreamDeblurring(taps, sigma)
    k = op.kernel()
    if taps == 5:
        expected = [0.19800, 0.20100, 0.20200, 0.20100, 0.19800]
        assert torch.allclose(k, torch.tensor(expected, dtype=torch.float64), atol=1e-5)
    small = op.matrix(256)
    assert abs(small[100].sum().item() - k[:-1].sum().item()) < 1e-12  # last tap dropped
    s = torch.linalg.svdvals(small)
    assert int((s < 3e-2).sum()) == zeroed  # specs: 15 (DDRM/DDNM) and 29 (SSD) of 256
    reference, _ = _upstream_deblurring_flat(k, 16)
    x = _x(batch=2, dtype=torch.float64)[..., :16, :16]
    _close(op.A(x), reference(x), tol=1e-12)
    # and it is not the separable blur (the tiling quirk)
    separable = op.factors(16, 16, x)[0].M
    assert (op.A(x) - separable @ x @ separable.T).abs().max() > 1e-3


def test_dps_blur_is_the_reflect_padded_convolution():
    import torch.nn.functional as F

    op = GaussianBlur(sigma=3.0, kernel_size=25, exact_forward=True)
    x = _x(batch=1, dtype=torch.float64)
    k1 = op.kernel()
    k2 = (k1[:, None] * k1[None, :]).expand(3, 1, 25, 25)
    conv = F.conv2d(F.pad(x, (12, 12, 12, 12), mode="reflect"), k2, groups=3)
    _close(op.A(x), conv, tol=1e-12)


def test_fwht_is_orthonormal_and_involutive():
    from rnsf.operators.cs import fwht

    x = torch.randn(3, 64, dtype=torch.float64)
    assert torch.allclose(fwht(fwht(x)), x)
    assert torch.allclose(fwht(x).norm(dim=-1), x.norm(dim=-1))
    h = fwht(torch.eye(4, dtype=torch.float64))
    assert torch.allclose(
        h * 2,
        torch.tensor(
            [[1, 1, 1, 1], [1, -1, 1, -1], [1, 1, -1, -1], [1, -1, -1, 1]], dtype=torch.float64
        ),
    )
