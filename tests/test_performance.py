"""Speed without loss of exactness: fused attention, low-precision layers, compilation,
activation checkpointing, the automatic batch size and the benchmark (`python -m rnsf.bench`).

Everything runs on the CPU at reduced widths with random weights; no test asserts a timing.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest
import torch
from torch import nn

from rnsf.denoisers import (
    ADMUNet,
    DDPMUNet,
    PretrainedDenoiser,
    adm,
    ddpm,
    execution,
    load_tiny_prior,
)
from rnsf.denoisers.execution import CUDA_GRAPH_MODES, resolve_compile, resolve_precision
from rnsf.denoisers.layers import GroupNorm32, full_precision
from rnsf.denoisers.memory import auto_batch_size, fit_batch
from rnsf.utils.errors import UserError

from conftest import ROOT, SMALL_ADM, SMALL_DDPM

NETWORKS = [(ADMUNet, SMALL_ADM), (DDPMUNet, SMALL_DDPM)]
#: inductor generates C++ on the CPU
needs_cxx = pytest.mark.skipif(
    not (shutil.which("g++") or shutil.which("c++")), reason="inductor needs a C++ compiler"
)
CPU = torch.device("cpu")


def _inputs(batch: int = 4, size: int = 32):
    torch.manual_seed(0)
    return torch.randn(batch, 3, size, size), torch.tensor([10, 300, 600, 990][:batch])


def _relative(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).detach().norm() / b.detach().norm())


# -- the einsum attention these blocks computed before, kept here as the reference ----------
def einsum_adm_attention(block: adm.AttentionBlock, qkv: torch.Tensor) -> torch.Tensor:
    batch, width, length = qkv.shape
    heads = block.num_heads
    ch = width // (3 * heads)
    if block.legacy_order:
        q, k, v = qkv.reshape(batch * heads, 3 * ch, length).split(ch, dim=1)
    else:
        q, k, v = (z.reshape(batch * heads, ch, length) for z in qkv.chunk(3, dim=1))
    scale = ch**-0.25
    scores = torch.einsum("nct,ncs->nts", q * scale, k * scale)
    weights = torch.softmax(scores.float(), dim=-1).to(scores.dtype)
    return torch.einsum("nts,ncs->nct", weights, v).reshape(batch, heads * ch, length)


def einsum_ddpm_attention(block: ddpm.AttnBlock, x: torch.Tensor) -> torch.Tensor:
    batch, channels, height, width = x.shape
    h = block.norm(x)
    q, k, v = (m(h).reshape(batch, channels, height * width) for m in (block.q, block.k, block.v))
    scores = torch.einsum("bci,bcj->bij", q, k) * channels**-0.5
    weights = torch.softmax(scores.float(), dim=-1).to(scores.dtype)
    h = torch.einsum("bij,bcj->bci", weights, v).reshape(batch, channels, height, width)
    return x + block.proj_out(h)


@pytest.mark.parametrize("legacy", [True, False])
def test_adm_sdpa_attention_equals_the_einsum_path(legacy, monkeypatch):
    torch.manual_seed(0)
    block = adm.AttentionBlock(64, num_head_channels=16, legacy_order=legacy)
    x = 3 * torch.randn(3, 64, 8, 8)
    qkv = block.qkv(block.norm(x.reshape(3, 64, -1)))
    with torch.no_grad():
        torch.testing.assert_close(
            block.attention(qkv), einsum_adm_attention(block, qkv), atol=1e-5, rtol=0
        )
        net, (x, t) = ADMUNet(**{**SMALL_ADM, "legacy_attention": legacy}), _inputs()
        fused = net(x, t)
        monkeypatch.setattr(adm.AttentionBlock, "attention", einsum_adm_attention)
        torch.testing.assert_close(fused, net(x, t), atol=1e-5, rtol=0)


def test_ddpm_sdpa_attention_equals_the_einsum_path(monkeypatch):
    torch.manual_seed(0)
    block = ddpm.AttnBlock(64)
    x = 3 * torch.randn(3, 64, 8, 8)
    with torch.no_grad():
        torch.testing.assert_close(block(x), einsum_ddpm_attention(block, x), atol=1e-5, rtol=0)
        net, (x, t) = DDPMUNet(**SMALL_DDPM), _inputs()
        fused = net(x, t)
        monkeypatch.setattr(ddpm.AttnBlock, "forward", einsum_ddpm_attention)
        torch.testing.assert_close(fused, net(x, t), atol=1e-5, rtol=0)


def test_state_dict_keys_are_unchanged_by_the_fused_layers():
    """The checkpoints' key grammar: attention and norms hold the same parameters as before."""
    block = adm.AttentionBlock(64, num_head_channels=16)
    assert set(block.state_dict()) == {
        "norm.weight",
        "norm.bias",
        "qkv.weight",
        "qkv.bias",
        "proj_out.weight",
        "proj_out.bias",
    }
    assert set(ddpm.AttnBlock(64).state_dict()) == {
        f"{m}.{p}" for m in ("norm", "q", "k", "v", "proj_out") for p in ("weight", "bias")
    }


