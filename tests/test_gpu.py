"""The GPU defaults on a GPU: CUDA graphs, bf16, channels-last, the memory probe, the job.

Every test here needs a CUDA device and is skipped without one (CI has none). On a GPU machine,
`benchmarks/gpu_check.sh` runs them with the benchmark. They check what the CPU suite can only
simulate (`tests/test_performance.py`): that the compiled network in its GPU mode gives what the
eager one gives, compiles once, and hands out outputs that the next call does not overwrite.
"""

from __future__ import annotations

import json

import pytest
import torch

from rnsf.denoisers import ADMUNet, DDPMUNet, PretrainedDenoiser
from rnsf.denoisers.memory import CAP, auto_batch_size, memory_per_image

from conftest import SMALL_ADM, SMALL_DDPM, run_py

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
CUDA = torch.device("cuda")


def _relative(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm())


def _inputs(batch: int):
    gen = torch.Generator(device=CUDA).manual_seed(0)
    x = torch.randn(batch, 3, 32, 32, device=CUDA, generator=gen)
    t = torch.tensor([10, 300, 600, 990][:batch], device=CUDA)
    return x, t


@pytest.fixture(autouse=True)
def fresh_dynamo():
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


@pytest.fixture
def exact_math():
    """Full float32 (no TF32) for a test, as a job on the exact path sets it; restored after."""
    from rnsf.engine.run import set_float32_math

    saved = (
        torch.get_float32_matmul_precision(),
        torch.backends.cuda.matmul.fp32_precision,
        torch.backends.cudnn.conv.fp32_precision,
    )
    set_float32_math(exact=True)
    yield
    torch.set_float32_matmul_precision(saved[0])
    torch.backends.cuda.matmul.fp32_precision = saved[1]
    torch.backends.cudnn.conv.fp32_precision = saved[2]


def test_auto_is_bf16_with_cuda_graphs_and_matches_eager_autocast():
    """`model.compile=auto model.precision=auto`: CUDA graphs, NHWC, bf16; one compilation
    for new timesteps and a short last batch; each output survives the next call."""
    torch.manual_seed(0)
    net = ADMUNet(**SMALL_ADM).to(CUDA)
    denoiser = PretrainedDenoiser(net, name="s", native_size=32, precision="auto", compile="auto")
    x, t = _inputs(3)
    outputs = []
    with torch.no_grad():
        for batch, step in ((3, t), (3, t.flip(0)), (3, t), (2, t[:2])):
            out = denoiser(x[:batch], step)
            with torch.autocast("cuda", dtype=torch.bfloat16):
                eager = net(x[:batch], step).float()
            assert out.dtype == torch.float32 and out.shape == eager.shape
            assert _relative(out, eager) < 0.03  # bf16 both; other fusions and roundings
            outputs.append((out, out.clone()))
    for out, copy in outputs:  # CUDA graphs reuse their output buffers: ours are copies
        assert torch.equal(out, copy)
    info = denoiser.describe(CUDA)
    assert info["precision"] == "bf16" and info["compile"] == "reduce-overhead"
    assert info["compile_seconds"] > 0 and denoiser.policy._nhwc
    assert denoiser.policy._batch == 3  # traced once, at the first batch's size


@pytest.mark.slow
def test_max_autotune_outputs_survive_the_next_call():
    """`max-autotune` records CUDA graphs too: its outputs are copies, as reduce-overhead's."""
    torch.manual_seed(0)
    net = DDPMUNet(**SMALL_DDPM).to(CUDA)
    denoiser = PretrainedDenoiser(net, name="s", native_size=32, compile="max-autotune")
    x, t = _inputs(2)
    with torch.no_grad():
        outs = [(out, out.clone()) for out in (denoiser(x, t), denoiser(-x, t), denoiser(x, t))]
        eager = net(x, t)
    for out, copy in outs:
        assert torch.equal(out, copy)
    assert _relative(outs[0][0], eager) < 1e-2


def test_fp32_eager_on_the_gpu_matches_the_cpu(exact_math):
    """The exact path (`model.precision=fp32 model.compile=false`, TF32 off as a job sets it)."""
    torch.manual_seed(0)
    net = DDPMUNet(**SMALL_DDPM)
    x, t = _inputs(2)
    with torch.no_grad():
        cpu = PretrainedDenoiser(net, name="s", native_size=32)(x.cpu(), t.cpu())
        gpu = PretrainedDenoiser(net.to(CUDA), name="s", native_size=32)(x, t)
    assert _relative(gpu.cpu(), cpu) < 1e-4  # TF32 would give ~1e-3


def test_gradient_through_the_auto_compiled_network_matches_eager(exact_math):
    """DPS's step on the GPU: compiled without CUDA graphs, the input gradient of eager's."""
    torch.manual_seed(0)
    net = DDPMUNet(**SMALL_DDPM).to(CUDA)
    denoiser = PretrainedDenoiser(net, name="s", native_size=32, precision="fp32", compile="auto")
    x, t = _inputs(2)
    grads = []
    for model in (denoiser, denoiser, net):
        xx = x.clone().requires_grad_(True)
        with torch.enable_grad():
            (grad,) = torch.autograd.grad(model(xx, t).square().sum(), xx)
        grads.append(grad)
    assert denoiser.policy.compile_mode == "default"
    assert _relative(grads[0], grads[2]) < 1e-3 and _relative(grads[0], grads[1]) < 1e-6


