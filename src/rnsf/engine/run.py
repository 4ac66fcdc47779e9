"""One job: compose the pieces from the config, check them, restore, write and summarise."""

from __future__ import annotations

import logging
import os
import time
import warnings
from pathlib import Path

import torch
from hydra.utils import instantiate
from lightning.pytorch.utilities import rank_zero_info, rank_zero_only
from omegaconf import DictConfig, OmegaConf

from rnsf.denoisers.memory import auto_batch_size
from rnsf.engine import distributed, interrupt, lock, resume
from rnsf.engine.checks import (
    builtin_prior_note,
    check_batches,
    check_labels,
    check_method,
    check_sizes,
    job_operator,
)
from rnsf.engine.inflight import Inflight, config_hash
from rnsf.engine.interrupt import signal_name
from rnsf.engine.loggers import finish_wandb
from rnsf.engine.module import RestorationModule
from rnsf.engine.wandb_callbacks import wandb_callbacks
from rnsf.engine.writer import JobWriter
from rnsf.methods.ddnm import RNSF
from rnsf.metrics.suite import MetricSuite
from rnsf.tiling import MaskShift, Tiled
from rnsf.utils.provenance import git_sha
from rnsf.utils.schema import check_config

log = logging.getLogger(__name__)
# lightning 2.6 on torch >= 2.10 warns about its own use of a deprecated torch API on every job
warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\)", category=Warning)


def group_choices() -> dict:
    """The config group options of this job (`method=rnsf`, …) when Hydra runs it."""
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return {}
    return dict(HydraConfig.get().runtime.choices)


def job_overrides() -> list[str]:
    """The command-line overrides of this job (empty outside Hydra)."""
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return []
    return list(HydraConfig.get().overrides.task)


def route_lightning_logs() -> None:
    """Lightning installs its own console handler at import; drop it so that its messages reach
    the console once, through the job's logging set-up (Hydra's console and run.log)."""
    for name in ("lightning", "lightning.pytorch", "lightning.fabric"):
        logger = logging.getLogger(name)
        logger.handlers.clear()
        logger.propagate = True


def run(cfg: DictConfig) -> dict:
    """Run the job of `cfg` and return its metrics.json content. The job locks its folder
    (`rnsf.engine.lock`); a stop signal ends it cleanly (`rnsf.engine.interrupt`)."""
    check_config(cfg)  # types and ranges (rnsf.utils.schema), also when not started by run.py
    out = Path(cfg.paths.output_dir)
    try:
        with lock.job_lock(out), interrupt.stop_on_signals():
            return run_locked(cfg, out)
    except interrupt.JobInterrupted as stop:
        interrupt.exit_job(stop)


def set_float32_math(exact: bool) -> None:
    """TF32 for float32 matmuls and convolutions on a GPU, except on the exact path
    (`model.precision=fp32`), where a GPU computes in full float32 as the CPU does."""
    torch.set_float32_matmul_precision("high")
    precision = "ieee" if exact else "tf32"
    torch.backends.cuda.matmul.fp32_precision = precision
    torch.backends.cudnn.conv.fp32_precision = precision


def use_compile_cache(folder: str | None) -> None:
    """Inductor's and Triton's compiled kernels go to `folder` (`paths.compile_cache_dir`), so
    that the jobs of a sweep, and the nodes that share the folder, reuse them: only the first job
    pays the full compilation. An explicit TORCHINDUCTOR_CACHE_DIR is left as it is."""
    try:  # importing Lightning already sets the variable to torch's default: not the user's
        from torch._inductor.runtime.cache_dir_utils import default_cache_dir

        torch_default = default_cache_dir()
    except ImportError:  # a torch without this helper: only an unset variable is replaced
        torch_default = None
    if folder and os.environ.get("TORCHINDUCTOR_CACHE_DIR", torch_default) == torch_default:
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(Path(folder).expanduser().resolve())


