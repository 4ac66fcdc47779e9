"""The qualitative figure of a sweep: the same images under every job, side by side.

`python -m rnsf.report <folders…> --figure compare` reads the saved PNGs of the jobs under the
folders (`images/{measurement,restored,target}/<name>.png`, as `rnsf.engine.writer` writes them)
and, for each task of each dataset, writes `compare.png`, `compare.pdf` and `compare.html`:

- one row per chosen image; columns: the measurement as the first job saved it (y's picture),
  each job in the tables' row order (named by what differs between the jobs: method, steps,
  seed, …) with its PSNR on that image, and the ground truth when there is one;
- the same region of every column magnified in an inset, in the corner that hides least of it;
- the images: `images=[…]` (indices as in per_image.csv), or the median image by the baseline's
  PSNR, then the best and the worst by the method of interest's PSNR.

The PDF embeds every image and crop at its native pixel size (no resampling: viewers magnify
with nearest neighbours); the HTML page (`rnsf.report.compare_html`) holds the same images.
"""

from __future__ import annotations

import json
import math
import textwrap
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from rnsf.report.collect import find_metrics, record, task_rank
from rnsf.report.compare_html import data_uri, write_html
from rnsf.report.tables import METHOD_ORDER
from rnsf.utils.errors import UserError

#: the output files' stem
STEM = "compare"
#: the inset's width as a fraction of a panel's width
INSET_FRACTION = 0.5
#: the automatic region's side as a fraction of the image's shorter side
CROP_FRACTION = 0.25
FONT_PT = 6.5


@dataclass
class Job:
    """One finished job that saved its images."""

    folder: Path
    row: dict  # the report's tidy row (`collect.record`)
    info: dict  # its metrics.json
    per_image: pd.DataFrame  # per_image.csv, indexed by image name
    name: str = ""  # its column header

    def image(self, kind: str, name: str) -> Path:
        return self.folder / "images" / kind / f"{name}.png"


@dataclass
class Comparison:
    """One figure: the jobs of a (dataset, task), the chosen images and each image's region."""

    dataset: str
    task: str
    jobs: list[Job]
    names: list[str]  # the chosen images
    crops: list[tuple[int, int, int, int]]  # x, y, w, h of each chosen image
    target: bool  # the jobs saved the ground truth

    def columns(self) -> list[tuple[str, Job | None]]:
        """(header, job) of each column: measurement, jobs, ground truth."""
        cols = [("Measurement", None)] + [(j.name, j) for j in self.jobs]
        return [*cols, ("Ground truth", None)] if self.target else cols

    def paths(self, name: str) -> list[Path]:
        """The PNG of each column for image `name`."""
        first = self.jobs[0]
        paths = [first.image("measurement", name)] + [j.image("restored", name) for j in self.jobs]
        return [*paths, first.image("target", name)] if self.target else paths

    def psnr(self, name: str) -> list[float | None]:
        """Each column's PSNR on image `name` (None for the measurement and ground truth)."""
        values = [None] + [_psnr(j, name) for j in self.jobs]
        return [*values, None] if self.target else values


def _psnr(job: Job, name: str) -> float | None:
    if "psnr" not in job.per_image or name not in job.per_image.index:
        return None
    value = job.per_image.at[name, "psnr"]
    return None if pd.isna(value) else float(value)


# -- the jobs ---------------------------------------------------------------------------------
def load_jobs(paths) -> list[Job]:
    """Every finished job under `paths`. A job that did not save its images
    (`save_images=false`) is a UserError: the figure needs every image of every job."""
    files, _ = find_metrics(paths)
    jobs = []
    for path in files:
        folder = path.parent
        info = json.loads(path.read_text())
        config = folder / "config.yaml"
        saved = yaml.safe_load(config.read_text()) if config.is_file() else {}
        if not (saved or {}).get("save_images", True) or not (folder / "images/restored").is_dir():
            raise UserError(
                f"{folder} did not save its images (save_images=false); rerun it with "
                "save_images=true to compare its images"
            )
        per_image = pd.read_csv(folder / "per_image.csv", dtype={"name": str})
        jobs.append(Job(folder, record(info), info, per_image.set_index("name")))
    return jobs


