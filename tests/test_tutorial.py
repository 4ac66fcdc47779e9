"""README's "Add your own method", performed as written: its files are written into an empty
folder outside the checkout, its commands run there, and the report places the new method in
the same table as the built-in ones."""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ROOT

pytestmark = pytest.mark.slow


def tutorial() -> tuple[dict[str, str], list[str]]:
    """The tutorial's files (path: text) and its shell commands, from README.md."""
    text = (ROOT / "README.md").read_text()
    start = text.index("## Add your own method")
    section = text[start : text.index("\n## ", start + 1)]
    files = dict(re.findall(r"^`([\w./]+)`[^\n]*:\n\n```\w+\n(.*?)```", section, re.M | re.S))
    (commands,) = re.findall(r"```bash\n(.*?)```", section, re.S)
    return files, [line for line in commands.splitlines() if line.strip()]


def command(line: str) -> list[str]:
    """`rnsf ...` and `python ...` with this interpreter (the checkout's rnsf, via PYTHONPATH)."""
    args = shlex.split(line)
    if args[0] == "rnsf":
        return [sys.executable, "-m", "rnsf", *args[1:]]
    assert args[0] == "python", line
    return [sys.executable, *args[1:]]


def run(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    path = os.pathsep.join(p for p in (str(ROOT / "src"), os.environ.get("PYTHONPATH")) if p)
    env = {**os.environ, "PYTHONPATH": path, "WANDB_MODE": "offline", "HYDRA_FULL_ERROR": "0"}
    return subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=900)


def test_tutorial_adds_every_kind_of_piece_from_a_folder_of_ones_own(tmp_path):
    files, commands = tutorial()
    assert set(files) == {
        "my_pieces.py",
        "conf/method/projected_ddim.yaml",
        "conf/task/keep_left.yaml",
        "conf/schedule/step.yaml",
        "conf/dataset/my_photos.yaml",
        "conf/model/blur.yaml",
    }
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    (tmp_path / "photos").mkdir()
    for name in ("astronaut_0_0.png", "coffee_0_0.png"):
        shutil.copy(ROOT / "src/rnsf/data/demo" / name, tmp_path / "photos" / name)

    results = [run(command(line), tmp_path) for line in commands]
    for line, result in zip(commands, results, strict=True):
        assert result.returncode == 0, f"{line}\n{result.stderr[-3000:]}"

    one = json.loads((tmp_path / "one_job" / "metrics.json").read_text())
    assert (one["method"], one["task"], one["schedule"], one["model"], one["dataset"]) == (
        "rnsf",
        "keep_left",
        "step",
        "blur",
        "my_photos",
    )
    assert one["n_images"] == 2 and one["schedule_params"]["low"] == 0.5
    assert one["consistency"] < 1e-3  # RNSF ends on a full projection: A x = y on the left half
    jobs = sorted(p for p in (tmp_path / "sweep").iterdir() if (p / "metrics.json").is_file())
    methods = [json.loads((j / "metrics.json").read_text())["method"] for j in jobs]
    assert sorted(methods) == ["ddnm", "projected_ddim", "rnsf"]
    table = (tmp_path / "sweep" / "report" / "table_my_photos.md").read_text()
    rows = [line.split("|")[1].strip() for line in table.splitlines() if line.startswith("|")]
    assert {"projected_ddim", "DDNM", "RNSF (exp)"} <= set(rows), table
    assert "projected_ddim" in results[-1].stdout

    # the method's own check: it refuses noisy measurements before anything is written
    line = "rnsf hydra.searchpath=[file://conf] dataset=my_photos method=projected_ddim"
    refused = run([*command(line), "task.sigma=0.05", "hydra.run.dir=noisy"], tmp_path)
    assert refused.returncode == 2, refused.stderr[-2000:]
    errors = [line for line in refused.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "projected_ddim does not model measurement noise" in errors[0]
    assert not (tmp_path / "noisy").exists()