# -- GroupNorm and precision -----------------------------------------------------------------
def test_groupnorm32_is_exact_in_fp32_and_stays_in_the_activation_dtype():
    torch.manual_seed(0)
    norm = GroupNorm32(8, 32)
    nn.init.normal_(norm.weight)
    nn.init.normal_(norm.bias)
    x = 2 + 3 * torch.randn(2, 32, 8, 8)
    assert torch.equal(norm(x), nn.GroupNorm.forward(norm, x))
    low = x.bfloat16()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = norm(low)
    assert out.dtype == torch.bfloat16  # no float32 copy handed on
    with full_precision(x):
        ref = nn.GroupNorm.forward(norm, low.float())
    # statistics in float32: the only error is bf16's rounding of input, parameters and output
    assert _relative(out.float(), ref) < 8e-3


@pytest.mark.parametrize("network, arch", NETWORKS)
def test_reduced_precision_eps_is_within_its_stated_error_of_fp32(network, arch):
    """Random weights, reduced width: ε from bf16 within 2.5 % (measured 1.2-1.6 %) and from
    fp16 within 0.4 % (measured 0.14-0.20 %) of fp32's, relative L2 over a batch."""
    torch.manual_seed(0)
    x, t = _inputs()
    exact = PretrainedDenoiser(network(**arch), name="small", native_size=32, precision="fp32")
    bf16 = PretrainedDenoiser(exact.net, name="small", native_size=32, precision="bf16")
    with torch.no_grad():
        ref = exact.eps(x, 500), exact(x, t)
        low = bf16.eps(x, 500), bf16(x, t)
        with torch.autocast("cpu", dtype=torch.float16):  # the fp16 recipe, on CPU autocast
            half = exact.net(x, t).float()
    assert low[1].dtype == torch.float32
    for a, b in zip(low, ref, strict=True):
        assert 1e-4 < _relative(a, b) < 2.5e-2
    assert 1e-5 < _relative(half, ref[1]) < 4e-3


@pytest.mark.slow
def test_builtin_prior_restores_in_bf16_as_in_fp32():
    """RNSF (exp) at SR×4 on two demo crops: bf16 and fp32 restorations agree to > 55 dB PSNR
    (the README's 4 images × 20 steps: 65.1-65.8 dB)."""
    from hydra.utils import instantiate

    from rnsf.bench.cells import compose_config
    from rnsf.data.demo import DEMO_DIR
    from rnsf.data.folder import ImageFolder
    from rnsf.methods import RNSF
    from rnsf.schedules import ExpSchedule
    from rnsf.utils.random import image_generators

    demo = ImageFolder(DEMO_DIR, image_size=None, resize="none")
    x = torch.stack([demo[i]["image"][:, :32, :32] for i in range(2)])
    task = instantiate(compose_config("task=sr4").task)
    net = load_tiny_prior()
    out = {}
    for precision in ("fp32", "bf16"):
        denoiser = PretrainedDenoiser(net, name="tiny", native_size=None, precision=precision)
        generators = image_generators(0, range(2))
        operator, y = task.measure(x, generators)
        with torch.no_grad():
            out[precision] = RNSF(steps=10, schedule=ExpSchedule()).restore(
                y, operator, denoiser, generators, sigma_y=task.sigma_model
            )
    mse = (out["fp32"].clamp(-1, 1) - out["bf16"].clamp(-1, 1)).square().flatten(1).mean(1)
    psnr = 10 * torch.log10(4 / mse)
    assert not torch.equal(out["fp32"], out["bf16"])
    assert (psnr > 55).all(), psnr


def test_auto_precision_is_fp16_where_bf16_would_only_be_emulated(monkeypatch):
    """V100 and T4: torch counts their emulated bf16 as supported unless asked for native
    support only; `auto` must then pick fp16, not a slow emulated bf16."""
    cuda = torch.device("cuda")

    def volta(including_emulation=True):  # torch.cuda.is_bf16_supported on a V100
        return including_emulation

    monkeypatch.setattr(torch.cuda, "is_bf16_supported", volta)
    assert resolve_precision("auto", cuda) == "fp16"
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: True)
    assert resolve_precision("auto", cuda) == "bf16"  # Ampere and later


