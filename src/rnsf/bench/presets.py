"""Size and speed of the pretrained-model presets, at random weights.

    python -m rnsf.bench.presets [--models adm_imagenet256 …] [--batch 1] [--repeats 2]
                                 [--device cpu] [--precision fp32] [--save-random DIR]

For each preset: state-dict keys, parameters, and the best-of-`repeats` time of one forward
pass (after a warm-up) through the `PretrainedDenoiser` the engine uses. `--save-random DIR`
also writes the random weights as DIR/<upstream file name>, a plain state dict like the
published files, so that `python run.py model=… model.checkpoint=DIR/<file>` runs end to end
without the real checkpoint (a wiring check; its images are noise).
`benchmarks/bench_models.py` runs the same.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
from hydra import compose, initialize_config_dir

from rnsf.denoisers import ADMUNet, DDPMUNet, NoisyClassifier, PretrainedDenoiser
from rnsf.utils.cli import CONF_DIR

PRESETS = [
    "adm_imagenet256",
    "adm_imagenet256_cond",
    "adm_ffhq256",
    "ddpm_celebahq256",
    "ddpm_lsun_bedroom256",
    "ddpm_lsun_cat256",
    "ddpm_lsun_church256",
    "ddpm_cifar10_32",
    "adm_imagenet512_cond",
]


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=PRESETS, choices=PRESETS)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--precision", default="fp32", choices=["fp32", "fp16", "bf16"])
    parser.add_argument("--save-random", type=Path, help="write the random weights here")
    args = parser.parse_args()
    device = torch.device(args.device)
    print(
        f"device {device}, {torch.get_num_threads()} threads, batch {args.batch}, {args.precision}"
    )
    print("| model | file | keys | parameters | s/forward |")
    print("|---|---|---|---|---|")
    for name in args.models:
        with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
            model = compose("config", overrides=[f"model={name}"]).model
        network = ADMUNet if model.net._target_.endswith("load_adm") else DDPMUNet
        torch.manual_seed(0)
        net = network(**model.arch)
        state = net.state_dict()
        params = sum(p.numel() for p in net.parameters())
        if args.save_random:
            (args.save_random / model.release).parent.mkdir(parents=True, exist_ok=True)
            torch.save(state, args.save_random / model.release)
            if model.get("classifier"):  # the guidance classifier of the preset, also random
                classifier = NoisyClassifier(**model.classifier.arch)
                torch.save(classifier.state_dict(), args.save_random / model.classifier.release)
                del classifier
        size = int(model.arch.get("image_size") or model.arch.get("resolution"))
        denoiser = PretrainedDenoiser(
            net,
            name=name,
            native_size=size,
            precision=args.precision,
            # a class-conditional preset takes each image's class: one fixed class here
            class_label=0 if model.arch.get("num_classes") else None,
        ).to(device)
        x = torch.randn(args.batch, 3, size, size, device=device)
        t = torch.full((args.batch,), 500, device=device)
        best = float("inf")
        with torch.inference_mode():
            denoiser(x, t)  # warm-up
            for _ in range(args.repeats):
                sync(device)
                start = time.perf_counter()
                denoiser(x, t)
                sync(device)
                best = min(best, time.perf_counter() - start)
        print(f"| {name} | {model.release} | {len(state)} | {params:,} | {best:.2f} |")
        del net, denoiser, state


if __name__ == "__main__":
    main()
