"""`compare.html`: the comparison figure's images in one self-contained page.

The page (`compare_page.html`, plain HTML, CSS and JavaScript) holds every PNG as a base64
data URI, so it opens from disk with no server and no network. A reader flips between the
columns of an image (buttons, ←/→, 1–9), between images (buttons, ↑/↓), and zooms (wheel,
drag, +/−, the figure's region): each image has one zoom, shared by all its columns.
"""

from __future__ import annotations

import base64
import html
import json
from importlib.resources import files
from pathlib import Path

from rnsf.engine.outputs import atomic_write_text
from rnsf.report.compare import Comparison, read_image


def data_uri(path: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode("ascii")


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


def write_html(comparison: Comparison, path: Path) -> Path:
    data = page_data(comparison)
    template = files("rnsf.report").joinpath("compare_page.html").read_text()
    # inside <script type="application/json"> only "</" could end the element early
    payload = json.dumps(data).replace("</", "<\\/")
    page = template.replace("__TITLE__", html.escape(data["title"])).replace("__DATA__", payload)
    atomic_write_text(Path(path), page)
    return Path(path)