def test_auto_precision_and_compile_resolve_from_the_device(monkeypatch):
    cuda = torch.device("cuda")
    assert resolve_precision("auto", CPU) == "fp32"
    assert resolve_precision("fp16", CPU) == "fp16"
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: True)
    assert resolve_precision("auto", cuda) == "bf16"
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: False)
    assert resolve_precision("auto", cuda) == "fp16"  # pre-Ampere GPUs
    assert resolve_compile("auto", CPU) is None
    assert resolve_compile("auto", cuda) == {"backend": "inductor", "mode": "reduce-overhead"}
    for off in (False, None, "false"):
        assert resolve_compile(off, cuda) is None
    assert resolve_compile(True, CPU) == {"backend": "inductor", "mode": "default"}
    assert resolve_compile("max-autotune", CPU) == {"backend": "inductor", "mode": "max-autotune"}
    assert resolve_compile("aot_eager", CPU) == {"backend": "aot_eager", "mode": None}

    denoiser = PretrainedDenoiser(
        ADMUNet(**SMALL_ADM), name="s", native_size=32, precision="auto", compile="auto"
    )
    assert denoiser.describe(CPU) == {"precision": "fp32", "compile": None, "compile_seconds": None}
    assert PretrainedDenoiser(
        denoiser.net, name="s", native_size=32, precision="bf16", compile="reduce-overhead"
    ).describe(CPU) == {"precision": "bf16", "compile": "reduce-overhead", "compile_seconds": None}
    assert load_tiny_prior().describe()["precision"] == "fp32"
    bf16 = load_tiny_prior(precision="bf16")  # model=tiny model.precision=bf16
    assert isinstance(bf16, PretrainedDenoiser) and bf16.describe(CPU)["precision"] == "bf16"
    assert bf16.size_multiple == 8 and bf16.native_size is None


# -- compilation -----------------------------------------------------------------------------
def _counting_compile(monkeypatch, codegen: bool):
    """torch.compile with a backend that counts the graphs it is given: `aot_eager` as asked,
    inductor's real code when `codegen` (C++ on the CPU), else `eager` (no code generation)."""
    from torch._dynamo.testing import CompileCounterWithBackend

    real = torch.compile
    counters = []

    def compile_(model, backend, mode, dynamic):
        counter = CompileCounterWithBackend(
            backend if backend == "aot_eager" or codegen else "eager"
        )
        counters.append(counter)
        return real(model, backend=counter, dynamic=dynamic)

    monkeypatch.setattr(torch, "compile", compile_)
    torch._dynamo.reset()
    yield counters
    torch._dynamo.reset()


@pytest.fixture
def counted_compile(monkeypatch):
    yield from _counting_compile(monkeypatch, codegen=False)


@pytest.fixture
def inductor_compile(monkeypatch):
    yield from _counting_compile(monkeypatch, codegen=True)


def test_compiled_network_is_traced_once_for_all_timesteps_and_a_short_last_batch(
    counted_compile,
):
    net = ADMUNet(**SMALL_ADM, num_classes=10)  # class-conditional: the labels are padded too
    denoiser = PretrainedDenoiser(net, name="s", native_size=32, compile="default", class_label=7)
    torch.manual_seed(0)
    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        for step, t in enumerate((990, 500, 10)):
            batch = x if step < 2 else x[:2]  # the last batch is shorter
            out = denoiser.eps(batch, t)
            b = batch.shape[0]
            ref = net(batch, torch.full((b,), t), y=torch.full((b,), 7))[:, :3]
            assert out.shape == (batch.shape[0], 3, 32, 32)
            torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)
    (counter,) = counted_compile
    assert counter.frame_count == 1  # no recompilation: t is a tensor, the batch padded
    info = denoiser.describe(CPU)
    assert info["compile"] == "default" and info["compile_seconds"] > 0


#: real inductor code: C++ on the CPU, about 30 s a network, and a C++ compiler
INDUCTOR = pytest.param(
    "inductor_compile", True, marks=[pytest.mark.slow, needs_cxx], id="inductor"
)


@pytest.mark.parametrize("compiler, option", [("counted_compile", "aot_eager"), INDUCTOR])
def test_compiled_network_gives_the_input_gradient_of_the_eager_one(request, compiler, option):
    """DPS's step through the compiled network: forward and backward compiled once."""
    counters = request.getfixturevalue(compiler)
    torch.manual_seed(0)
    net = DDPMUNet(**SMALL_DDPM)
    denoiser = PretrainedDenoiser(net, name="s", native_size=32, compile=option)
    x, t = _inputs(2)
    grads = []
    for model in (denoiser, net):
        xx = x.clone().requires_grad_(True)
        with torch.enable_grad():
            (grad,) = torch.autograd.grad(model(xx, t).square().sum(), xx)
        grads.append(grad)
    torch.testing.assert_close(grads[0], grads[1], atol=1e-4, rtol=1e-4)
    assert counters[0].frame_count == 1


