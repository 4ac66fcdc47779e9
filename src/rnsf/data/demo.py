"""The built-in demo set: 64×64 crops of package photos held out from the prior's training.

`python -m rnsf.data.demo` regenerates the PNGs in `demo/` from the photos (deterministic).
"""

from __future__ import annotations

from pathlib import Path

from PIL import Image

DEMO_DIR = Path(__file__).with_name("demo")


def write_demo_images(out: Path = DEMO_DIR) -> list[Path]:
    from rnsf.data.photos import make_demo_images

    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, array in make_demo_images().items():
        path = out / f"{name}.png"
        Image.fromarray(array).save(path)
        paths.append(path)
    return paths


if __name__ == "__main__":
    for p in write_demo_images():
        print(p)
