"""The command line of `python -m rnsf.bench`: run the measurements, print, write JSON."""

from __future__ import annotations

import argparse
import datetime
import json
import platform
from pathlib import Path

import torch

from rnsf.bench import table
from rnsf.bench.cells import (
    Preset,
    dps_row,
    forward_row,
    method_row,
    tiling_row,
    warm_compile_row,
)
from rnsf.bench.measure import forward_flops, fresh_compile_cache, matmul_ceiling
from rnsf.denoisers.pretrained import resolve_precision
from rnsf.utils.cli import CONF_DIR

#: every pretrained preset of conf/model (their FLOPs are counted; the built-in prior is not one,
#: nor `diffusers`, whose network is whatever folder it is given)
PRESETS = sorted(
    p.stem for p in (CONF_DIR / "model").glob("*.yaml") if p.stem not in ("tiny", "diffusers")
)
METHODS = ["rnsf", "ddnm", "ddrm", "ssd", "reddiff", "diffpir", "daps", "pigdm", "dps"]
#: methods that back-propagate through the network: run at --dps-batch on the eager network
GRADIENT_METHODS = ("pigdm",)

#: what --smoke changes: CPU, reduced widths at 32², tiny grids, the `eager` compile backend
SMOKE = dict(
    device="cpu",
    models=["adm_imagenet256"],
    batches=[1, 2],
    compile="eager",
    compile_batches=[2],
    method_batch=2,
    steps=7,  # SSD's least
    dps_steps=2,
    dps_batch=1,
    tiling_steps=2,
    tiling_batch=1,
    repeats=1,
    ceiling_size=256,
)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m rnsf.bench", description=__doc__.splitlines()[0])
    p.add_argument("--smoke", action="store_true", help="CPU, reduced widths: a plumbing check")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--models", nargs="+", default=["adm_imagenet256", "ddpm_celebahq256"])
    p.add_argument("--precisions", nargs="+", default=["fp32", "bf16", "fp16"])
    p.add_argument("--batches", nargs="+", type=int, default=[1, 8, 32])
    p.add_argument(
        "--compile",
        default="auto",
        help="model.compile of the compiled rows (auto = reduce-overhead on a GPU)",
    )
    p.add_argument("--compile-precisions", nargs="+", default=["bf16"])
    p.add_argument("--compile-batches", nargs="+", type=int, default=[1, 32])
    p.add_argument("--methods", nargs="+", default=METHODS, choices=METHODS)
    p.add_argument("--method-model", default="adm_imagenet256")
    p.add_argument("--method-batch", type=int, default=32)
    p.add_argument(
        "--steps", type=int, default=30, help="steps of rnsf, ddnm, ddrm, ssd, pigdm, reddiff"
    )
    p.add_argument("--dps-steps", type=int, default=10, help="DPS steps run (of 1,000)")
    p.add_argument("--dps-batch", type=int, default=8, help="batch of dps and pigdm")
    p.add_argument("--tiling-steps", type=int, default=10, help="mask-shift DDNM steps (0: off)")
    p.add_argument("--tiling-batch", type=int, default=4, help="images of 2x3 windows' size")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--ceiling-size", type=int, default=8192)
    p.add_argument("--out", type=Path, default=None, help="JSON file (default outputs/bench/)")
    return p


def run(args: argparse.Namespace) -> dict:
    """Every measurement of `args`, compiling into an empty kernel cache (cold compile times);
    returns what the JSON holds."""
    with fresh_compile_cache():
        return _measure(args)


