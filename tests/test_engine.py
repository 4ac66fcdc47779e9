"""RestorationModule and its JobWriter inside Lightning's test loop, for every method (DPS needs
autograd there)."""

from __future__ import annotations

import json
import os

import lightning as L
import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from rnsf.data import RestorationDataModule
from rnsf.denoisers import FiniteSetPrior
from rnsf.engine.module import RestorationModule
from rnsf.engine.writer import JobWriter
from rnsf.methods import DDNM, DDRM, DPS, RNSF, SSD, Pinv
from rnsf.operators import BicubicSR, Task
from rnsf.report import job_intervals
from rnsf.schedules import ExpSchedule


@pytest.fixture(scope="module")
def folder(tmp_path_factory, small_set):
    root = tmp_path_factory.mktemp("imgs")
    for i, img in enumerate(small_set[:3]):
        array = ((img.permute(1, 2, 0).numpy() + 1) * 127.5).round().astype(np.uint8)
        Image.fromarray(array).save(root / f"img{i}.png")
    return root


@pytest.mark.parametrize(
    "method",
    [
        Pinv(),
        DDNM(steps=5),
        RNSF(steps=5, schedule=ExpSchedule()),
        DDRM(steps=5),
        SSD(steps=30),
        DPS(),
    ],
    ids=lambda m: m.name,
)
def test_test_loop_for_every_method(method, folder, tmp_path):
    data = RestorationDataModule(root=str(folder), image_size=None, resize="none", batch_size=2)
    images = next(iter(data.test_dataloader()))["image"]
    prior = FiniteSetPrior(images)
    module = RestorationModule(prior, method, Task("sr4", BicubicSR(4)))
    writer = JobWriter(tmp_path, run_info={"method": method.name})
    trainer = L.Trainer(
        callbacks=[writer],
        accelerator="cpu",
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        inference_mode=False,
    )
    trainer.test(module, datamodule=data, verbose=False)
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["n_images"] == 3 and metrics["method"] == method.name
    assert (tmp_path / "images/restored/img2.png").is_file()
    assert metrics["psnr"] > (15 if method.name == "pinv" else 25)
    # each mean's 95 % bootstrap interval, the same as the report's from per_image.csv
    lo, hi = metrics["psnr_lo"], metrics["psnr_hi"]
    assert lo <= metrics["psnr"] <= hi and lo < hi
    again = job_intervals(pd.DataFrame([{**metrics, "output_dir": str(tmp_path)}])).iloc[0]
    assert (again["psnr_lo"], again["psnr_hi"]) == pytest.approx((lo, hi), rel=1e-5)


def test_exact_path_turns_tf32_off_on_a_gpu():
    """model.precision=fp32 computes float32 matmuls and convolutions in IEEE float32 on a GPU
    too; every other precision lets them use TF32 (the flags only act on CUDA devices)."""
    from rnsf.engine.run import set_float32_math

    try:
        set_float32_math(exact=True)
        assert torch.backends.cuda.matmul.fp32_precision == "ieee"
        assert torch.backends.cudnn.conv.fp32_precision == "ieee"
        set_float32_math(exact=False)
        assert torch.backends.cuda.matmul.fp32_precision == "tf32"
        assert torch.backends.cudnn.conv.fp32_precision == "tf32"
    finally:
        set_float32_math(exact=False)


def test_compiled_kernels_go_to_the_shared_cache_unless_the_user_chose_one(monkeypatch, tmp_path):
    """paths.compile_cache_dir replaces torch's default (which importing Lightning already put
    in the environment), never a TORCHINDUCTOR_CACHE_DIR of the user's; null keeps the default."""
    from torch._inductor.runtime.cache_dir_utils import default_cache_dir

    from rnsf.engine.run import use_compile_cache

    for before in (None, default_cache_dir()):
        if before is None:
            monkeypatch.delenv("TORCHINDUCTOR_CACHE_DIR", raising=False)
        else:
            monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", before)
        use_compile_cache(str(tmp_path / "cache"))
        assert os.environ["TORCHINDUCTOR_CACHE_DIR"] == str(tmp_path / "cache")
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "mine"))
    use_compile_cache(str(tmp_path / "cache"))
    assert os.environ["TORCHINDUCTOR_CACHE_DIR"] == str(tmp_path / "mine")
    monkeypatch.delenv("TORCHINDUCTOR_CACHE_DIR")
    use_compile_cache(None)
    assert "TORCHINDUCTOR_CACHE_DIR" not in os.environ
