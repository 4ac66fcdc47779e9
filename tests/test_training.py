"""The training command of the built-in prior runs, exports and the export loads."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

from rnsf.denoisers import TinyUNet, load_tiny_prior
from rnsf.denoisers.builtin import WEIGHTS
from rnsf.utils.errors import UserError

from conftest import ROOT


@pytest.mark.slow
def test_train_command_exports_loadable_weights(tmp_path):
    args = [
        sys.executable,
        str(ROOT / "train.py"),
        "trainer.max_steps=3",
        "batch_size=2",
        "data.crop_size=16",
        "model.channels=[8,16]",
        "model.num_res_blocks=1",
        f"hydra.run.dir={tmp_path}",
        "+trainer.enable_progress_bar=false",
    ]
    env = {**os.environ, "WANDB_MODE": "offline"}
    result = subprocess.run(args, capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    model = load_tiny_prior(tmp_path / "tiny_prior.pt")
    assert model.training_steps == 3
    assert model.eps(torch.zeros(1, 3, 16, 16), 10).shape == (1, 3, 16, 16)
    assert not any(p.requires_grad for p in model.parameters())


def test_shipped_prior_loads_and_is_small():
    assert WEIGHTS.stat().st_size <= 20 * 1024**2
    model = load_tiny_prior()
    assert isinstance(model, TinyUNet) and model.training_steps > 1000
    assert sum(p.numel() for p in model.parameters()) > 1_000_000


def test_missing_weights_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="weights not found"):
        load_tiny_prior(tmp_path / "nope.pt")
