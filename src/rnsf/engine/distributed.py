"""One job over several processes: Lightning DDP started from inside a Hydra job.

Lightning starts the other ranks of `strategy="ddp"` by running the script again with the first
process's command line and, under Hydra, the run config's `hydra.run.dir`. That is wrong for a
job of a sweep (the command line holds `-m` and the whole sweep, and the folder is not the job's)
and for a job that the submitit launcher started (the command line is submitit's).
`JobDDPStrategy` (`rnsf.engine.launcher`, the one module on a private Lightning API) starts each
rank as `python -m rnsf <this job's overrides>` in this job's folder instead: the same config,
the same output folder, no Hydra files or log of its own; it works from an installed package as
from a checkout. On SLURM (one task per GPU) the ranks are SLURM's tasks and nothing is started.

Images are shared out by the data module (an unrepeated sampler: no padding duplicates); every
rank writes its own images and per-image records, and rank 0 merges them at the end.
"""

from __future__ import annotations

import os
import sys
import warnings
from collections.abc import Iterator
from contextlib import contextmanager

import torch

from rnsf.utils.errors import UserError

# Set by the launcher in the first process; cleared after the job so that the next job of a
# sweep that runs in the same process starts its own ranks again.
LAUNCH_ENV = (
    "MASTER_ADDR",
    "MASTER_PORT",
    "NODE_RANK",
    "LOCAL_RANK",
    "WORLD_SIZE",
    "OMP_NUM_THREADS",
)


def worker_command() -> tuple[list[str], str]:
    """The command line (and working directory) that reruns the current Hydra job as one more
    rank: its config name and overrides, its output folder, no `.hydra/` and no log file."""
    from hydra.core.hydra_config import HydraConfig

    hc = HydraConfig.get()
    command = [
        sys.executable,
        "-m",
        "rnsf",
        *config_sources(hc),
        "--config-name",
        hc.job.config_name,
        *hc.overrides.task,
        *[o for o in hc.overrides.hydra if o.startswith("hydra.searchpath=")],
        f"hydra.run.dir={quote(hc.runtime.output_dir)}",
        f"hydra.job.name={quote(hc.job.name)}",
        "hydra.output_subdir=null",
        "hydra/job_logging=stdout",
    ]
    return command, hc.runtime.cwd


def config_sources(hc) -> list[str]:
    """`--config-dir` options for the config folders the job's command line added."""
    options = []
    for source in hc.runtime.config_sources:
        if source.provider == "command-line" and source.schema == "file":
            options += ["--config-dir", source.path]
    return options


def quote(value: str) -> str:
    """`value` as a quoted Hydra override value (commas and `=` in folder names stay literal)."""
    return "'" + str(value).replace("'", "\\'") + "'"


def check_world_size(n_images: int, world_size: int) -> None:
    """Every rank needs at least one image (the unrepeated sampler pads nothing)."""
    if world_size > n_images:
        raise UserError(
            f"{n_images} image(s) for {world_size} processes; every process needs one: "
            f"set trainer.devices={n_images} or fewer"
        )


@contextmanager
def job_scope() -> Iterator[None]:
    """Run a job that may start DDP ranks; afterwards destroy its process group (an open gloo
    group can abort the process at exit) and restore the launch variables and thread count."""
    saved = {key: os.environ.get(key) for key in LAUNCH_ENV}
    threads = torch.get_num_threads()
    try:
        with warnings.catch_warnings():
            # the per-batch means logged by each rank are its own; the job's merged results
            # are in metrics.json, so Lightning's advice to reduce them across ranks is moot
            warnings.filterwarnings("ignore", message=r".*sync_dist=True.*")
            yield
    finally:
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        torch.set_num_threads(threads)