@pytest.mark.parametrize("mode", [*CUDA_GRAPH_MODES, "default"])
def test_step_marks_copies_and_padding_of_the_cuda_graph_modes(counted_compile, monkeypatch, mode):
    """A unit test of what the policy does around a compiled call in each mode, on the CPU
    (no CUDA graph runs here: `tests/test_gpu.py` runs them): every mode that records CUDA
    graphs (`reduce-overhead`, `max-autotune`) marks the step before each call and hands out
    a copy of the graph's output; a short batch is padded in the traced (NHWC) layout."""
    net = ADMUNet(**SMALL_ADM)
    denoiser = PretrainedDenoiser(net, name="s", native_size=32, compile=mode)
    monkeypatch.setattr(denoiser.policy, "uses_channels_last", lambda device: True)
    marks, layouts = [], []
    monkeypatch.setattr(torch.compiler, "cudagraph_mark_step_begin", lambda: marks.append(1))
    hook = net.register_forward_pre_hook(
        lambda module, args: layouts.append(
            args[0].is_contiguous(memory_format=torch.channels_last)
        )
    )
    x, t = _inputs(3)
    with torch.no_grad():
        full = denoiser(x, t)
        short = denoiser(x[:2], t[:2])
        hook.remove()
        eager = net(x, t)
        # the graph's output buffer, which its next replay overwrites
        pool = torch.zeros(3, 3, 32, 32)
        monkeypatch.setattr(denoiser.policy, "_compiled", lambda x, t, **extra: pool)
        out = denoiser(x, t)
    torch.testing.assert_close(full, eager, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(short, eager[:2], atol=1e-5, rtol=1e-5)
    assert short.shape[0] == 2 and layouts == [True, True]
    assert counted_compile[0].frame_count == 1
    graphs = mode in CUDA_GRAPH_MODES
    assert len(marks) == (3 if graphs else 0)
    shares = out.untyped_storage().data_ptr() == pool.untyped_storage().data_ptr()
    assert shares is not graphs  # a copy exactly where CUDA graphs own the output
    assert denoiser.describe(CPU)["compile"] == mode


def test_gradients_through_the_auto_compiled_network_skip_cuda_graphs(counted_compile, monkeypatch):
    """`auto` is CUDA graphs on a GPU, but a network first called for gradients (DPS) is
    compiled without them."""
    cuda_graphs = {"backend": "inductor", "mode": "reduce-overhead"}
    monkeypatch.setattr(execution, "AUTO_COMPILE", {"cpu": cuda_graphs})
    denoiser = PretrainedDenoiser(DDPMUNet(**SMALL_DDPM), name="s", native_size=32, compile="auto")
    assert denoiser.policy.path(CPU) == cuda_graphs
    assert denoiser.policy.path(CPU, grad=True) == {"backend": "inductor", "mode": "default"}
    x, t = _inputs(2)
    x.requires_grad_(True)
    with torch.enable_grad():
        torch.autograd.grad(denoiser(x, t).sum(), x)
    assert denoiser.policy.compile_mode == "default" and counted_compile[0].frame_count == 1


# -- a compiler that fails -------------------------------------------------------------------
def _backend(name: str, fails) -> str:
    """Register (once) a torch.compile backend that raises when `fails(graph)`, else runs eager."""
    if name not in torch._dynamo.list_backends(exclude_tags=()):

        @torch._dynamo.register_backend(name=name)
        def backend(gm, example_inputs):
            if fails(gm.graph):
                raise RuntimeError("no working C++ compiler (simulated)")
            return gm.forward

    return name


@pytest.fixture
def broken_compiler():
    """A backend that fails on every graph (as inductor without a C compiler or Triton)."""
    torch._dynamo.reset()
    yield _backend("rnsf_test_broken", lambda graph: True)
    torch._dynamo.reset()


@pytest.fixture
def network_breaks_compiler(monkeypatch):
    """`auto` on the CPU compiles with a backend that fails on graphs as large as a network's
    (the start-up probe passes; the network's first call fails)."""
    name = _backend("rnsf_test_big_graphs", lambda graph: len(graph.nodes) > 30)
    monkeypatch.setattr(execution, "AUTO_COMPILE", {"cpu": {"backend": name, "mode": None}})
    torch._dynamo.reset()
    yield name
    torch._dynamo.reset()


def test_auto_compile_falls_back_to_eager_with_one_warning(network_breaks_compiler, caplog):
    net = ADMUNet(**SMALL_ADM)
    denoiser = PretrainedDenoiser(net, name="s", native_size=32, compile="auto")
    denoiser.check_execution(CPU)  # the probe compiles: no fallback yet
    assert denoiser.policy.fallback is None
    x, t = _inputs(3)
    with torch.no_grad(), caplog.at_level("WARNING"):
        outs = [denoiser(x, t), denoiser(x[:2], t[:2])]
        eager = net(x, t)
    assert torch.equal(outs[0], eager) and torch.equal(outs[1], eager[:2])
    (record,) = [r for r in caplog.records if r.levelname == "WARNING"]
    cause = "RuntimeError: no working C++ compiler (simulated)"
    assert cause in record.getMessage() and "\n" not in record.getMessage()
    assert denoiser.describe(CPU)["compile"] == f"eager (fallback: {cause})"
    assert denoiser.policy.path(CPU) is None


def test_auto_compile_falls_back_at_start_up_when_the_probe_fails(broken_compiler, monkeypatch):
    monkeypatch.setattr(
        execution, "AUTO_COMPILE", {"cpu": {"backend": broken_compiler, "mode": None}}
    )
    denoiser = PretrainedDenoiser(DDPMUNet(**SMALL_DDPM), name="s", native_size=32, compile="auto")
    denoiser.check_execution(CPU)
    assert denoiser.describe(CPU)["compile"].startswith("eager (fallback: RuntimeError: no ")


def test_explicit_compile_that_cannot_run_fails_fast_in_one_line(broken_compiler):
    denoiser = PretrainedDenoiser(
        DDPMUNet(**SMALL_DDPM), name="s", native_size=32, compile=broken_compiler
    )
    with pytest.raises(UserError) as err:
        denoiser.check_execution(CPU)
    message = str(err.value)
    assert message.startswith(f"model.compile={broken_compiler} cannot compile on cpu")
    assert "RuntimeError: no working C++ compiler (simulated)" in message
    assert "model.compile=false" in message and "\n" not in message


def _job(tmp_path, monkeypatch, *overrides: str):
    from hydra import compose, initialize_config_dir

    from rnsf.engine.run import run

    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "kernels"))
    out = tmp_path / "job"
    with initialize_config_dir(str(ROOT / "conf"), version_base="1.3"):
        cfg = compose(
            "config",
            overrides=[
                "method.steps=2",
                "dataset.limit=2",
                "logger=none",
                f"paths.output_dir={out}",
                *overrides,
            ],
        )
    return out, lambda: run(cfg)


