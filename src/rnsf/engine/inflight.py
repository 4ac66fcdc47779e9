"""The batch in flight when a job stopped: `inflight/<first index>.pt` in the job folder.

A stop signal ends the sampler of a resumable method (`rnsf.methods.state`) at a step boundary;
the job then saves that batch there, atomically: the format `VERSION`, the hash of the job's
config (`config_hash`: the keys `rnsf.engine.resume` compares), the images' indices, the steps
done, the seconds spent, the `SamplerState` and every image's generator state. The rerun restores
the batch's measurement as before, sets the generators back and continues from that step: its
images are the bytes of a run that never stopped. The file goes once its batch's records are
written, and the folder when the job is finished. A state written by another config, or in
another format, stops the rerun with one line before anything is written; one for a batch that
the rerun forms differently (another batch size) or runs on another kind of device is left
unused, and that batch restarts.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from pathlib import Path

import torch
from omegaconf import DictConfig

from rnsf.engine import resume
from rnsf.methods.state import SamplerState
from rnsf.utils.errors import UserError

log = logging.getLogger(__name__)

FOLDER = "inflight"
VERSION = 1


def config_hash(cfg: DictConfig) -> str:
    """A short hash of what the job computes: its config less `resume.RUNTIME_KEYS` and its own
    folder, as `resume.config_difference` compares configs."""
    saved = resume.saved_config(cfg)
    text = json.dumps(resume.comparable(saved), sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


class Inflight:
    """The in-flight states of the job in `output_dir`, whose config hashes to `config`."""

    def __init__(self, output_dir: str | Path, config: str) -> None:
        self.folder = Path(output_dir) / FOLDER
        self.config = config

    def path(self, first_index: int) -> Path:
        return self.folder / f"{first_index}.pt"

    def save(
        self, indices: list[int], state: SamplerState, generators, seconds: float, steps: int
    ) -> Path:
        """Write the batch of `indices` at `state.step` of `steps` (write, then rename)."""
        path = self.path(indices[0])
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp")
        torch.save(
            {
                "version": VERSION,
                "config": self.config,
                "indices": [int(i) for i in indices],
                "steps": int(steps),
                "seconds": float(seconds),
                "state": state.state_dict(),
                "generators": [g.get_state() for g in generators],
                "device": generators[0].device.type,  # a generator's state is per kind
            },
            tmp,
        )
        os.replace(tmp, path)
        return path

    def load(self, indices: list[int], device) -> dict | None:
        """The saved batch of exactly these `indices` (its `state` a `SamplerState` on
        `device`), or None."""
        path = self.path(indices[0])
        if not path.is_file():
            return None
        saved = self._read(path, mmap=False)
        if saved["indices"] != [int(i) for i in indices]:
            log.warning(
                f"{path} holds images {saved['indices']}, this batch is {list(indices)}: the "
                "batch restarts from its first step"
            )
            return None
        if saved["device"] != torch.device(device).type:
            log.warning(
                f"{path} was saved on {saved['device']}, this job runs on "
                f"{torch.device(device).type}: the batch restarts from its first step"
            )
            return None
        state = SamplerState()
        state.load_state_dict(saved["state"], device)
        return {**saved, "state": state}

    def steps(self) -> dict[int, int]:
        """Steps done by every saved batch, by its first index (headers only: memory-mapped)."""
        if not self.folder.is_dir():
            return {}
        return {int(p.stem): self._read(p)["state"]["step"] for p in self._files()}

    def check(self) -> None:
        """Refuse, in one line, a folder holding states of another config or format."""
        for path in self._files():
            self._read(path)

    def discard(self, first_index: int) -> None:
        self.path(first_index).unlink(missing_ok=True)

    def clear(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)

    def _files(self) -> list[Path]:
        return sorted(self.folder.glob("*.pt")) if self.folder.is_dir() else []

    def _read(self, path: Path, mmap: bool = True) -> dict:
        saved = torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
        if saved.get("version") != VERSION:
            raise UserError(
                f"{path} is a sampler state of format {saved.get('version')}, this rnsf reads "
                f"format {VERSION}: delete it (its batch restarts) or resume with the rnsf "
                "that wrote it"
            )
        if saved.get("config") != self.config:
            raise UserError(
                f"{path} is the sampler state of another config (hash {saved.get('config')}, "
                f"this job's is {self.config}): delete it (its batch restarts) or pass a new "
                "hydra.run.dir"
            )
        return saved
