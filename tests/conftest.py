from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")

ROOT = Path(__file__).resolve().parents[1]

#: reduced-width ADM and DDPM networks: the architectures' code paths in milliseconds
SMALL_ADM = dict(
    image_size=32,
    model_channels=32,
    channel_mult=(1, 2),
    num_res_blocks=1,
    attention_resolutions=(16,),
    num_head_channels=16,
)
SMALL_DDPM = dict(resolution=32, ch=32, ch_mult=(1, 2), num_res_blocks=1, attn_resolutions=(16,))


def run_py(args: list[str], cwd: Path = ROOT, **env: str) -> subprocess.CompletedProcess:
    """`python run.py ARGS` in a subprocess: W&B offline, one-line user errors, `env` on top."""
    env = {
        **os.environ,
        "WANDB_MODE": "offline",
        "WANDB_SILENT": "true",
        "HYDRA_FULL_ERROR": "0",
        **env,
    }
    return subprocess.run(
        [sys.executable, str(ROOT / "run.py"), *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


@pytest.fixture(scope="session")
def demo_images() -> torch.Tensor:
    """The 16 demo crops, (16, 3, 64, 64) in [-1, 1]."""
    from rnsf.data.folder import ImageFolder

    ds = ImageFolder(ROOT / "src/rnsf/data/demo", image_size=None, resize="none")
    return torch.stack([ds[i]["image"] for i in range(len(ds))])


@pytest.fixture(scope="session")
def small_set(demo_images) -> torch.Tensor:
    """Four 32x32 images (downsampled demo crops) for analytic-prior tests."""
    return torch.nn.functional.avg_pool2d(demo_images[[0, 5, 9, 13]], 2)