def test_job_with_auto_compile_records_the_fallback(network_breaks_compiler, tmp_path, monkeypatch):
    out, job = _job(tmp_path, monkeypatch, "model.compile=auto")
    summary = job()
    cause = "RuntimeError: no working C++ compiler (simulated)"
    assert summary["compile"] == f"eager (fallback: {cause})"
    assert json.loads((out / "metrics.json").read_text())["compile"] == summary["compile"]
    assert summary["n_images"] == 2 and summary["psnr"] > 15


def test_job_with_explicit_compile_that_cannot_run_writes_nothing(
    broken_compiler, tmp_path, monkeypatch
):
    out, job = _job(tmp_path, monkeypatch, f"model.compile={broken_compiler}")
    with pytest.raises(UserError, match="cannot compile on cpu"):
        job()
    assert not out.exists() or not any(p.name != ".lock" for p in out.iterdir())


@pytest.mark.slow
@needs_cxx
def test_inductor_runs_the_network_once_compiled_for_every_batch_and_timestep(inductor_compile):
    """Real inductor code for the ADM blocks in bf16: SDPA, GroupNorm in the activation dtype,
    the padded last batch; equal to eager autocast to bf16's accuracy, and compiled once."""
    torch.manual_seed(0)
    net = ADMUNet(**SMALL_ADM)
    denoiser = PretrainedDenoiser(net, name="s", native_size=32, precision="bf16", compile=True)
    x, t = _inputs(3)
    with torch.no_grad():
        for batch, step in ((3, t), (3, t.flip(0)), (2, t[:2])):
            out = denoiser(x[:batch], step)
            with torch.autocast("cpu", dtype=torch.bfloat16):
                eager = net(x[:batch], step).float()
            assert out.dtype == torch.float32 and out.shape == eager.shape
            assert _relative(out, eager) < 0.02
    assert inductor_compile[0].frame_count == 1 and denoiser.policy.compile_seconds > 0


def test_bad_compile_and_precision_options_are_one_line_errors():
    net = ADMUNet(**SMALL_ADM)
    with pytest.raises(UserError, match=r"model\.compile=3"):
        PretrainedDenoiser(net, name="s", native_size=32, compile=3)
    with pytest.raises(UserError, match=r"model\.precision='fp64'.*auto, fp32"):
        PretrainedDenoiser(net, name="s", native_size=32, precision="fp64")


# -- activation checkpointing (DPS) ----------------------------------------------------------
@pytest.mark.parametrize("network, arch", NETWORKS)
def test_activation_checkpointing_gives_equal_input_gradients(network, arch):
    torch.manual_seed(0)
    plain = PretrainedDenoiser(network(**arch), name="s", native_size=32)
    ckpt = PretrainedDenoiser(network(**arch), name="s", native_size=32, checkpointing=True)
    ckpt.net.load_state_dict(plain.net.state_dict())
    assert ckpt.net.checkpointing and not plain.net.checkpointing
    x, t = _inputs(2)
    grads, outs = [], []
    for model in (plain, ckpt):
        xx = x.clone().requires_grad_(True)
        with torch.enable_grad():
            out = model(xx, t)
            x0 = (xx - 0.6 * out[:, :3]) / 0.8
            (grad,) = torch.autograd.grad(x0.flatten(1).norm(dim=1).sum(), xx)
        grads.append(grad)
        outs.append(out.detach())
    assert torch.equal(outs[0], outs[1])
    torch.testing.assert_close(grads[1], grads[0], atol=1e-6, rtol=1e-5)
    assert all(p.grad is None for p in ckpt.parameters())


