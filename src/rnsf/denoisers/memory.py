"""`dataset.batch_size=auto`: the batch size a job runs at, from the device and the network.

On a GPU, one eager forward pass (with the input gradient when the method differentiates
through the network, as DPS) at batch 2 measures the memory an image needs; the batch is the
largest power of two up to `cap` whose images fit in `share` of the free memory. Elsewhere
it is `cpu` (a CPU gains nothing from large batches). Results never depend on the batch size:
every image has its own generator.
"""

from __future__ import annotations

import torch

from rnsf.denoisers.base import Denoiser

CAP = 32  # a batch of 32 keeps an H100/H200 busy with the 256x256 networks
CPU_BATCH = 4


def fit_batch(per_image: float, free: float, cap: int = CAP, share: float = 0.8) -> int:
    """The largest power of two ≤ `cap` with `batch × per_image ≤ share × free` (at least 1)."""
    batch = 1 << (max(1, cap).bit_length() - 1)
    while batch > 1 and batch * per_image > share * free:
        batch //= 2
    return batch


def memory_per_image(
    denoiser: Denoiser, device: torch.device, shape: tuple[int, int, int], grad: bool
) -> float:
    """Peak CUDA memory (bytes) one image of `shape` (C, H, W) adds to an eager forward pass
    (and its input gradient when `grad`), in the denoiser's precision."""
    compile_option = getattr(denoiser, "compile", None)
    if compile_option is not None:
        denoiser.compile = False  # measure the eager network: no compilation here
    try:
        denoiser.to(device)
        x = torch.randn(2, *shape, device=device)
        t = torch.full((2,), denoiser.num_timesteps // 2, device=device, dtype=torch.long)
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
        with torch.inference_mode(False), torch.set_grad_enabled(grad):
            x.requires_grad_(grad)
            out = denoiser(x, t)
            if grad:
                torch.autograd.grad(out.square().sum(), x)
        del out
        torch.cuda.synchronize(device)
        return (torch.cuda.max_memory_allocated(device) - base) / 2
    finally:
        if compile_option is not None:
            denoiser.compile = compile_option


def auto_batch_size(
    denoiser: Denoiser | None,
    device: torch.device,
    shape: tuple[int, int, int],
    *,
    grad: bool = False,
    cap: int = CAP,
    cpu: int = CPU_BATCH,
) -> int:
    """The batch size of `dataset.batch_size=auto` (see the module's docstring)."""
    if device.type != "cuda":
        return cpu
    if denoiser is None:
        return cap
    free, _ = torch.cuda.mem_get_info(device)
    return fit_batch(memory_per_image(denoiser, device, shape, grad), free, cap)
