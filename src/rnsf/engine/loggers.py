"""Experiment loggers: W&B that never blocks a job, next to Lightning's CSV logger.

Nothing here imports `wandb` at module level: `logger=csv` and `logger=none` run without it.
"""

from __future__ import annotations

import netrc
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from lightning.pytorch.loggers import Logger, WandbLogger

from rnsf.utils.errors import UserError

MODES = ("auto", "online", "offline", "disabled")
WANDB_MODE_ALIASES = {"dryrun": "offline", "run": "online"}


class JobWandbLogger(WandbLogger):
    """Lightning's WandbLogger, carrying what `WandbJob` records of the sampling:
    x̂₀ frames of the first `log_frames` images, every `frame_every` network evaluations
    (None: about ten per image)."""

    def __init__(self, *, log_frames: int = 4, frame_every: int | None = None, **kwargs: Any):
        super().__init__(**kwargs)
        self.log_frames, self.frame_every = log_frames, frame_every


def wandb_logged_in() -> bool:
    """True when an API key is available (WANDB_API_KEY or a ~/.netrc entry for W&B)."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    try:
        hosts = netrc.netrc().hosts
    except (FileNotFoundError, netrc.NetrcParseError, OSError):
        return False
    return any("wandb" in host for host in hosts)


def run_name(override_dirname: str, choices: Mapping[str, Any]) -> str:
    """A job's W&B run name: its overrides (`schedule=linear,task=sr8`), else `<method>_<task>`."""
    return override_dirname or f"{choices.get('method')}_{choices.get('task')}"


def hydra_identity() -> tuple[str | None, str | None]:
    """(name, group) of this job from the Hydra runtime: the group is the sweep folder's name
    in a multirun and None for a single run; (None, None) outside Hydra."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    if not HydraConfig.initialized():
        return None, None
    hydra = HydraConfig.get()
    name = run_name(hydra.job.override_dirname, hydra.runtime.choices)
    group = Path(hydra.sweep.dir).name if hydra.mode == RunMode.MULTIRUN else None
    return name, group


def resolve_mode(mode: str) -> str:
    """`auto` → online when logged in, else offline. WANDB_MODE in the environment wins, as W&B
    itself does."""
    if mode not in MODES:
        raise UserError(f"logger.wandb.mode={mode} is unknown; choose one of {', '.join(MODES)}")
    mode = os.environ.get("WANDB_MODE") or mode
    mode = WANDB_MODE_ALIASES.get(mode, mode)
    if mode == "auto":
        mode = "online" if wandb_logged_in() else "offline"
    return mode


def wandb_logger(
    project: str = "rnsf",
    save_dir: str = ".",
    name: str | None = None,
    group: str | None = None,
    tags: Sequence[str] | None = None,
    mode: str = "auto",
    entity: str | None = None,
    log_frames: int = 4,
    frame_every: int | None = None,
) -> JobWandbLogger:
    """The job's W&B logger. `name`/`group` None: from the Hydra runtime (`hydra_identity`);
    `tags` are added to the job's own (method, task, schedule, model), which `WandbJob` sets.
    `mode`: auto (online when logged in, else offline), online, offline or disabled."""
    if isinstance(log_frames, bool) or not isinstance(log_frames, int) or log_frames < 0:
        raise UserError(f"logger.wandb.log_frames={log_frames} must be an integer >= 0 (0: none)")
    if frame_every is not None and (
        isinstance(frame_every, bool) or not isinstance(frame_every, int) or frame_every < 1
    ):
        raise UserError(
            f"logger.wandb.frame_every={frame_every} must be an integer >= 1, or null for "
            "about ten frames per image"
        )
    mode = resolve_mode(mode)
    auto_name, auto_group = hydra_identity()
    Path(save_dir).mkdir(parents=True, exist_ok=True)
    return JobWandbLogger(
        log_frames=log_frames,
        frame_every=frame_every,
        project=project,
        save_dir=save_dir,
        name=name or auto_name,
        group=group or auto_group,
        tags=[str(t) for t in (tags or []) if t],
        entity=entity,
        mode=mode,  # passed to wandb.init (Lightning's `offline` would set WANDB_MODE globally)
    )


def finish_wandb(
    loggers: Sequence[Logger], exit_code: int = 0, interrupted_by: str | None = None
) -> None:
    """Close the W&B run of this job; `exit_code` 1 marks it failed. A job stopped by a signal
    passes its name (`SIGINT`): the run gets the summary key `interrupted` and the tag
    `interrupted`, and its exit code (130, 143). Imports wandb only when one of `loggers` writes
    to W&B."""
    if any(isinstance(lg, WandbLogger) for lg in loggers):
        import wandb

        if wandb.run is not None:
            if interrupted_by is not None:
                wandb.run.summary["interrupted"] = interrupted_by
                wandb.run.tags = (*(wandb.run.tags or ()), "interrupted")
            wandb.finish(exit_code=exit_code)