@pytest.mark.parametrize("network, arch", NETWORKS)
def test_checkpointed_network_compiles_once_with_the_eager_gradient(counted_compile, network, arch):
    """`model.checkpointing` inside a compiled network (DPS under `model.compile`)."""
    torch.manual_seed(0)
    net = network(**arch)
    ckpt = PretrainedDenoiser(
        net, name="s", native_size=32, checkpointing=True, compile="aot_eager"
    )
    x, t = _inputs(2)
    grads = []
    for model in (ckpt, ckpt, net):  # the second call reuses the compiled graph
        xx = x.clone().requires_grad_(True)
        with torch.enable_grad():
            (grad,) = torch.autograd.grad(model(xx, t).square().sum(), xx)
        grads.append(grad)
    torch.testing.assert_close(grads[0], grads[2], atol=1e-4, rtol=1e-4)
    assert torch.equal(grads[0], grads[1]) and counted_compile[0].frame_count == 1


# -- the batch size ------------------------------------------------------------------------------
def test_auto_batch_size_fits_the_memory_and_is_fixed_on_the_cpu():
    gib = 2**30
    assert fit_batch(0.6 * gib, 140 * gib) == 32  # ADM-256 bf16 on an H200: the cap
    assert fit_batch(4.1 * gib, 140 * gib) == 16  # DPS on ADM-256: 16 × 4.1 < 0.8 × 140
    assert fit_batch(4.1 * gib, 80 * gib) == 8
    assert fit_batch(50 * gib, 40 * gib) == 1
    assert fit_batch(0.1 * gib, 80 * gib, cap=24) == 16  # powers of two
    assert auto_batch_size(None, CPU, (3, 256, 256)) == 4
    assert auto_batch_size(load_tiny_prior(), CPU, (3, 64, 64), grad=True) == 4


GIB = 2**30


@pytest.fixture
def simulated_gpu(monkeypatch):
    """CUDA's memory counters for a GPU of 40 GiB whose use the test sets: `weights` bytes once
    the denoiser is moved to the device, and `cost(module, forward, backward)`: the bytes an
    image of the batch holds while `module` runs (`backward` when autograd records it). The
    probe itself runs unchanged, on the CPU."""
    state = {"loaded": False, "weights": 0, "peak": 0}

    def allocated(device=None):
        return state["weights"] if state["loaded"] else 0

    def reset(device=None):
        state["peak"] = allocated()

    counters = {
        "synchronize": lambda device=None: None,
        "reset_peak_memory_stats": reset,
        "memory_allocated": allocated,
        "max_memory_allocated": lambda device=None: state["peak"],
        "mem_get_info": lambda device=None: (40 * GIB - allocated(), 40 * GIB),
    }
    for name, fake in counters.items():
        monkeypatch.setattr(torch.cuda, name, fake)

    def place(denoiser, weights: int):
        state["weights"] = weights
        monkeypatch.setattr(denoiser, "to", lambda device: state.update(loaded=True) or denoiser)

    def cost(module, forward: float, backward: float):
        def hook(module, args, out):
            per_image = backward if torch.is_grad_enabled() else forward
            state["peak"] = max(state["peak"], allocated() + int(args[0].shape[0] * per_image))

        module.register_forward_hook(hook)

    return place, cost


def test_memory_probe_reads_the_free_memory_after_the_weights_are_on_the_device(simulated_gpu):
    """30 GiB of weights on a 40 GiB GPU leave 10 GiB: at 1 GiB an image (2.5 GiB with DPS's
    input gradient), batch 8 fits 0.8 × 10 GiB (batch 2 with the gradient)."""
    from rnsf.denoisers.memory import probe_batch_size

    place, cost = simulated_gpu
    denoiser = PretrainedDenoiser(DDPMUNet(**SMALL_DDPM), name="s", native_size=32)
    place(denoiser, 30 * GIB)
    cost(denoiser.net, 1 * GIB, 2.5 * GIB)
    assert probe_batch_size(denoiser, CPU, (3, 32, 32)) == 8
    assert probe_batch_size(denoiser, CPU, (3, 32, 32), grad=True) == 2


def test_memory_probe_runs_a_class_conditional_model_without_the_datasets_labels(simulated_gpu):
    """The probe runs before any batch: a class-conditional network gets dummy classes."""
    from rnsf.denoisers.memory import probe_batch_size

    place, cost = simulated_gpu
    net = ADMUNet(**SMALL_ADM, num_classes=10)
    denoiser = PretrainedDenoiser(net, name="c", native_size=32)  # classes from the dataset
    place(denoiser, 0)
    cost(net, 2 * GIB, 2 * GIB)
    seen = []
    net.register_forward_hook(
        lambda module, args, kwargs, out: seen.append(kwargs["y"].tolist()), with_kwargs=True
    )
    assert probe_batch_size(denoiser, CPU, (3, 32, 32)) == 16  # 16 × 2 ≤ 0.8 × 40
    assert seen == [[0, 0]]


