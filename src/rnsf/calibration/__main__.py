"""python -m rnsf.calibration [--methods …] [--tasks …] [--sigmas …] [--samples N] [--out DIR]

Runs each method on one measurement per task and noise level, many samples each, on a Gaussian
prior whose posterior is known exactly, and writes `calibration.md` (printed too),
`calibration.csv` and `calibration.png` into `--out`. Methods are config names (`conf/method/`,
or a folder of your own given with `--searchpath`) or classes by import path (`my_pieces.MyMethod`,
importable from the current folder).
"""

from __future__ import annotations

import argparse
import math
import shlex
import sys
from pathlib import Path

from rnsf.calibration.run import run_cell
from rnsf.calibration.setup import DEFAULT_TASKS, available_methods, build_method, build_task
from rnsf.calibration.stats import LEVEL, POINT_MASS_TOL
from rnsf.calibration.table import figure, frame, markdown
from rnsf.utils.errors import UserError


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m rnsf.calibration", description=__doc__.split("\n\n")[1].strip()
    )
    parser.add_argument(
        "--methods",
        nargs="+",
        help="default: those of pinv ddnm rnsf ddrm dps ssd pigdm "
        "diffpir reddiff daps that have a config",
    )
    parser.add_argument("--tasks", nargs="+", default=list(DEFAULT_TASKS))
    parser.add_argument(
        "--sigmas", nargs="+", type=float, default=[0.0, 0.05], help="task.sigma, [0, 1] units"
    )
    parser.add_argument("--samples", type=int, default=1000, help="samples per measurement")
    parser.add_argument("--size", type=int, default=8, help="image side (RGB, square)")
    parser.add_argument(
        "--steps",
        type=int,
        default=100,
        help="methods whose `steps` is larger run this many (0: every method's own default)",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--prior-mean", type=float, default=0.0)
    parser.add_argument("--prior-std", type=float, default=1.0)
    parser.add_argument("--batch", type=int, help="samples per restore call (default: all)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument(
        "--searchpath", nargs="+", type=Path, default=[], help="folders of your own config groups"
    )
    parser.add_argument("--out", type=Path, default=Path("outputs/calibration"))
    return parser.parse_args(argv)


def _without_out(argv: list[str]) -> list[str]:
    """The arguments that decide the numbers: all but `--out DIR` (`--out=DIR`)."""
    kept, skip = [], False
    for arg in argv:
        if skip or arg.startswith("--out="):
            skip = False
            continue
        skip = arg == "--out"
        if not skip:
            kept.append(arg)
    return kept


def header(args: argparse.Namespace, argv: list[str]) -> str:
    """What produced the table, and how to read it."""
    command = shlex.join(["python", "-m", "rnsf.calibration", *_without_out(argv)])
    steps = f"steps capped at {args.steps}" if args.steps else "each method's own steps"
    floor = 1 / math.sqrt(args.samples)
    return (
        f"`{command}`: prior N({args.prior_mean:g}, {args.prior_std:g}²) per pixel, "
        f"{args.size}×{args.size} RGB, one measurement per row restored {args.samples} times "
        f"(seed {args.seed}), {steps}. In the spectral coordinates Vᵀx: mean err. = RMS of "
        f"(sample mean − exact mean) / prior std (an exact sampler: ≈ 1/√n = {floor:.3f} in "
        f"the null space); var. ratio = sample / exact variance (1 = exact; — where the exact "
        f"posterior is a point mass: the range at σ_y = 0); cov. = share of samples inside the "
        f"exact {100 * LEVEL:.0f} % intervals (at a point mass: within {POINT_MASS_TOL:g} prior "
        f"std of it). σ_y in [0, 1] pixel units."
    )


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    from rnsf.denoisers import GaussianPrior

    prior = GaussianPrior(mean=args.prior_mean, std=args.prior_std)
    try:
        names = args.methods or available_methods(args.searchpath)
        methods = [(n, build_method(n, args.steps or None, args.searchpath)) for n in names]
        tasks = [build_task(t, s, args.searchpath) for t in args.tasks for s in args.sigmas]
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    cells = []
    for task in tasks:
        for name, method in methods:
            cell = run_cell(
                name,
                method,
                task,
                prior,
                samples=args.samples,
                size=args.size,
                seed=args.seed,
                batch=args.batch,
                device=args.device,
            )
            status = cell.refused or cell.failed or f"{cell.seconds:.1f} s"
            print(f"{name} {task.name} σ={task.sigma:g}: {status}", file=sys.stderr)
            cells.append(cell)
    args.out.mkdir(parents=True, exist_ok=True)
    text = markdown(cells, header(args, argv))
    (args.out / "calibration.md").write_text(text)
    frame(cells).to_csv(args.out / "calibration.csv", index=False)
    figure(cells, args.out / "calibration.png")
    print(text)
    print(f"table and figure in {args.out}", file=sys.stderr)
    failed = [c for c in cells if c.failed]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
