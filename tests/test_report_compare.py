"""rnsf.report.compare: the qualitative figure (PNG, PDF, HTML) of a sweep's saved images."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from rnsf.report.__main__ import main
from rnsf.report.compare import (
    auto_crop,
    choose_images,
    group_jobs,
    inset_corner,
    load_jobs,
    write_compare,
)
from rnsf.utils.errors import UserError

SIZE = 32
N_IMAGES = 5


def save(array: np.ndarray, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.clip(array, 0, 255).astype(np.uint8)).save(path)


def truth(i: int) -> np.ndarray:
    """Image i of the fake dataset: a smooth ramp, different per image."""
    yy, xx = np.mgrid[:SIZE, :SIZE]
    base = 4 * xx + 3 * yy + 20 * i
    return np.stack([base, 255 - base, np.full_like(base, 40 * i)], axis=-1) % 256


def fake_job(
    root: Path,
    folder: str,
    method: str,
    psnr: list[float],
    noise: float = 0.0,
    planted: tuple[int, int, int, int] | None = None,
    save_images: bool = True,
    n_images: int = N_IMAGES,
    **info,
) -> Path:
    """A finished job's folder as the engine writes it: config.yaml, metrics.json,
    per_image.csv and images/{measurement,restored,target}/<name>.png (SIZE² RGB; the
    measurement at a quarter of the size). `planted` (x, y, w, h) adds strong noise there."""
    out = root / folder
    rng = np.random.default_rng(len(folder) + 7 * len(method))
    rows = []
    for i in range(n_images):
        name = f"img_{i:02d}"
        target = truth(i).astype(float)
        restored = target + noise * rng.standard_normal(target.shape)
        if planted is not None:
            x, y, w, h = planted
            restored[y : y + h, x : x + w] += 120 * rng.standard_normal((h, w, 3))
        if save_images or i < 2:  # as the writer does: only grid.png's images otherwise
            save(restored, out / "images/restored" / f"{name}.png")
            save(target[::4, ::4], out / "images/measurement" / f"{name}.png")
            save(target, out / "images/target" / f"{name}.png")
        rows.append({"index": i, "name": name, "psnr": psnr[i], "seconds": 0.1})
    pd.DataFrame(rows).to_csv(out / "per_image.csv", index=False)
    (out / "config.yaml").write_text(f"seed: 0\nsave_images: {str(save_images).lower()}\n")
    metrics = {
        "method": method,
        "task": "sr4",
        "dataset": "demo",
        "model": "tiny",
        "schedule": "exp" if method == "rnsf" else None,
        "schedule_params": {"reverse": False} if method == "rnsf" else None,
        "steps": None if method == "pinv" else 25,
        "n_images": n_images,
        "psnr": float(np.mean(psnr)),
        "seed": 0,
        "overrides": [f"method={method}", "task=sr4"],
    } | info
    (out / "metrics.json").write_text(json.dumps(metrics))
    return out


#: per-image PSNRs: the baseline's median is image 3 (24.0); RNSF's best is 0, its worst 4
PSNR = {
    "pinv": [22.0, 20.0, 30.0, 24.0, 26.0],
    "ddnm": [25.0, 24.0, 26.0, 25.5, 23.0],
    "rnsf": [31.0, 24.0, 26.0, 25.9, 21.0],
}


@pytest.fixture
def sweep(tmp_path) -> Path:
    root = tmp_path / "sweep"
    fake_job(root, "0", "pinv", PSNR["pinv"], noise=2.0)
    fake_job(root, "1", "rnsf", PSNR["rnsf"], noise=2.0, planted=(20, 4, 6, 6))
    fake_job(root, "2", "ddnm", PSNR["ddnm"], noise=2.0)
    return root


def test_jobs_in_table_order_named_by_what_differs(sweep, tmp_path):
    groups = group_jobs(load_jobs([sweep]))
    assert list(groups) == [("demo", "sr4")]
    assert [j.name for j in groups["demo", "sr4"]] == ["A†y", "DDNM", "RNSF (exp)"]
    # a sweep over steps and seeds of one method: the headers say steps and seed
    other = tmp_path / "steps"
    fake_job(other, "a", "ddnm", PSNR["ddnm"], steps=100, seed=1)
    fake_job(other, "b", "ddnm", PSNR["ddnm"], steps=25, seed=1)
    fake_job(other, "c", "ddnm", PSNR["ddnm"], steps=25, seed=2)
    names = [j.name for j in group_jobs(load_jobs([other]))["demo", "sr4"]]
    assert names == ["DDNM, 25 steps, seed 1", "DDNM, 25 steps, seed 2", "DDNM, 100 steps, seed 1"]


def test_choose_images_median_best_worst():
    names = [f"img_{i:02d}" for i in range(N_IMAGES)]
    base = pd.Series(PSNR["pinv"], index=names)
    ours = pd.Series(PSNR["rnsf"], index=names)
    # baseline sorted: 20 (1), 22 (0), 24 (3), 26 (4), 30 (2) -> median img_03; RNSF among the
    # rest: best 31.0 (img_00), worst 21.0 (img_04)
    assert choose_images(base, ours) == ["img_03", "img_00", "img_04"]
    # the median taken is not offered again: RNSF's best is the median image here
    ours = pd.Series([20.0, 21.0, 22.0, 40.0, 23.0], index=names)
    assert choose_images(base, ours) == ["img_03", "img_04", "img_00"]
    # an even count takes the lower median
    assert choose_images(base.iloc[:4], ours.iloc[:4])[0] == "img_00"


def test_auto_crop_finds_the_planted_difference():
    rng = np.random.default_rng(0)
    clean = rng.integers(0, 255, (64, 48, 3)).astype(np.uint8)
    other = clean.copy()
    other[40:50, 5:15] = 255 - other[40:50, 5:15]  # the methods disagree only there
    x, y, w, h = auto_crop([clean, clean, other])
    assert (w, h) == (12, 12)  # a quarter of the shorter side
    assert x <= 5 and x + w >= 15 and y <= 40 and y + h >= 50
    # one method: where it is furthest from the ground truth
    x, y, w, h = auto_crop([other], target=clean)
    assert x <= 5 and x + w >= 15 and y <= 40 and y + h >= 50
    # no difference at all: the centre
    assert auto_crop([clean, clean]) == (18, 26, 12, 12)


def test_inset_corner_covers_least_of_the_region():
    # (right, bottom) on a 64×64 image, an inset of half its side
    assert inset_corner((4, 4, 16, 16), (64, 64), 0.5, 0.5) == (True, True)
    assert inset_corner((44, 40, 16, 16), (64, 64), 0.5, 0.5) == (False, False)
    assert inset_corner((40, 4, 16, 16), (64, 64), 0.5, 0.5) == (False, True)
    # a region across the centre, more of it up and left: the bottom-right corner covers least
    assert inset_corner((20, 22, 16, 16), (64, 64), 0.5, 0.5) == (True, True)


def test_cli_writes_png_pdf_html(sweep, tmp_path, capsys):
    out = tmp_path / "report"
    assert main([str(sweep), "--figure", "compare", "--out", str(out)]) == 0
    for ext in ("png", "pdf", "html"):
        assert (out / f"compare.{ext}").stat().st_size > 1000
    assert (out / "table_demo.md").is_file()  # the tables as always
    assert "compare.png" in capsys.readouterr().out
    png = Image.open(out / "compare.png")
    assert png.width == pytest.approx(7.0 * png.info.get("dpi", (200,))[0], abs=2)
    page = (out / "compare.html").read_text()
    # self-contained: 3 images × (measurement, 3 methods, ground truth) inlined, nothing fetched
    assert page.count("data:image/png;base64,") == 15
    assert "http://" not in page and "https://" not in page and "<link" not in page


def test_auto_choice_and_region_reach_the_figure(sweep, tmp_path):
    from rnsf.report.compare import plan

    jobs = group_jobs(load_jobs([sweep]))["demo", "sr4"]
    comparison = plan(jobs, "demo", "sr4")
    assert comparison.names == ["img_03", "img_00", "img_04"]  # median A†y, best/worst RNSF
    for x, y, w, h in comparison.crops:  # the planted region (20, 4, 6, 6), in an 8×8 window
        assert (w, h) == (8, 8) and x <= 20 and x + w >= 26 and y <= 4 and y + h >= 10
    chosen = plan(jobs, "demo", "sr4", images=[2, 1], crop=(1, 2, 5, 6), method="ddnm")
    assert chosen.names == ["img_02", "img_01"] and chosen.crops == [(1, 2, 5, 6)] * 2
    assert chosen.psnr("img_01") == [None, 20.0, 24.0, 24.0, None]


def test_pdf_embeds_images_at_native_resolution(sweep, tmp_path):
    pypdf = pytest.importorskip("pypdf", reason="pypdf (the dev extra) reads the PDF")
    write_compare([sweep], tmp_path, images=[0], crop=(3, 5, 10, 7))
    sizes = []
    for page in pypdf.PdfReader(tmp_path / "compare.pdf").pages:
        for image in page.images:
            sizes.append(image.image.size)
    # per column: the whole image and its inset's crop, both unresampled; the measurement
    # (8×8) and its crop in its own pixels: columns 0–3, rows 1–2 of the quarter-size picture
    full, crop = (SIZE, SIZE), (10, 7)
    assert sorted(sizes) == sorted([(8, 8), (4, 2)] + [full, crop] * 4)


def test_refuses_jobs_without_images(tmp_path):
    root = tmp_path / "sweep"
    fake_job(root, "0", "ddnm", PSNR["ddnm"])
    fake_job(root, "1", "rnsf", PSNR["rnsf"], save_images=False)
    with pytest.raises(UserError, match=r"save_images=false.*save_images=true"):
        load_jobs([root])


def test_refuses_jobs_over_different_images(tmp_path, capsys):
    root = tmp_path / "sweep"
    fake_job(root, "0", "ddnm", PSNR["ddnm"])
    fake_job(root, "1", "rnsf", PSNR["rnsf"][:3], n_images=3)
    assert main([str(root), "--figure", "compare", "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err.strip()
    assert "restored different images" in err and "\n" not in err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--crop", "1,2,3"], "is not x,y,w,h"),
        (["--crop", "30,0,8,8"], "leaves image"),
        (["--images", "9"], "is not an image"),
        (["--method", "dps"], "none of the compared jobs"),
        (["--width-in", "0"], "must be positive"),
    ],
)
def test_bad_options_are_one_line_errors(sweep, tmp_path, capsys, argv, message):
    code = main([str(sweep), "--figure", "compare", "--out", str(tmp_path / "r"), *argv])
    assert code == 2
    err = capsys.readouterr().err.strip()
    assert message in err and "\n" not in err


# -- the page in a real browser ----------------------------------------------------------------
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")


@pytest.mark.slow
@pytest.mark.skipif(
    CHROMIUM is None or CHROMEDRIVER is None,
    reason="no system Chromium and chromedriver (apt-get install chromium chromium-driver; "
    ".ci/run installs them)",
)
def test_page_in_headless_chromium(sweep, tmp_path):
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium (the dev extra)")
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    write_compare([sweep], tmp_path)
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM  # with the driver's path: selenium-manager never runs
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1280,1100"):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    try:
        driver.get((tmp_path / "compare.html").as_uri())
        images = driver.find_elements(By.TAG_NAME, "img")
        assert len(images) == 3 * 5 + 5  # the grid, and the main viewer's columns
        assert all(
            driver.execute_script("return arguments[0].complete && arguments[0].naturalWidth", im)
            in (SIZE, SIZE // 4)
            for im in images
        )
        main_view = driver.find_element(By.ID, "main")

        def shown() -> str:
            visible = [
                im.get_attribute("alt")
                for im in main_view.find_elements(By.TAG_NAME, "img")
                if im.is_displayed()
            ]
            assert len(visible) == 1
            return visible[0]

        assert shown().startswith("A†y")  # the first job is shown first
        driver.find_element(By.TAG_NAME, "body").send_keys(Keys.ARROW_RIGHT)
        assert shown().startswith("DDNM")  # flipped with a key
        driver.find_elements(By.CSS_SELECTOR, "#methods button")[3].click()
        assert shown().startswith("RNSF")  # and with a button

        def zooms(i: int) -> set[str]:
            views = driver.find_elements(By.CSS_SELECTOR, f'.view[data-image="{i}"]')
            assert len(views) == 5 + (i == 0)
            return {v.get_attribute("data-zoom") for v in views}

        assert zooms(0) == {"1.000000,0.500000,0.500000"}
        driver.find_element(By.ID, "zoom-in").click()
        driver.find_element(By.ID, "zoom-in").click()
        from selenium.webdriver.common.actions.wheel_input import ScrollOrigin

        webdriver.ActionChains(driver).scroll_from_origin(
            ScrollOrigin.from_element(main_view, -60, -60), 0, -200
        ).perform()
        (state,) = zooms(0)  # every column of image 0 shows the same part
        scale, cx, cy = map(float, state.split(","))
        assert scale > 2.25 and (cx, cy) != (0.5, 0.5)  # the wheel zoomed about the pointer
        # what each img shows, from its layout: the same fraction of the image everywhere
        shown_parts = driver.execute_script(
            """return [...document.querySelectorAll('.view[data-image="0"] img')].map(im =>
                 [-im.offsetLeft / im.offsetWidth, -im.offsetTop / im.offsetHeight,
                  im.parentElement.clientWidth / im.offsetWidth].map(v => v.toFixed(3)).join());"""
        )
        assert len(set(shown_parts)) == 1 and len(shown_parts) == 10
        driver.find_element(By.TAG_NAME, "body").send_keys(Keys.ARROW_LEFT)
        assert shown().startswith("DDNM") and zooms(0) == {state}  # flipping keeps the zoom
        assert zooms(1) == {"1.000000,0.500000,0.500000"}  # another image has its own
        driver.save_screenshot(str(tmp_path / "page.png"))
        # the main viewer is painted: DDNM's pixels, magnified, fill its box
        box = main_view.rect
        painted = np.asarray(Image.open(tmp_path / "page.png").convert("RGB"), dtype=float)[
            int(box["y"]) + 2 : int(box["y"] + box["height"]) - 2,
            int(box["x"]) + 2 : int(box["x"] + box["width"]) - 2,
        ]
        assert painted.size > 0 and painted.std() > 5 and (painted.mean(axis=-1) < 250).all()
    finally:
        driver.quit()