def test_memory_probe_includes_the_classifiers_backward(simulated_gpu):
    """Classifier guidance differentiates the classifier at every step: at 3 GiB an image for
    its forward and backward, the batch is 8 (it would be 32 at the network's 1 GiB)."""
    from rnsf.denoisers import NoisyClassifier
    from rnsf.denoisers.memory import probe_batch_size

    place, cost = simulated_gpu
    net = ADMUNet(**SMALL_ADM, num_classes=1000)
    classifier = NoisyClassifier(
        image_size=32,
        model_channels=32,
        num_head_channels=32,
        channel_mult=(1, 2),
        num_res_blocks=1,
        attention_resolutions=(16,),
    )
    plain = PretrainedDenoiser(net, name="c", native_size=32)
    guided = PretrainedDenoiser(
        net, name="c", native_size=32, classifier=classifier, classifier_scale=1.0
    )
    for denoiser in (plain, guided):
        place(denoiser, 0)
    cost(net, 1 * GIB, 1 * GIB)
    cost(classifier, 0.1 * GIB, 3 * GIB)
    assert probe_batch_size(plain, CPU, (3, 32, 32)) == 32
    assert probe_batch_size(guided, CPU, (3, 32, 32)) == 8


def test_memory_probe_asks_the_policy_for_the_path_that_runs(simulated_gpu):
    """The probe runs eager, never compiles, and adds what CUDA graphs keep per image (the
    static input, the output and its copy) when the policy's path records them."""
    from rnsf.denoisers.memory import memory_per_image

    place, cost = simulated_gpu
    net = DDPMUNet(**SMALL_DDPM)
    per_image = {}
    for option in (False, "default", *CUDA_GRAPH_MODES):
        denoiser = PretrainedDenoiser(net, name="s", native_size=32, compile=option)
        place(denoiser, 0)
        per_image[option] = memory_per_image(denoiser, CPU, (3, 32, 32), False)
        assert denoiser.policy._compiled is None and denoiser.policy.compile == option
    cost(net, 0, 0)  # the hooks above measured nothing: only the graphs' buffers differ
    image = 3 * 32 * 32 * 4
    assert per_image[False] == per_image["default"] == 0
    assert per_image["reduce-overhead"] == per_image["max-autotune"] == 3 * image


def test_auto_batch_size_probes_the_largest_image():
    """With `dataset.resize=none` the images differ in size: the probe takes the largest."""
    from types import SimpleNamespace

    from rnsf.engine.run import image_shape

    data = SimpleNamespace(dataset=SimpleNamespace(sizes=lambda: [(32, 32), (48, 64), (40, 40)]))
    assert image_shape(SimpleNamespace(mode="test"), data, None) == (3, 48, 64)


# -- the benchmark -------------------------------------------------------------------------------
@pytest.mark.slow
def test_benchmark_smoke_writes_every_table(tmp_path, capsys):
    from rnsf.bench import main

    out = tmp_path / "bench.json"
    main(["--smoke", "--out", str(out)])
    result = json.loads(out.read_text())
    assert result["smoke"] is True and result["device"] == "cpu"
    assert result["torch"] == torch.__version__
    assert set(result["ceiling_tflops"]) == {"fp32", "bf16", "fp16"}
    assert result["ceiling_tflops"]["fp32"] > 0 and result["ceiling_tflops"]["fp16"] is None
    presets = {"adm_imagenet256", "adm_imagenet256_cond", "adm_ffhq256", "ddpm_celebahq256"}
    assert set(result["flops_per_image"]) >= presets  # every pretrained preset
    cells = {(r["precision"], r["batch"], r["compile"]) for r in result["forward"]}
    assert cells == {
        ("fp32", 1, None),
        ("fp32", 2, None),
        ("bf16", 1, None),
        ("bf16", 2, None),
        ("bf16", 2, "eager"),  # the compiled row, with --smoke's backend
        ("fp16", 1, None),
        ("fp16", 2, None),
    }
    for row in result["forward"]:
        if row["precision"] == "fp16":
            assert row["skipped"] == "needs a GPU" and row["seconds"] is None
        else:
            assert row["seconds"] > 0 and row["tflops"] > 0 and row["pct_ceiling"] > 0
            assert row["peak_memory_gib"] is None  # CPU
            assert (row["compile_seconds"] is None) == (row["compile"] is None)
    names = ["rnsf", "ddnm", "ddrm", "ssd", "reddiff", "diffpir", "daps", "pigdm"]
    assert [r["method"] for r in result["methods"]] == names
    (tiled,) = result["tiling"]  # mask-shift: 3 x 5 windows of the model's size
    assert tiled["windows"] == 15 and tiled["seconds_per_megapixel"] > 0
    assert tiled["compile"] is None  # eager: no padding up to the method rows' batch
    for row in result["methods"]:
        assert row["nfe"] > 0 and row["seconds_per_image"] > 0 and row["overhead"] > 0
        assert row["default_nfe"] in (50, 99, 100, 1000) and row["images_per_second_default"] > 0
        assert row["peak_memory_gib_per_image"] is None  # CPU
    assert [r["checkpointing"] for r in result["dps"]] == [False, True]
    for row in result["dps"]:
        assert row["steps_run"] == 2 and row["forwards_per_step"] > 0
        assert row["seconds_per_image_1000"] > 0 and row["peak_memory_gib_per_image"] is None
    warm = result["compile_cache"]  # the compiled row again, its kernels in the cache
    assert (warm["model"], warm["batch"], warm["compile"]) == ("adm_imagenet256", 2, "eager")
    assert warm["cold_seconds"] > 0 and warm["warm_seconds"] > 0
    assert "TORCHINDUCTOR_CACHE_DIR" not in os.environ or os.path.isdir(
        os.environ["TORCHINDUCTOR_CACHE_DIR"]
    )  # the benchmark's own cache is gone with the environment entry it set
    printed = capsys.readouterr().out
    assert "| model | precision | batch | compile |" in printed and "| DPS |" in printed
    assert "from the cache (a sweep's next job)" in printed