def _order(job: Job) -> tuple:
    """The tables' row order (`paper_table`): method, row name, steps; then seed and folder."""
    row = job.row
    rank = METHOD_ORDER.index(row["method"]) if row["method"] in METHOD_ORDER else len(METHOD_ORDER)
    steps = row["steps"] if row["steps"] is not None else 0
    seed = row["seed"] if row["seed"] is not None else 0
    return rank, row["label"], steps, seed, str(job.folder)


def _describe(job: Job) -> dict[str, str]:
    """What may tell the job from its neighbours, as header fragments."""
    row, info = job.row, job.info
    parts = {"label": row["label"]}
    if row["steps"] is not None:
        parts["steps"] = f"{row['steps']} steps"
    for key, fmt in (("sigma", "σ {}"), ("eta", "η {}"), ("seed", "seed {}")):
        if info.get(key) is not None:
            parts[key] = fmt.format(info[key])
    known = {"method", "schedule", "method.steps", "seed", "task", "dataset", "task.sigma"}
    for override in info.get("overrides") or []:
        key = override.split("=", 1)[0].lstrip("+~")
        if key not in known and not key.startswith("hydra"):
            parts[key] = override
    return parts


def _varies(described: list[dict[str, str]], key: str) -> bool:
    """Whether `key` tells jobs apart: two values of it, or a job without it beside one with it
    under the same row name (a method that has no steps, like A†y, does not count)."""
    if len({d[key] for d in described if key in d}) > 1:
        return True
    having = {d["label"] for d in described if key in d}
    return any(key not in d and d["label"] in having for d in described)


def name_jobs(jobs: list[Job]) -> None:
    """Each job's header: its row name plus whatever else differs between the jobs (steps,
    seed, σ, η, other overrides); the folder's name where that still leaves two alike."""
    described = [_describe(j) for j in jobs]
    keys = list(dict.fromkeys(k for d in described for k in d))
    varying = [k for k in keys if k != "label" and _varies(described, k)]
    for job, parts in zip(jobs, described, strict=True):
        job.name = ", ".join([parts["label"], *(parts[k] for k in varying if k in parts)])
    if len({j.name for j in jobs}) < len(jobs):
        for job in jobs:
            job.name = f"{job.name} ({job.folder.name})"


def group_jobs(jobs: list[Job]) -> dict[tuple[str, str], list[Job]]:
    """The jobs of each (dataset, task), in the tables' order; the jobs of one group must have
    restored the same images."""
    groups: dict[tuple[str, str], list[Job]] = {}
    for job in jobs:
        groups.setdefault((str(job.row["dataset"]), str(job.row["task"])), []).append(job)
    ordered = {}
    for key in sorted(groups, key=lambda k: (k[0], task_rank(k[1]), k[1])):
        group = sorted(groups[key], key=_order)
        first = group[0]
        for job in group[1:]:
            if set(job.per_image.index) != set(first.per_image.index):
                raise UserError(
                    f"{job.folder} and {first.folder} restored different images "
                    f"({len(job.per_image)} and {len(first.per_image)} images of {key[0]}); "
                    "compare jobs of the same dataset, split and images"
                )
        name_jobs(group)
        ordered[key] = group
    return ordered


# -- the images and the region ----------------------------------------------------------------
def find_row(jobs: list[Job], name: str | None, option: str) -> Job | None:
    """The job called `name` (its header or its row name, any case); None for no name."""
    if name is None:
        return None
    for key in ("name", "label"):
        for job in jobs:
            value = job.name if key == "name" else job.row["label"]
            if value.lower() == name.lower():
                return job
    choices = ", ".join(j.name for j in jobs)
    raise UserError(f"{option} {name!r} is none of the compared jobs; choose one of: {choices}")


