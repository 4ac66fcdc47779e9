"""The benchmark's measurements: one function per row of its tables."""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass

import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate

from rnsf.bench.measure import best_time, peak_gib, reset_peak, sync
from rnsf.denoisers import ADMUNet, DDPMUNet, PretrainedDenoiser
from rnsf.methods import DPS
from rnsf.utils.cli import CONF_DIR
from rnsf.utils.random import image_generators

#: reduced widths of `--smoke` (every feature of the full networks, CPU-cheap), at 16²
SMOKE_ARCH = {
    ADMUNet: dict(
        image_size=16,
        model_channels=32,
        channel_mult=[1, 2],
        num_res_blocks=1,
        attention_resolutions=[16],
        num_head_channels=16,
    ),
    DDPMUNet: dict(resolution=16, ch=32, ch_mult=[1, 2], num_res_blocks=1, attn_resolutions=[16]),
}


def compose_config(*overrides: str):
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        return compose("config", overrides=list(overrides))


@dataclass
class Preset:
    """A `model` preset's architecture, built with random weights."""

    name: str
    network: type
    arch: dict
    size: int
    class_label: int | None

    @classmethod
    def load(cls, name: str, smoke: bool = False) -> Preset:
        model = compose_config(f"model={name}").model
        network = ADMUNet if model.net._target_.endswith("load_adm") else DDPMUNet
        arch = dict(model.arch)
        if smoke:
            arch.update(SMOKE_ARCH[network])
        size = int(arch.get("image_size", arch.get("resolution", 256)))
        # a class-conditional preset takes each image's class; one fixed class for timing
        label = 0 if arch.get("num_classes") else None
        return cls(name, network, arch, size, label)

    def build(self) -> torch.nn.Module:
        return self.network(**self.arch)


def forward_row(
    net: torch.nn.Module,
    preset: Preset,
    device: torch.device,
    precision: str,
    batch: int,
    compile_option: bool | str,
    repeats: int,
) -> tuple[dict, PretrainedDenoiser]:
    """Time one forward pass of `batch` images through the wrapper the jobs use."""
    denoiser = PretrainedDenoiser(
        net,
        name=preset.name,
        native_size=preset.size,
        precision=precision,
        compile=compile_option,
        class_label=preset.class_label,
    ).to(device)
    x = torch.randn(batch, 3, preset.size, preset.size, device=device)
    t = torch.full((batch,), 500, device=device, dtype=torch.long)
    with torch.no_grad():
        reset_peak(device)
        sync(device)
        start = time.perf_counter()
        denoiser(x, t)  # warm-up: compiles, picks kernels
        sync(device)
        first = time.perf_counter() - start
        denoiser(x, t)  # CUDA graphs record on a later call than the first
        seconds = best_time(lambda: denoiser(x, t), device, repeats)
    info = denoiser.describe(device)
    row = {
        "model": preset.name,
        "precision": info["precision"],
        "batch": batch,
        "compile": info["compile"],
        "seconds": seconds,
        "first_call_seconds": first,
        "compile_seconds": info["compile_seconds"],
        "peak_memory_gib": peak_gib(device),
    }
    return row, denoiser


def warm_compile_row(
    denoiser: PretrainedDenoiser, preset: Preset, device: torch.device, batch: int
) -> dict:
    """The compile time of `denoiser`'s network once its kernels are in the cache, as for the
    next job of a sweep: dynamo's in-memory state is cleared, inductor's on-disk cache kept."""
    info = denoiser.describe(device)
    torch._dynamo.reset()
    row, _ = forward_row(
        denoiser.net, preset, device, info["precision"], batch, denoiser.policy.compile, repeats=1
    )
    return {
        "model": preset.name,
        "precision": info["precision"],
        "batch": batch,
        "compile": info["compile"],
        "cold_seconds": info["compile_seconds"],
        "warm_seconds": row["compile_seconds"],
    }


def restore_inputs(task_name: str, batch: int, size: int, device: torch.device, method: str):
    cfg = compose_config(f"task={task_name}", f"method={method}")
    task = instantiate(cfg.task)
    x = torch.rand(batch, 3, size, size, device=device) * 2 - 1
    gens = lambda: image_generators(0, range(batch), device)  # noqa: E731
    operator, y = task.measure(x, gens())
    return cfg, task, operator, y, gens