@pytest.mark.slow
def test_gpu_check_script_runs_the_gpu_tests_and_says_when_there_is_no_gpu(tmp_path):
    """`benchmarks/gpu_check.sh` without a GPU: the versions and the (skipped) GPU tests are
    written, the benchmark is refused with its reason, and the exit status counts it."""
    if torch.cuda.is_available():
        pytest.skip("on a GPU the script runs the whole benchmark")
    out = tmp_path / "check"
    proc = subprocess.run(
        ["bash", str(ROOT / "benchmarks/gpu_check.sh"), str(out)],
        env={**os.environ, "PYTHON": sys.executable},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 1, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "no CUDA device: the benchmark is skipped" in proc.stdout
    assert f"torch {torch.__version__}" in (out / "versions.txt").read_text()
    log = (out / "test_gpu.log").read_text()
    assert "skipped" in log and "needs a CUDA GPU" in log and "failed" not in log


@pytest.mark.slow
@needs_cxx
def test_a_compiled_job_fills_the_shared_kernel_cache(tmp_path):
    """`model.compile=true` through run.py: inductor's kernels land in paths.compile_cache_dir,
    where the next job finds them; metrics.json records the mode and the compile time. A job
    that compiles nothing leaves no cache folder behind."""
    cache = tmp_path / "kernels"
    env = {k: v for k, v in os.environ.items() if k != "TORCHINDUCTOR_CACHE_DIR"}

    def job(name: str, *overrides: str) -> dict:
        proc = subprocess.run(
            [
                sys.executable,
                str(ROOT / "run.py"),
                "debug=tiny",
                "logger=csv",
                f"paths.compile_cache_dir={cache}",
                f"hydra.run.dir={tmp_path / name}",
                *overrides,
            ],
            env={**env, "WANDB_MODE": "disabled"},
            capture_output=True,
            text=True,
            timeout=900,
        )
        assert proc.returncode == 0, proc.stderr[-2000:]
        return json.loads((tmp_path / name / "metrics.json").read_text())

    assert job("eager")["compile"] is None and not cache.exists()
    metrics = job("compiled", "model.compile=true")
    assert (cache / "fxgraph").is_dir() and any((cache / "fxgraph").rglob("*"))
    assert metrics["compile"] == "default" and metrics["compile_seconds"] > 0


# -- the operators' arithmetic under the network's TF32 ------------------------------------------
def test_operators_run_their_matmuls_in_full_float32_when_the_job_allows_tf32():
    """`model.precision=auto` lets a GPU use TF32 for float32 matmuls (`set_float32_math`);
    every matmul of an operator's A, Aᵀ, A† and SVD maps must still see full IEEE float32, and
    the job's setting must be back once the operator returns. (The GPU's numbers: test_gpu.py)"""
    from torch.overrides import TorchFunctionMode

    from rnsf.engine.run import set_float32_math
    from rnsf.operators import BicubicSR, Colorization, GaussianBlur

    class Record(TorchFunctionMode):
        def __init__(self):
            super().__init__()
            self.seen = []

        def __torch_function__(self, func, types, args=(), kwargs=None):
            if getattr(func, "__name__", "") in ("matmul", "__matmul__", "einsum"):
                self.seen.append(torch.backends.cuda.matmul.fp32_precision)
            return func(*args, **(kwargs or {}))

    saved = torch.backends.cuda.matmul.fp32_precision, torch.backends.cudnn.conv.fp32_precision
    set_float32_math(exact=False)
    try:
        x = torch.rand(1, 3, 16, 16)
        for op in (GaussianBlur(kernel_size=5), BicubicSR(2), Colorization()):
            y = op.A(x)
            with Record() as record:
                op.A(x), op.A_adjoint(y), op.A_pinv(y), op.V(op.Vt(x)), op.U(op.Ut(y))
            assert record.seen and set(record.seen) == {"ieee"}, type(op).__name__
            assert torch.backends.cuda.matmul.fp32_precision == "tf32"
    finally:
        torch.backends.cuda.matmul.fp32_precision = saved[0]
        torch.backends.cudnn.conv.fp32_precision = saved[1]