def choose_images(baseline: pd.Series, method: pd.Series) -> list[str]:
    """The image of median `baseline` PSNR (the lower median for an even count), then the best
    and the worst image by `method`'s PSNR among the others (ties: the first in file order)."""
    order = baseline.sort_values(kind="stable")
    chosen = [order.index[(len(order) - 1) // 2]]
    rest = method.drop(chosen)
    if len(rest):
        chosen.append(rest.idxmax())
        rest = rest.drop(chosen[-1])
    if len(rest):
        chosen.append(rest.idxmin())
    return chosen


def pick_images(
    jobs: list[Job], indices: list[int] | None, baseline: str | None, method: str | None
) -> list[str]:
    """Image names for `indices` (per_image.csv's `index`), or the automatic choice: by the
    baseline's (default: the first job) and the method of interest's (default: the last job)
    PSNR; without PSNR (no ground truth), the first three images."""
    table = jobs[0].per_image
    if indices is not None:
        by_index = {int(i): n for n, i in table["index"].items()}
        missing = [i for i in indices if i not in by_index]
        if missing:
            raise UserError(
                f"--images {missing[0]} is not an image of {jobs[0].folder}; its indices are "
                f"{min(by_index)}–{max(by_index)}"
            )
        return [by_index[i] for i in indices]
    base = find_row(jobs, baseline, "--baseline") or jobs[0]
    ours = find_row(jobs, method, "--method") or jobs[-1]
    if "psnr" not in base.per_image or base.per_image["psnr"].isna().all():
        return list(table.sort_values("index").index[:3])
    index = table.sort_values("index").index
    return choose_images(base.per_image.loc[index, "psnr"], ours.per_image.loc[index, "psnr"])


def read_image(path: Path) -> np.ndarray:
    """A saved PNG as (H, W, 3) uint8."""
    from rnsf.data.images import open_rgb

    if not path.is_file():
        raise UserError(f"{path} is missing; the job did not save this image (save_images=false?)")
    return np.asarray(open_rgb(path))


def auto_crop(
    restored: list[np.ndarray], target: np.ndarray | None = None, fraction: float = CROP_FRACTION
) -> tuple[int, int, int, int]:
    """The square window (side: `fraction` of the shorter side) where the restorations differ
    most: the largest sum over the window of the per-pixel variance across them; with a single
    restoration, its squared error against `target`; else the centre."""
    from scipy.signal import fftconvolve

    stack = np.stack([r.astype(np.float64) / 255 for r in restored])
    height, width = stack.shape[1:3]
    side = max(1, min(height, width, round(fraction * min(height, width))))
    if len(stack) > 1:
        score = stack.var(axis=0).mean(axis=-1)
    elif target is not None:
        score = ((stack[0] - target.astype(np.float64) / 255) ** 2).mean(axis=-1)
    else:
        score = np.zeros((height, width))
    if not score.any():
        return (width - side) // 2, (height - side) // 2, side, side
    sums = fftconvolve(score, np.ones((side, side)), mode="valid")
    y, x = np.unravel_index(np.argmax(sums), sums.shape)
    return int(x), int(y), side, side


def parse_crop(text: str) -> tuple[int, int, int, int]:
    """`x,y,w,h` in pixels of the restored images."""
    try:
        x, y, w, h = (int(v) for v in text.split(","))
    except ValueError:
        raise UserError(
            f"--crop {text!r} is not x,y,w,h (four integers, pixels of the restored image)"
        ) from None
    if x < 0 or y < 0 or w < 1 or h < 1:
        raise UserError(f"--crop {text!r}: x, y must be ≥ 0 and w, h ≥ 1")
    return x, y, w, h


def _check_crop(crop: tuple[int, int, int, int], shape: tuple[int, ...], name: str) -> None:
    x, y, w, h = crop
    if x + w > shape[1] or y + h > shape[0]:
        raise UserError(
            f"--crop {x},{y},{w},{h} leaves image {name} ({shape[1]}×{shape[0]} pixels); "
            "choose a region inside it"
        )


def plan(
    jobs: list[Job],
    dataset: str,
    task: str,
    images: list[int] | None = None,
    crop: tuple[int, int, int, int] | None = None,
    baseline: str | None = None,
    method: str | None = None,
) -> Comparison:
    """The figure of one (dataset, task): its images and regions."""
    names = pick_images(jobs, images, baseline, method)
    target = all(j.image("target", n).is_file() for j in jobs[:1] for n in names)
    crops = []
    for name in names:
        restored = [read_image(j.image("restored", name)) for j in jobs]
        if crop is not None:
            _check_crop(crop, restored[0].shape, name)
            crops.append(crop)
        else:
            truth = read_image(jobs[0].image("target", name)) if target else None
            crops.append(auto_crop(restored, truth))
    return Comparison(dataset, task, jobs, names, crops, target)


# -- the figure -------------------------------------------------------------------------------
def _scaled(crop, image: np.ndarray, reference: tuple[int, int]) -> tuple[int, int, int, int]:
    """`crop` (pixels of a `reference`-sized image) in pixels of `image` (e.g. a low-resolution
    measurement): the same part of the picture."""
    x, y, w, h = crop
    sy, sx = image.shape[0] / reference[0], image.shape[1] / reference[1]
    x0, y0 = math.floor(x * sx), math.floor(y * sy)
    x1, y1 = max(x0 + 1, math.ceil((x + w) * sx)), max(y0 + 1, math.ceil((y + h) * sy))
    return x0, y0, x1 - x0, y1 - y0


def draw(comparison: Comparison, png: Path, pdf: Path, width_in: float = 7.0) -> None:
    """`compare.png` and `compare.pdf`: `width_in` inches wide (7.0: a two-column page's
    text width), each panel's image and inset embedded at native resolution."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    columns = comparison.columns()
    ncol, nrow = len(columns), len(comparison.names)
    gap, band = 0.03, 1.6 * FONT_PT / 72  # inches: between panels, the labels under them
    panel_w = (width_in - gap * (ncol - 1)) / ncol
    chars = max(8, int(panel_w * 72 / (0.55 * FONT_PT)))  # a header's line fits its panel
    titles = [textwrap.fill(title, chars) for title, _ in columns]
    header = 0.05 + max(t.count("\n") + 1 for t in titles) * 1.3 * FONT_PT / 72
    rows = [[read_image(p) for p in comparison.paths(n)] for n in comparison.names]
    first = rows[0][1]
    panel_h = panel_w * first.shape[0] / first.shape[1]
    height_in = header + nrow * (panel_h + band + gap)
    widest = max(img.shape[1] for row in rows for img in row)
    dpi = min(600, max(200, math.ceil(widest / panel_w)))  # no panel shown below native size
    style = {
        "image.composite_image": False,  # one image object per panel in the PDF
        "pdf.fonttype": 42,
        "font.size": FONT_PT,
        "axes.linewidth": 0.6,
    }
    with matplotlib.rc_context(style):
        fig = plt.figure(figsize=(width_in, height_in))
        for r, (name, images) in enumerate(zip(comparison.names, rows, strict=True)):
            reference = images[1].shape[:2]
            crop = comparison.crops[r]
            psnr = comparison.psnr(name)
            bottom = height_in - header - (r + 1) * (panel_h + band + gap) + band
            for c, (title, image) in enumerate(zip(titles, images, strict=True)):
                left = c * (panel_w + gap)
                box = [left / width_in, bottom / height_in, panel_w / width_in]
                ax = fig.add_axes([*box, panel_h / height_in])
                ax.imshow(image, interpolation="none")
                ax.set_axis_off()
                if r == 0:
                    ax.set_title(title, fontsize=FONT_PT, pad=2)
                label = f"{psnr[c]:.2f} dB" if psnr[c] is not None else ""
                if c == 0:
                    label = f"#{int(comparison.jobs[0].per_image.at[name, 'index'])} {name}"
                ax.annotate(
                    label,
                    (0.5, 0),
                    xycoords="axes fraction",
                    xytext=(0, -1.5),
                    textcoords="offset points",
                    ha="center",
                    va="top",
                )
                x, y, w, h = _scaled(crop, image, reference)
                ax.add_patch(Rectangle((x - 0.5, y - 0.5), w, h, fill=False, ec="#ffd400", lw=0.8))
                _inset(fig, ax, image[y : y + h, x : x + w], crop, reference)
        fig.savefig(png, dpi=dpi)
        fig.savefig(pdf)
        plt.close(fig)


def inset_corner(
    crop: tuple[int, int, int, int], size: tuple[int, int], fw: float, fh: float
) -> tuple[bool, bool]:
    """(right, bottom): the corner of an inset `fw` × `fh` (fractions of the image) that covers
    least of the region `crop` of an image of `size` (H, W); of equals, the farthest from it."""
    x, y, w, h = crop
    height, width = size

    def cost(right: bool, bottom: bool) -> tuple[float, float]:
        x0, y0 = (1 - fw) * width if right else 0, (1 - fh) * height if bottom else 0
        x1, y1 = x0 + fw * width, y0 + fh * height
        covered = max(0, min(x1, x + w) - max(x0, x)) * max(0, min(y1, y + h) - max(y0, y))
        distance = math.hypot((x0 + x1) / 2 - (x + w / 2), (y0 + y1) / 2 - (y + h / 2))
        return covered, -distance

    return min(((r, b) for r in (True, False) for b in (True, False)), key=lambda c: cost(*c))


def _inset(fig, ax, patch: np.ndarray, crop, reference: tuple[int, int]) -> None:
    """`patch`, magnified in the corner of `ax` that covers least of the region (`inset_corner`)."""
    pos = ax.get_position()
    fig_w, fig_h = fig.get_size_inches()
    width = INSET_FRACTION * pos.width * fig_w  # inches
    height = width * patch.shape[0] / patch.shape[1]
    if height > INSET_FRACTION * pos.height * fig_h:
        height = INSET_FRACTION * pos.height * fig_h
        width = height * patch.shape[1] / patch.shape[0]
    right, below = inset_corner(
        crop, reference, width / (pos.width * fig_w), height / (pos.height * fig_h)
    )
    left = pos.x1 - width / fig_w if right else pos.x0
    bottom = pos.y0 if below else pos.y1 - height / fig_h
    inset = fig.add_axes([left, bottom, width / fig_w, height / fig_h])
    inset.imshow(patch, interpolation="none")
    inset.set_xticks([])
    inset.set_yticks([])
    for spine in inset.spines.values():
        spine.set_edgecolor("#ffd400")
        spine.set_linewidth(0.8)


def page_data(comparison: Comparison) -> dict:
    """What the page shows: column headers, and for each image its PNGs, PSNRs and region."""
    first = comparison.jobs[0]
    images = []
    for name, crop in zip(comparison.names, comparison.crops, strict=True):
        height, width = read_image(first.image("restored", name)).shape[:2]
        cells = [
            {"src": data_uri(path), "psnr": psnr}
            for path, psnr in zip(comparison.paths(name), comparison.psnr(name), strict=True)
        ]
        index = int(first.per_image.at[name, "index"])
        images.append(
            {"name": name, "index": index, "width": width, "height": height, "crop": crop}
            | {"cells": cells}
        )
    title = f"{comparison.task} · {comparison.dataset}"
    return {"title": title, "columns": [c for c, _ in comparison.columns()], "images": images}


# -- the files --------------------------------------------------------------------------------
def write_compare(
    paths,
    out: str | Path,
    images: list[int] | None = None,
    crop: tuple[int, int, int, int] | None = None,
    width_in: float = 7.0,
    baseline: str | None = None,
    method: str | None = None,
) -> list[Path]:
    """`compare.png`, `.pdf` and `.html` in `out` for the jobs under `paths`; with several
    tasks or datasets, one set per task (`compare_<task>.*`, `compare_<dataset>_<task>.*`)."""
    if width_in <= 0:
        raise UserError(f"--width-in {width_in} must be positive (inches; 7.0 fits two columns)")
    groups = group_jobs(load_jobs(paths))
    if not groups:
        raise UserError(f"no finished job under {', '.join(map(str, paths))}")
    datasets = {d for d, _ in groups}
    # every figure is planned (and every option checked) before anything is written
    plans = [plan(jobs, d, t, images, crop, baseline, method) for (d, t), jobs in groups.items()]
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for comparison in plans:
        stem = STEM
        if len(plans) > 1:
            task = comparison.task
            stem = f"{STEM}_{comparison.dataset}_{task}" if len(datasets) > 1 else f"{STEM}_{task}"
        png, pdf, html = (out / f"{stem}.{ext}" for ext in ("png", "pdf", "html"))
        draw(comparison, png, pdf, width_in)
        write_html(page_data(comparison), html)
        written += [png, pdf, html]
    return written


def compare_from_args(args, out: Path, folders: list[Path]) -> list[Path]:
    """`write_compare` of `folders` with the options of `python -m rnsf.report` (`--images`,
    `--crop`, `--width-in`, `--method`, and `--baseline` where the report has it)."""
    try:
        images = [int(i) for i in args.images.split(",")] if args.images else None
    except ValueError:
        raise UserError(
            f"--images {args.images!r} is not a list of image indices such as 0,5,12"
        ) from None
    crop = parse_crop(args.crop) if args.crop else None
    baseline = getattr(args, "baseline", None)
    return write_compare(folders, out, images, crop, args.width_in, baseline, args.method)
