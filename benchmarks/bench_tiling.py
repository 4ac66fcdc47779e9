"""Seconds per megapixel of mask-shift restoration (tiling=mask_shift) on the built-in prior.

    python benchmarks/bench_tiling.py [--size 192 288] [--window 64] [--steps 10] [--device cpu]

Restores a package photograph (scikit-image's `stereo_motorcycle`, held out from the prior's
training and from the demo set) at SR ×4 with DDNM, tiled and untiled (the built-in prior takes
any size), and prints the window count, seconds and seconds per megapixel of the output.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from rnsf.denoisers import load_tiny_prior
from rnsf.methods import DDNM
from rnsf.operators import BicubicSR
from rnsf.tiling import MaskShift, plan
from rnsf.utils.random import image_generators


def photo(height: int, width: int) -> torch.Tensor:
    from PIL import Image
    from skimage import data

    image = Image.fromarray(data.stereo_motorcycle()[0]).resize((width, height), Image.LANCZOS)
    return torch.from_numpy(np.asarray(image)).permute(2, 0, 1)[None] / 127.5 - 1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, nargs=2, default=(192, 288), metavar=("H", "W"))
    parser.add_argument("--window", type=int, default=64)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    device = torch.device(args.device)
    prior = load_tiny_prior().to(device).requires_grad_(False)
    x = photo(*args.size).to(device)
    op = BicubicSR(4)
    y = op.A(x)
    tiling = MaskShift(window=args.window, progress=False).resolve(prior)
    windows = len(plan(*args.size, tiling.window, tiling.stride))
    megapixels = args.size[0] * args.size[1] / 1e6
    print(
        f"device {device}, {torch.get_num_threads()} threads, {args.size[0]}x{args.size[1]}, "
        f"SR x4, DDNM {args.steps} steps, window {tiling.window}, stride {tiling.stride}"
    )
    print("| run | windows | s | s/megapixel |")
    print("|---|---|---|---|")
    method = DDNM(steps=args.steps)
    for name, restore in (
        ("untiled", lambda g: method.restore(y, op, prior, g)),
        ("mask_shift", lambda g: tiling.restore(method, y, op, prior, g)),
    ):
        with torch.inference_mode():
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            start = time.perf_counter()
            restore(image_generators(0, [0], device))
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            seconds = time.perf_counter() - start
        count = 1 if name == "untiled" else windows
        print(f"| {name} | {count} | {seconds:.1f} | {seconds / megapixels:.1f} |")


if __name__ == "__main__":
    main()
