"""Experiment loggers: W&B that never blocks a job, next to Lightning's CSV logger."""

from __future__ import annotations

import netrc
import os
from pathlib import Path


def wandb_logged_in() -> bool:
    """True when an API key is available (WANDB_API_KEY or a ~/.netrc entry for W&B)."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    try:
        hosts = netrc.netrc().hosts
    except (FileNotFoundError, netrc.NetrcParseError, OSError):
        return False
    return any("wandb" in host for host in hosts)


def wandb_logger(
    project: str = "rnsf",
    save_dir: str = ".",
    name: str | None = None,
    group: str | None = None,
    tags: list[str] | None = None,
    mode: str = "auto",
    entity: str | None = None,
):
    """A Lightning WandbLogger. `mode`: auto (online when logged in, else offline), online,
    offline or disabled. WANDB_MODE in the environment wins, as W&B itself does."""
    from lightning.pytorch.loggers import WandbLogger

    mode = os.environ.get("WANDB_MODE", mode)
    if mode == "auto":
        mode = "online" if wandb_logged_in() else "offline"
    Path(save_dir).mkdir(parents=True, exist_ok=True)
    return WandbLogger(
        project=project,
        save_dir=save_dir,
        name=name,
        group=group,
        tags=[t for t in (tags or []) if t],
        entity=entity,
        offline=mode == "offline",
        mode=mode if mode in ("online", "offline", "disabled") else None,
    )
