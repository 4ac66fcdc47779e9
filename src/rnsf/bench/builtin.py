"""Seconds per image of pinv, ddnm and rnsf on the built-in prior, and the sampler's overhead.

    python -m rnsf.bench.builtin [--steps 100] [--batch 16] [--task sr4] [--device cpu]

overhead = (restoration time) / (time of the same number of bare network evaluations on the
same batch); 1.00 means the sampler adds nothing to the network's cost.
`benchmarks/bench_methods.py` (`make benchmark`) runs the same.
"""

from __future__ import annotations

import argparse

import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate

from rnsf.bench.measure import best_time
from rnsf.denoisers import load_tiny_prior
from rnsf.methods import DDNM, RNSF, Pinv
from rnsf.schedules import ExpSchedule
from rnsf.utils.cli import CONF_DIR
from rnsf.utils.random import image_generators


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--task", default="sr4")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    device = torch.device(args.device)

    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        cfg = compose("config", overrides=[f"task={args.task}", f"dataset.limit={args.batch}"])
    data = instantiate(cfg.dataset).dataset
    x = torch.stack([data[i]["image"] for i in range(len(data))]).to(device)
    task = instantiate(cfg.task)
    model = load_tiny_prior().to(device)
    gens = lambda: image_generators(0, range(x.shape[0]), device)  # noqa: E731
    op, y = task.measure(x, gens())

    with torch.inference_mode():
        t_net = best_time(
            lambda: [model.eps(x, 500) for _ in range(args.steps)], device, args.repeats
        )
        print(f"device {device}, {x.shape[0]} images of {tuple(x.shape[1:])}, task {args.task}")
        print(f"{'method':8s} {'NFE':>4s} {'s/image':>9s} {'overhead':>9s}")
        methods = [
            Pinv(),
            DDNM(steps=args.steps),
            RNSF(steps=args.steps, schedule=ExpSchedule()),
        ]
        for method in methods:
            seconds = best_time(
                lambda m=method: m.restore(y, op, model, gens(), sigma_y=task.sigma_model),
                device,
                args.repeats,
            )
            overhead = seconds / t_net if method.nfe else float("nan")
            print(f"{method.name:8s} {method.nfe:4d} {seconds / x.shape[0]:9.4f} {overhead:9.3f}")
        print(f"bare network: {t_net / x.shape[0]:.4f} s/image for {args.steps} evaluations")


if __name__ == "__main__":
    main()