@pytest.mark.parametrize("grad", [False, True])
def test_memory_probe_measures_the_network_and_picks_a_power_of_two(grad):
    denoiser = PretrainedDenoiser(ADMUNet(**SMALL_ADM), name="s", native_size=32, compile="auto")
    denoiser.to(CUDA)
    per_image = memory_per_image(denoiser, CUDA, (3, 32, 32), grad)
    assert per_image > 0 and denoiser.policy._compiled is None
    batch = auto_batch_size(denoiser, CUDA, (3, 32, 32), grad=grad)
    assert batch in {2**k for k in range(CAP.bit_length())} and batch <= CAP
    if grad:  # the input gradient keeps the activations: more memory than a forward
        assert per_image > memory_per_image(denoiser, CUDA, (3, 32, 32), False)


def test_operators_keep_full_float32_on_the_default_path():
    """`model.precision=auto` turns TF32 on for the network's float32 matmuls; the operators'
    A and A† still run in full float32: A A† y = y to float32 round-off on the GPU, against a
    float64 reference (TF32's 10-bit mantissa would leave ~1e-3)."""
    from rnsf.engine.run import set_float32_math
    from rnsf.operators import BicubicSR, GaussianBlur

    saved = torch.backends.cuda.matmul.fp32_precision, torch.backends.cudnn.conv.fp32_precision
    set_float32_math(exact=False)  # what a job with model.precision=auto sets
    try:
        gen = torch.Generator(device=CUDA).manual_seed(0)
        for op in (GaussianBlur(sigma=10.0, kernel_size=5), BicubicSR(4)):
            x = torch.rand(2, 3, 256, 256, device=CUDA, generator=gen) * 2 - 1
            y = op.A(x)
            error = _relative(op.A(op.A_pinv(y)), y)
            reference = _relative(op.A(op.A_pinv(y.double())), y.double())
            assert error < 1e-5 and reference < 1e-12, (type(op).__name__, error)
            assert torch.backends.cuda.matmul.fp32_precision == "tf32"  # restored after A
    finally:
        torch.backends.cuda.matmul.fp32_precision = saved[0]
        torch.backends.cudnn.conv.fp32_precision = saved[1]


@pytest.mark.slow
def test_default_job_on_the_gpu_is_bf16_compiled_and_as_good_as_the_exact_path(tmp_path):
    """`python run.py` on a GPU with the built-in prior in the pretrained presets' defaults
    (`auto`: bf16, CUDA graphs) records them and restores the demo set within 0.05 dB of the
    exact fp32 eager path (the same CUDA noise for both)."""
    results = {}
    for name, extra in (
        ("fast", ["model.precision=auto", "model.compile=auto"]),
        ("exact", []),  # model=tiny's own default
    ):
        out = tmp_path / name
        proc = run_py(["logger=csv", f"hydra.run.dir={out}", *extra])
        assert proc.returncode == 0, proc.stderr[-2000:]
        results[name] = json.loads((out / "metrics.json").read_text())
    fast, exact = results["fast"], results["exact"]
    assert fast["device"].startswith("cuda") and fast["batch_size"] == 16
    assert (fast["precision"], fast["compile"]) == ("bf16", "reduce-overhead")
    assert fast["compile_seconds"] > 0
    assert (exact["precision"], exact["compile"]) == ("fp32", None)
    assert abs(fast["psnr"] - exact["psnr"]) < 0.05
    assert exact["psnr"] > 24.5  # the CPU's figure is 25.86 dB; CUDA generators draw other noise


@pytest.mark.slow
def test_class_conditional_job_with_auto_batch_size_on_the_gpu(tmp_path):
    """run.py on a GPU with every GPU default: `dataset.batch_size=auto` (the memory probe runs
    the class-conditional network and the classifier's backward before any batch),
    `model.compile=auto`, `model.precision=auto`, DDRM with classifier guidance."""
    from hydra import compose, initialize_config_dir
    from PIL import Image

    from rnsf.denoisers import NoisyClassifier

    from conftest import ROOT

    arch = dict(image_size=64, model_channels=32, num_res_blocks=1, attention_resolutions=[16, 8])
    small = {"model_channels": 32, "num_head_channels": 32}
    with initialize_config_dir(str(ROOT / "conf"), version_base="1.3"):
        full = dict(compose("config", overrides=["model=adm_imagenet256_cond"]).model.arch)
    torch.manual_seed(0)
    torch.save(ADMUNet(**{**full, **arch}).state_dict(), tmp_path / "cond.pt")
    torch.save(NoisyClassifier(image_size=64, **small).state_dict(), tmp_path / "cls.pt")
    images = tmp_path / "images"
    images.mkdir()
    for i, colour in enumerate(((120, 60, 30), (20, 90, 200), (200, 200, 10))):
        Image.new("RGB", (64, 64), colour).save(images / f"{i}.png")
    (tmp_path / "labels.txt").write_text("0.png 207\n1.png 3\n2.png 951\n")
    out = tmp_path / "job"
    proc = run_py(
        [
            "model=adm_imagenet256_cond",
            *[f"model.arch.{k}={v}".replace(" ", "") for k, v in arch.items()],
            f"model.checkpoint={tmp_path / 'cond.pt'}",
            f"model.classifier.checkpoint={tmp_path / 'cls.pt'}",
            "model.classifier.arch.model_channels=32",
            "model.classifier.arch.num_head_channels=32",
            "dataset=folder",
            f"dataset.root={images}",
            f"dataset.labels_file={tmp_path / 'labels.txt'}",
            "dataset.image_size=64",
            "dataset.batch_size=auto",
            "task=sr4_avg",
            "method=ddrm",
            "method.steps=3",
            "logger=csv",
            f"hydra.run.dir={out}",
        ],
        WANDB_MODE="disabled",
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["batch_size"] in {2**k for k in range(CAP.bit_length())}
    assert metrics["precision"] in ("bf16", "fp16") and metrics["compile"] == "reduce-overhead"
    assert metrics["n_images"] == 3
