"""python -m rnsf.report <run or sweep folders…> [--reference [CSV]] [--baseline ROW] [--out DIR]

Collects the `metrics.json` of every job under the folders and writes, into `--out`
(default: `<folder>/report` for one folder, `outputs/report` otherwise), the tidy
`results.csv`, one table per dataset as Markdown, CSV and LaTeX in the paper's layout, and a
figure; the Markdown is printed too. Every mean has its 95 % interval; `--baseline` adds the
paired comparison of every other row with that one. The folder of a λ-schedule search
(`experiment=lambda_search`) gets the ablation view instead (`rnsf.report.ablation`).
`--figure compare` shows the jobs' saved images side by side (`rnsf.report.compare`:
compare.png, .pdf and .html).
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from rnsf.metrics.intervals import BOOTSTRAP_SEED
from rnsf.report.ablation import is_search, write_ablation
from rnsf.report.collect import METRICS, collect
from rnsf.report.compare import compare_from_args
from rnsf.report.figures import FIGURE_AXES
from rnsf.report.files import write_report
from rnsf.report.stats import baseline_label
from rnsf.utils.errors import UserError


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m rnsf.report", description=__doc__.split("\n\n")[1].strip()
    )
    parser.add_argument(
        "folders", nargs="+", type=Path, help="run or sweep folders (searched recursively)"
    )
    parser.add_argument("--out", type=Path, help="where to write the tables and the figure")
    parser.add_argument(
        "--reference",
        nargs="?",
        const="default",
        default=None,
        metavar="CSV",
        help="print the published numbers under the reproduced ones (default: the paper's tables)",
    )
    parser.add_argument("--metrics", help=f"comma-separated subset of {', '.join(METRICS)}")
    parser.add_argument(
        "--figure",
        choices=[*FIGURE_AXES, "compare", "none"],
        default="auto",
        help="x axis of the figure: steps, schedule, method; compare: the images side by side",
    )
    compare = parser.add_argument_group("--figure compare")
    compare.add_argument("--images", help="image indices, e.g. 0,5,12 (default: automatic)")
    compare.add_argument("--crop", help="x,y,w,h of the zoomed region (default: automatic)")
    compare.add_argument("--width-in", type=float, default=7.0, help="width in inches")
    compare.add_argument("--method", help="the row whose best and worst images are shown")
    stats = parser.add_argument_group("statistics")
    stats.add_argument(
        "--baseline", metavar="ROW", help="compare every row with this one, on the same images"
    )
    stats.add_argument("--intervals", action="store_true", help="intervals in the LaTeX too")
    stats.add_argument(
        "--bootstrap-seed", type=int, default=BOOTSTRAP_SEED, help="seed of every interval"
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    metrics = args.metrics.split(",") if args.metrics else None
    unknown = [m for m in metrics or [] if m not in METRICS]
    if unknown:
        print(
            f"error: unknown metric {unknown[0]!r}; choose from {', '.join(METRICS)}",
            file=sys.stderr,
        )
        return 2
    try:
        frame = collect(args.folders)
    except FileNotFoundError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if frame.empty:
        print(
            f"error: no metrics.json under {', '.join(map(str, args.folders))}; "
            "pass the folders of finished runs or sweeps",
            file=sys.stderr,
        )
        return 2
    out = args.out or (
        args.folders[0] / "report" if len(args.folders) == 1 else Path("outputs/report")
    )
    searches = [f for f in args.folders if is_search(f)]
    for folder in searches:  # λ-schedule searches (experiment=lambda_search): the ablation view
        target = out if len(searches) == 1 else out / folder.name
        print(write_ablation(folder, target, bootstrap_seed=args.bootstrap_seed))
    if len(searches) == len(args.folders):
        print(f"ablation view in {out}")
        return 0
    if args.baseline:  # a row that is not there is refused before anything is written
        try:
            baseline_label(frame, args.baseline)
        except UserError as err:
            print(f"error: {err}", file=sys.stderr)
            return 2
    if args.figure == "compare":
        try:
            written = compare_from_args(args, out, [f for f in args.folders if f not in searches])
        except UserError as err:
            print(f"error: {err}", file=sys.stderr)
            return 2
    reference = None
    if args.reference:
        from rnsf.data.reference import load_reference

        reference = load_reference(None if args.reference == "default" else args.reference)
    try:
        text = write_report(
            frame,
            out,
            reference=reference,
            metrics=metrics,
            figure=None if args.figure in ("none", "compare") else args.figure,
            baseline=args.baseline,
            latex_intervals=args.intervals,
            bootstrap_seed=args.bootstrap_seed,
        )
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(text)
    if args.figure == "compare":
        print("comparison figure: " + ", ".join(str(p) for p in written))
    print(f"{len(frame)} jobs; tables and figure in {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