def method_row(
    name: str,
    denoiser: PretrainedDenoiser,
    device: torch.device,
    batch: int,
    size: int,
    steps: int,
    forward_seconds: float,
    repeats: int,
    task_name: str = "sr4",
) -> dict:
    """Seconds per image of a restoration, its overhead over the bare forward passes and its
    peak memory per image (a method with `needs_grad`, ΠGDM, back-propagates through the
    network at every step)."""
    cfg, task, operator, y, gens = restore_inputs(task_name, batch, size, device, name)
    method = instantiate(compose_config(f"method={name}", f"method.steps={steps}").method)
    default_nfe = instantiate(cfg.method).nfe  # the method's default steps (100)

    def restore():
        method.restore(y, operator, denoiser, gens(), sigma_y=task.sigma_model)

    reset_peak(device)
    with torch.no_grad():
        seconds = best_time(restore, device, repeats)
    peak = peak_gib(device)
    per_image = seconds / batch
    return {
        "method": name,
        "model": denoiser.name,
        **{k: denoiser.describe(device)[k] for k in ("precision", "compile")},
        "batch": batch,
        "steps": steps,
        "nfe": method.nfe,
        "seconds_per_image": per_image,
        "overhead": seconds / (method.nfe * forward_seconds),
        "default_nfe": default_nfe,
        "seconds_per_image_default": per_image * default_nfe / method.nfe,
        "images_per_second_default": method.nfe / (per_image * default_nfe),
        "peak_memory_gib_per_image": None if peak is None else peak / batch,
    }


class _Stop(Exception):
    """Ends a DPS run after the steps a benchmark wants."""


def dps_row(
    denoiser: PretrainedDenoiser,
    device: torch.device,
    batch: int,
    size: int,
    steps: int,
    checkpointing: bool,
    repeats: int,
    task_name: str = "sr4",
) -> dict:
    """DPS's step cost in forward passes, its time scaled to 1,000 steps and its memory per
    image, with or without activation checkpointing inside the network."""
    _, task, operator, y, gens = restore_inputs(task_name, batch, size, device, "dps")
    method = DPS()
    net = denoiser.net
    saved, net.checkpointing = net.checkpointing, checkpointing

    def run(count: int) -> None:
        done = []

        def stop(info) -> None:
            done.append(info.index)
            if len(done) >= count:
                raise _Stop

        with contextlib.suppress(_Stop):
            method.restore(y, operator, denoiser, gens(), sigma_y=task.sigma_model, callback=stop)

    x = torch.randn(batch, 3, size, size, device=device)
    t = torch.full((batch,), 500, device=device, dtype=torch.long)
    try:
        with torch.no_grad():
            denoiser(x, t)
            forward = best_time(lambda: denoiser(x, t), device, repeats)
        run(1)  # warm-up
        reset_peak(device)
        seconds = best_time(lambda: run(steps), device, repeats)
        peak = peak_gib(device)
    finally:
        net.checkpointing = saved
    step = seconds / steps
    return {
        "model": denoiser.name,
        **{k: denoiser.describe(device)[k] for k in ("precision", "compile")},
        "checkpointing": checkpointing,
        "batch": batch,
        "steps_run": steps,
        "step_seconds": step,
        "forward_seconds": forward,
        "forwards_per_step": step / forward,
        "seconds_per_image_1000": step * 1000 / batch,
        "peak_memory_gib_per_image": None if peak is None else peak / batch,
    }


def tiling_row(
    denoiser: PretrainedDenoiser,
    device: torch.device,
    batch: int,
    size: int,
    steps: int,
    repeats: int,
) -> dict:
    """Seconds per megapixel of a mask-shift restoration (`tiling=mask_shift`, DDNM, SR ×4 by
    block averaging as hq_demo) of a batch of 2·size × 3·size images with windows of the model's
    size (3 × 5 windows at a stride of half a window)."""
    from rnsf.methods import DDNM
    from rnsf.operators import AverageSR
    from rnsf.tiling import MaskShift, plan

    height, width = 2 * size, 3 * size
    tiling = MaskShift(progress=False).resolve(denoiser)
    operator = AverageSR(4)
    y = operator.A(torch.rand(batch, 3, height, width, device=device) * 2 - 1)
    method = DDNM(steps=steps)

    def restore():
        tiling.restore(method, y, operator, denoiser, image_generators(0, range(batch), device))

    with torch.no_grad():
        seconds = best_time(restore, device, repeats)
    megapixels = height * width / 1e6
    return {
        "model": denoiser.name,
        **{k: denoiser.describe(device)[k] for k in ("precision", "compile")},
        "batch": batch,
        "height": height,
        "width": width,
        "window": tiling.window,
        "stride": tiling.stride,
        "windows": len(plan(height, width, tiling.window, tiling.stride)),
        "steps": steps,
        "seconds_per_image": seconds / batch,
        "seconds_per_megapixel": seconds / batch / megapixels,
    }
