"""Timing, memory, FLOPs and the matmul ceiling of the device."""

from __future__ import annotations

import contextlib
import os
import tempfile
import time
from collections.abc import Callable, Iterator

import torch
from torch.utils.flop_counter import FlopCounterMode

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def best_time(fn: Callable[[], object], device: torch.device, repeats: int) -> float:
    """The fastest of `repeats` timed calls, in seconds (warm-up is the caller's)."""
    best = float("inf")
    for _ in range(max(1, repeats)):
        sync(device)
        start = time.perf_counter()
        fn()
        sync(device)
        best = min(best, time.perf_counter() - start)
    return best


@contextlib.contextmanager
def fresh_compile_cache() -> Iterator[str]:
    """An empty kernel cache (TORCHINDUCTOR_CACHE_DIR, Triton's too) for the duration, so that
    compile times are cold ones; removed afterwards, the environment restored."""
    saved = os.environ.get("TORCHINDUCTOR_CACHE_DIR")
    with tempfile.TemporaryDirectory(prefix="rnsf_bench_kernels_") as folder:
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = folder
        try:
            yield folder
        finally:
            if saved is None:
                os.environ.pop("TORCHINDUCTOR_CACHE_DIR", None)
            else:
                os.environ["TORCHINDUCTOR_CACHE_DIR"] = saved


def reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        sync(device)
        torch.cuda.reset_peak_memory_stats(device)


def peak_gib(device: torch.device) -> float | None:
    """Peak allocated memory since `reset_peak`, GiB (None off a GPU)."""
    if device.type != "cuda":
        return None
    return torch.cuda.max_memory_allocated(device) / 2**30


def matmul_ceiling(device: torch.device, precision: str, size: int, repeats: int) -> float:
    """TFLOP/s of a size³ matrix product in `precision` (fp32 as the job runs it: TF32 on a
    GPU, `torch.set_float32_matmul_precision("high")`)."""
    dtype = DTYPES[precision]
    a = torch.randn(size, size, device=device, dtype=dtype)
    b = torch.randn(size, size, device=device, dtype=dtype)
    a @ b  # warm-up
    seconds = best_time(lambda: a @ b, device, repeats)
    return 2 * size**3 / seconds / 1e12


def forward_flops(build: Callable[[], torch.nn.Module], size: int, conditional: bool) -> int:
    """FLOPs of one forward pass of one image of size² through the network `build()` makes,
    counted on the meta device (no memory, no arithmetic)."""
    with torch.device("meta"):
        net = build()
        x = torch.zeros(1, 3, size, size)
        t = torch.zeros(1, dtype=torch.long)
        extra = {"y": torch.zeros(1, dtype=torch.long)} if conditional else {}
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        net(x, t, **extra)
    return int(counter.get_total_flops())
