"""`dataset.batch_size=auto`: the batch size a job runs at, from the device and the network.

On a GPU, the network's weights go to the device first, then the free memory is read. One
eager pass at batch 2 of the largest image the job restores measures the memory an image needs:
the network's forward (with the input gradient when the method differentiates through the
network, as DPS), with class indices for a class-conditional network, and the classifier's
forward and backward when classifier guidance is on. The batch is the largest power of two up
to `cap` whose images fit in `share` of the free memory. Elsewhere it is `cpu` (a CPU gains
nothing from large batches). Results never depend on the batch size: every image has its own
generator.

The probe runs the network eager and asks the execution policy which path the job will run.
Inductor without CUDA graphs fuses element-wise kernels and needs no more than eager; with CUDA
graphs (`reduce-overhead`, `max-autotune`), the graph's static input and output buffers and the
output's copy stay allocated as well, so each image's input and twice its output are added.
The remaining margin is `share` (20 % of the free memory), for the allocator's fragmentation
and the sampler's own tensors (a few images' worth).
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
    """Peak CUDA memory (bytes) one image of `shape` (C, H, W) adds to a step of the network
    on `device` (see the module's docstring), in the denoiser's precision. The denoiser must
    already be on `device`."""
    x = torch.randn(2, *shape, device=device)
    t = denoiser.num_timesteps // 2
    tt = torch.full((2,), t, device=device, dtype=torch.long)
    classes = torch.zeros(2, device=device, dtype=torch.long)  # any class: the same memory
    torch.cuda.synchronize(device)
    torch.cuda.reset_peak_memory_stats(device)
    base = torch.cuda.memory_allocated(device)
    with torch.inference_mode(False), torch.set_grad_enabled(grad):
        x.requires_grad_(grad)
        out = denoiser.output(x, tt, classes, eager=True)
        if grad:
            torch.autograd.grad(out.square().sum(), x)
        guide = denoiser.classifier_gradient(x.detach(), t, classes)
    out_bytes = out[0].numel() * out.element_size()
    del out, guide
    torch.cuda.synchronize(device)
    per_image = (torch.cuda.max_memory_allocated(device) - base) / 2
    policy = denoiser.policy
    if policy is not None and policy.cuda_graphs(device, grad):
        per_image += x[0].numel() * x.element_size() + 2 * out_bytes
    return per_image


def probe_batch_size(
    denoiser: Denoiser,
    device: torch.device,
    shape: tuple[int, int, int],
    *,
    grad: bool = False,
    cap: int = CAP,
) -> int:
    """The batch that fits on the GPU `device`: weights moved first, then the free memory read
    and one image's memory measured (`memory_per_image`)."""
    denoiser.to(device)
    free, _ = torch.cuda.mem_get_info(device)
    return fit_batch(memory_per_image(denoiser, device, shape, grad), free, cap)


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
    return probe_batch_size(denoiser, device, shape, grad=grad, cap=cap)
