"""rnsf as an installed library: the wheel built from this checkout, installed (not editable)
into a fresh virtual environment outside the checkout, runs a job, a multi-process job and a
sweep from an empty folder with its `rnsf` command, configs and all.

The environment reuses this interpreter's installed dependencies (a .pth line to its
site-packages, so torch is not downloaded again); rnsf itself comes only from the wheel.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

from conftest import ROOT

pytestmark = pytest.mark.slow

#: what the wheel is built from: the tracked layout of the repository, without local state
COPIED = ["pyproject.toml", "README.md", "run.py", "conf", "src"]


def sh(args: list, cwd: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    result = subprocess.run(
        [str(a) for a in args], cwd=cwd, env=env, capture_output=True, text=True, timeout=900
    )
    assert result.returncode == 0, f"{args}\n{result.stdout[-2000:]}\n{result.stderr[-3000:]}"
    return result


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """The bin/ folder of a fresh venv holding the wheel of this checkout."""
    base = tmp_path_factory.mktemp("install")
    tree = base / "tree"
    tree.mkdir()
    for name in COPIED:
        source = ROOT / name
        if source.is_dir():
            shutil.copytree(
                source,
                tree / name,
                symlinks=True,
                ignore=shutil.ignore_patterns("__pycache__", "*.egg-info", "local"),
            )
        else:
            shutil.copy(source, tree / name)
    wheels = base / "wheels"
    pip = [sys.executable, "-m", "pip"]
    build = ["wheel", "--no-deps", "--no-build-isolation", "-q", "-w", wheels, tree]
    sh([*pip, *build], base, clean_env())
    (wheel,) = wheels.glob("rnsf-*.whl")
    venv = base / "venv"
    sh([sys.executable, "-m", "venv", "--without-pip", venv], base)
    python = venv / "bin" / "python"
    site = sh([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], base)
    install = ["install", "--no-deps", "--no-index", "--ignore-installed", "-q", wheel]
    sh([*pip, "--python", python, *install], base, clean_env())
    # after the install: pip would take the parent's (editable) rnsf for the one asked for
    parent = sysconfig.get_paths()["purelib"]
    Path(site.stdout.strip(), "dependencies.pth").write_text(parent + "\n")
    return venv / "bin"


def clean_env() -> dict:
    """The environment without PYTHONPATH, so that nothing can import the checkout's rnsf."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    return {**env, "WANDB_MODE": "offline", "HYDRA_FULL_ERROR": "0", "OMP_NUM_THREADS": "1"}


def test_wheel_runs_jobs_and_a_sweep_from_an_empty_folder(installed, tmp_path):
    env = clean_env()
    where = sh([installed / "python", "-c", "import rnsf; print(rnsf.__file__)"], tmp_path, env)
    assert where.stdout.startswith(str(installed.parent)), where.stdout  # from the wheel
    rnsf = installed / "rnsf"
    # one job on two processes: the second rank is started as `python -m rnsf` of the venv
    sh([rnsf, "debug=tiny", "trainer=ddp_cpu", "hydra.run.dir=job"], tmp_path, env)
    metrics = json.loads((tmp_path / "job" / "metrics.json").read_text())
    assert metrics["n_images"] == 2 and metrics["world_size"] == 2 and metrics["psnr"] > 15
    sweep = sh(
        [rnsf, "-m", "debug=tiny", "method=pinv,ddnm", "hydra.sweep.dir=sweep"], tmp_path, env
    )
    jobs = sorted(p for p in (tmp_path / "sweep").iterdir() if (p / "metrics.json").is_file())
    assert [json.loads((j / "metrics.json").read_text())["method"] for j in jobs] == [
        "pinv",
        "ddnm",
    ]
    assert sweep.stdout.count("results in") == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["job", "sweep"]  # nothing else