def run_locked(cfg: DictConfig, out: Path) -> dict:
    route_lightning_logs()
    finished = resume.finished_job(out, cfg)  # a folder of another config stops the job here
    if finished is not None:
        if rank_zero_only.rank == 0:
            print(f"{out} holds this job, finished: skipped")
            print_summary(out, finished)
        return finished
    choices = group_choices()
    set_float32_math(exact=cfg.model.get("precision") == "fp32")

    datamodule = instantiate(cfg.dataset)
    task = instantiate(cfg.task)
    method = instantiate(cfg.method)
    denoiser = instantiate(cfg.model.net) if method.nfe > 0 else None
    datamodule.dataset.verify()  # every file decoded, before anything is written
    tiling = make_tiling(cfg, denoiser)
    check_sizes(cfg, datamodule, task, denoiser, method, tiling)
    check_batches(datamodule)
    method_params = check_method(method, task, job_operator(cfg, datamodule, task))
    check_labels(cfg, datamodule, denoiser)
    if denoiser is not None:  # a compiler that cannot run: one line now, or eager under `auto`
        if denoiser.describe(job_device(cfg))["compile"]:  # the probe's kernels: shared cache
            use_compile_cache(cfg.paths.get("compile_cache_dir"))
        denoiser.check_execution(job_device(cfg))
    # metric weights are checked (and LPIPS loaded) here, before any image is restored
    metrics = MetricSuite.from_config(cfg.metrics, mode=cfg.mode, save_images=cfg.save_images)

    done = resume.done_images(
        out, datamodule.dataset.names, getattr(datamodule.dataset, "offset", 0)
    )
    if done:
        rank_zero_info(f"{len(done)} images done by an earlier run are skipped")
    datamodule.skip(done)
    inflight = Inflight(out, config_hash(cfg))
    inflight.check()  # a state of another config stops the job here
    steps_before = inflight.steps()
    if steps_before:
        rank_zero_info(f"{len(steps_before)} batches continue where an earlier run stopped them")

    if rank_zero_only.rank == 0:
        resume.write_config(out, cfg)
    info = run_info(cfg, choices, datamodule, task, method, method_params)
    info["tiling"] = tiling.describe() if tiling is not None else None
    restorer = Tiled(method, tiling) if tiling is not None else method
    module = RestorationModule(denoiser, restorer, task, seed=cfg.seed, metrics=metrics)
    module.inflight = inflight
    writer = JobWriter(
        out,
        info,
        save_images=cfg.save_images,
        grid_images=cfg.grid_images,
        first_index=getattr(datamodule.dataset, "offset", 0),
        inflight=inflight,
    )
    loggers = [instantiate(c) for c in (cfg.get("logger") or {}).values() if c]
    callbacks = [
        interrupt.StopOnSignal(),  # first: a stop comes before the writer's merge
        writer,
        *wandb_callbacks(loggers, OmegaConf.to_container(cfg, resolve=True), out, info),
        *[instantiate(c) for c in (cfg.get("callbacks") or {}).values() if c],
    ]
    trainer = instantiate(cfg.trainer, logger=loggers or False, callbacks=callbacks)
    device = trainer.strategy.root_device
    info["device"] = str(device)
    info["world_size"] = trainer.world_size
    if datamodule.batch_size == "auto":
        # a tiled job's network sees one window per image at a time
        shape = image_shape(cfg, datamodule, task)
        if tiling is not None:
            shape = (shape[0], min(tiling.window, shape[1]), min(tiling.window, shape[2]))
        datamodule.batch_size = auto_batch_size(denoiser, device, shape, grad=method.needs_grad)
    info["batch_size"] = datamodule.batch_size
    info.update(
        denoiser.describe(device)
        if denoiser is not None
        else {"precision": None, "compile": None, "compile_seconds": None}
    )
    if info["compile"]:  # set before the trainer starts any other rank
        use_compile_cache(cfg.paths.get("compile_cache_dir"))
    distributed.check_world_size(len(datamodule.dataset), trainer.world_size)
    start = time.perf_counter()
    try:
        with distributed.job_scope():
            if cfg.mode == "predict":
                trainer.predict(module, datamodule=datamodule, return_predictions=False)
            else:
                trainer.test(module, datamodule=datamodule, verbose=False)
        summary = writer.summary
        summary["wall_seconds"] = time.perf_counter() - start
        for lg in loggers:
            lg.log_metrics({f"summary/{k}": v for k, v in summary.items() if _is_number(v)})
    except interrupt.JobInterrupted as stop:
        finish_wandb(loggers, exit_code=stop.exit_code, interrupted_by=signal_name(stop.signum))
        if trainer.is_global_zero:
            finished, total = len(resume.finished_indices(out)), len(datamodule.dataset)
            saved = inflight.steps()
            progressed = finished > len(done) or any(
                step > steps_before.get(first, 0) for first, step in saved.items()
            )
            if not progressed and interrupt.at_time_limit(stop):
                p = module.progress
                line = interrupt.no_progress_line(
                    out, finished, total, datamodule.batch_size, p.total, p.steps, p.seconds
                )
                print(line, flush=True)
                raise interrupt.NoProgress(line) from None
            print(interrupt.resume_line(stop, out, finished, total, job_overrides()), flush=True)
        raise
    except BaseException:
        finish_wandb(loggers, exit_code=1)  # the W&B run is closed, marked failed
        raise
    finish_wandb(loggers)
    if trainer.is_global_zero:
        print_summary(out, summary)
    return summary


