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


def data_uri(path: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode("ascii")


def write_html(data: dict, path: Path) -> Path:
    """The page for `data` (`rnsf.report.compare.page_data`: the title, the column headers and,
    for each image, its cells' PNG data URIs and PSNRs, its size and its region)."""
    template = files("rnsf.report").joinpath("compare_page.html").read_text()
    # inside <script type="application/json"> only "</" could end the element early
    payload = json.dumps(data).replace("</", "<\\/")
    page = template.replace("__TITLE__", html.escape(data["title"])).replace("__DATA__", payload)
    atomic_write_text(Path(path), page)
    return Path(path)