def _measure(args: argparse.Namespace) -> dict:
    if args.smoke:
        for key, value in SMOKE.items():
            setattr(args, key, value)
    device = torch.device(args.device)
    torch.set_float32_matmul_precision("high")  # as the jobs (TF32 on a GPU)
    torch._dynamo.config.cache_size_limit = 64  # one graph per (precision, batch) row
    gpu = device.type == "cuda"
    result = {
        "smoke": bool(args.smoke),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if gpu else platform.machine(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda if gpu else None,
        "settings": {k: v for k, v in vars(args).items() if k != "out"},
    }

    ceilings = {}
    for precision in ("fp32", "bf16", "fp16"):
        if precision == "fp16" and not gpu:
            ceilings[precision] = None  # model.precision=fp16 needs a GPU
            continue
        ceilings[precision] = matmul_ceiling(device, precision, args.ceiling_size, args.repeats)
    result["ceiling_tflops"] = ceilings

    presets = {name: Preset.load(name, smoke=args.smoke) for name in PRESETS}
    result["flops_per_image"] = {
        name: forward_flops(p.build, p.size, p.class_label is not None)
        for name, p in presets.items()
    }

    forward, denoisers = [], {}
    for name in dict.fromkeys([*args.models, args.method_model]):
        preset = presets[name]
        torch.manual_seed(0)
        net = preset.build().to(device)
        flops = result["flops_per_image"][name]
        for precision in args.precisions:
            for batch in args.batches:
                for compiled in (False, True):
                    if compiled and (
                        precision not in args.compile_precisions
                        or batch not in args.compile_batches
                    ):
                        continue
                    if precision == "fp16" and not gpu:
                        forward.append(_skipped(name, precision, batch, compiled, "needs a GPU"))
                        continue
                    option = args.compile if compiled else False
                    row, denoiser = forward_row(
                        net, preset, device, precision, batch, option, args.repeats
                    )
                    tflops = flops * batch / row["seconds"] / 1e12
                    row["tflops"] = tflops
                    row["pct_ceiling"] = _pct(tflops, ceilings[row["precision"]])
                    row["pct_bf16_ceiling"] = _pct(tflops, ceilings["bf16"])
                    forward.append(row)
                    denoisers[name, precision, batch, compiled] = (denoiser, row["seconds"])
        del net
    result["forward"] = forward

    default_precision = resolve_precision("auto", device)
    methods, dps = [], []
    preset = presets[args.method_model]
    key = (args.method_model, default_precision, args.method_batch, True)
    if key not in denoisers:
        key = (args.method_model, default_precision, args.method_batch, False)
    eager = (args.method_model, default_precision, args.method_batch, False)
    for name in args.methods:
        if name == "dps" or key not in denoisers:
            continue
        denoiser, seconds = denoisers[key]
        batch = args.method_batch
        if name in GRADIENT_METHODS:  # a backward pass per step: DPS's batch, eager network
            if eager not in denoisers:
                continue
            (denoiser, seconds), batch = denoisers[eager], args.dps_batch
            seconds *= batch / args.method_batch  # the forward's time per image, at this batch
        methods.append(
            method_row(
                name,
                denoiser,
                device,
                batch,
                preset.size,
                args.steps,
                seconds,
                repeats=1,
            )
        )
    if "dps" in args.methods:
        denoiser = denoisers[eager][0] if eager in denoisers else None
        if denoiser is not None:
            for checkpointing in (False, True):
                dps.append(
                    dps_row(
                        denoiser,
                        device,
                        args.dps_batch,
                        preset.size,
                        args.dps_steps,
                        checkpointing,
                        repeats=1,
                    )
                )
    result["methods"] = methods
    result["dps"] = dps
    result["tiling"] = []
    # eager: a network compiled for the method rows' batch would pad the tiling batch up to it
    eager = [
        d for (m, p, _, c), (d, _) in denoisers.items() if (m, p, c) == (key[0], key[1], False)
    ]
    if args.tiling_steps and eager:
        denoiser = eager[0]
        result["tiling"].append(
            tiling_row(
                denoiser, device, args.tiling_batch, preset.size, args.tiling_steps, repeats=1
            )
        )
    # a compiled network (the method rows' where it is one) again, its kernels now in the cache
    again = key if key[3] else next((k for k in denoisers if k[3]), None)
    result["compile_cache"] = (
        warm_compile_row(denoisers[again][0], presets[again[0]], device, again[2])
        if again
        else None
    )
    return result


def _pct(tflops: float, ceiling: float | None) -> float | None:
    return None if not ceiling else 100 * tflops / ceiling


def _skipped(model: str, precision: str, batch: int, compiled: bool, why: str) -> dict:
    return {
        "model": model,
        "precision": precision,
        "batch": batch,
        "compile": "requested" if compiled else None,
        "seconds": None,
        "skipped": why,
    }


def main(argv: list[str] | None = None) -> dict:
    args = parser().parse_args(argv)
    result = run(args)
    stamp = result["date"].replace(":", "-")
    out = args.out or Path("outputs") / "bench" / f"{stamp}{'_smoke' if args.smoke else ''}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(table.markdown(result))
    print(f"\nwritten: {out}")
    return result