def _is_number(value) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def job_device(cfg) -> torch.device:
    """The device type the trainer will pick (`trainer.accelerator`), before it exists."""
    accelerator = str(cfg.trainer.get("accelerator", "auto"))
    gpu = accelerator in ("gpu", "cuda") or (accelerator == "auto" and torch.cuda.is_available())
    return torch.device("cuda" if gpu else "cpu")


def image_shape(cfg, datamodule, task) -> tuple[int, int, int]:
    """(C, H, W) of the largest image the network restores (in predict mode: of x, not of y;
    with `dataset.resize=none` the images may differ in size)."""
    height, width = max(datamodule.dataset.sizes(), key=lambda size: size[0] * size[1])
    if cfg.mode == "predict":
        y = torch.zeros(1, 3, height, width)
        return tuple(task.operator.x_shape(task.operator.measurement_from_image(y).shape)[1:])
    return 3, height, width


def make_tiling(cfg, denoiser) -> MaskShift | None:
    """The `tiling` group's layer with its defaults filled in from the model (None: untiled)."""
    if not (cfg.get("tiling") or {}).get("_target_"):
        return None
    return instantiate(cfg.tiling).resolve(denoiser)


def run_info(cfg, choices, datamodule, task, method, method_params: dict) -> dict:
    schedule = None
    if isinstance(method, RNSF):
        schedule = choices.get("schedule") or method.schedule.name
    return {
        "method": method.name,
        "task": task.name,
        "sigma": task.sigma,
        "schedule": schedule,
        "schedule_params": OmegaConf.to_container(cfg.schedule) if schedule else None,
        "model": cfg.model.name,
        **datamodule.describe(),
        "mode": cfg.mode,
        "nfe": method.nfe,
        "steps": method.steps,
        "eta": method_params.get("eta"),
        "method_params": method_params,  # as the method uses them on this task (describe)
        "seed": cfg.seed,
        "git_sha": git_sha(),
        "overrides": job_overrides(),
        "output_dir": str(Path(cfg.paths.output_dir)),
    }


def print_summary(out: Path, s: dict) -> None:
    parts = [f"{s['method']} | {s['task']} | {s['dataset']} | {s['n_images']} images"]
    if s.get("psnr") is not None:
        parts.append(f"PSNR {s['psnr']:.2f} dB")
        parts.append(f"SSIM {s['ssim']:.4f}")
    for key, label, fmt in (
        ("lpips", "LPIPS", ".4f"),
        ("fid", "FID", ".2f"),
        ("kid", "KID", ".4f"),
    ):
        if s.get(key) is not None:
            parts.append(f"{label} {s[key]:{fmt}}")
    if s.get("consistency") is not None:
        parts.append(f"consistency {s['consistency']:.2e}")
    if s.get("seconds_per_image") is not None:
        parts.append(f"{s['seconds_per_image']:.2f} s/image")
    print(f"results in {out}")
    print(" | ".join(parts))
    note = builtin_prior_note(s)
    if note:
        print(note)
