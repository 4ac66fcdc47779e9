"""Resuming a job in its own folder: per-image records, finished jobs and the config check.

Every restored image leaves `rows/<index>.json`, its row of `per_image.csv`, written atomically
after its PNGs; a rerun in the same folder restores only the images without a record, and the end
of the job merges all records into `per_image.csv` and `metrics.json`. `metrics.json` is the last
file a job writes: a folder that holds it, with as many rows as it counts, is a finished job, and
a rerun with the same config skips it. A folder made by another config is never mixed with a new
one: the rerun stops with one line naming the first key that differs. The batch a stopped job had
in flight is kept beside the records, at its last sampler step, and checked against the config
the same way (`rnsf.engine.inflight`).
"""

from __future__ import annotations

import json
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from rnsf.engine import outputs
from rnsf.utils.errors import UserError

RECORDS_DIR = "rows"
CONFIG_FILE = "config.yaml"

# Keys that say where and how a job runs or logs, not what it computes: they may change
# between an interrupted run and its rerun (e.g. resume a one-GPU job on four GPUs).
RUNTIME_KEYS = (
    "paths",
    "logger",
    "callbacks",
    "trainer.accelerator",
    "trainer.devices",
    "trainer.num_nodes",
    "trainer.strategy",
    "trainer.use_distributed_sampler",
    "trainer.enable_progress_bar",
    "trainer.default_root_dir",
    "dataset.num_workers",
)


# -- per-image records --------------------------------------------------------------------
def record_path(output_dir: Path, index: int) -> Path:
    return Path(output_dir) / RECORDS_DIR / f"{index}.json"


def write_record(output_dir: Path, row: dict) -> None:
    """Persist one finished image's row (atomically: it exists whole or not at all)."""
    outputs.write_json(record_path(output_dir, row["index"]), row)


def read_records(output_dir: Path) -> list[dict]:
    """Every recorded row of the job in `output_dir`, by image index."""
    folder = Path(output_dir) / RECORDS_DIR
    rows = [json.loads(p.read_text()) for p in folder.glob("*.json")] if folder.is_dir() else []
    return sorted(rows, key=lambda row: row["index"])


def finished_indices(output_dir: Path) -> set[int]:
    """Indices of the images of the job in `output_dir` that are done."""
    folder = Path(output_dir) / RECORDS_DIR
    if not folder.is_dir():
        return set()
    return {int(p.stem) for p in folder.glob("*.json") if p.stem.isdigit()}


def done_images(output_dir: Path, names: list[str], offset: int = 0) -> set[int]:
    """Positions in the dataset (`names`, whose first image has index `offset`) of the images
    that an earlier run in `output_dir` restored. Every record must belong to the image that now
    has its index."""
    done = set()
    for row in read_records(output_dir):
        index, recorded = row["index"], row["name"]
        position = index - offset
        if not 0 <= position < len(names):
            continue
        if recorded != names[position]:
            raise UserError(
                f"{record_path(output_dir, index)} is for image {recorded}, but image {index} is "
                f"now {names[position]}: the dataset changed since that run; pass a new "
                "hydra.run.dir"
            )
        done.add(position)
    return done


# -- whole jobs ---------------------------------------------------------------------------
def saved_config(cfg: DictConfig) -> dict:
    """`cfg` as `config.yaml` holds it: resolved, and read back from YAML."""
    return _load_yaml(OmegaConf.to_yaml(cfg, resolve=True))


def write_config(output_dir: Path, cfg: DictConfig) -> None:
    outputs.atomic_write_text(Path(output_dir) / CONFIG_FILE, OmegaConf.to_yaml(cfg, resolve=True))


def finished_job(output_dir: Path, cfg: DictConfig) -> dict | None:
    """The metrics of the finished job in `output_dir` if it ran `cfg`; None if there is none
    (an empty folder, or a job that was interrupted). A folder made by a different config is a
    UserError, so that results of two configs never mix."""
    output_dir = Path(output_dir)
    saved = output_dir / CONFIG_FILE
    if not saved.is_file():
        return None
    difference = config_difference(_load_yaml(saved.read_text()), saved_config(cfg))
    if difference is not None:
        raise UserError(
            f"{output_dir} holds a job of another config ({difference}); rerun with that "
            "config to resume it, or pass a new hydra.run.dir (hydra.sweep.dir for a sweep)"
        )
    metrics = output_dir / "metrics.json"
    if not metrics.is_file():
        return None
    summary = json.loads(metrics.read_text())
    return summary if summary.get("n_images") == len(finished_indices(output_dir)) else None


def config_difference(old: dict, new: dict) -> str | None:
    """The first key whose value differs between two saved configs, as `key: old -> new`,
    ignoring `RUNTIME_KEYS` and each config's own output folder; None when they agree."""
    flat_old, flat_new = comparable(old), comparable(new)
    for key in sorted(flat_old.keys() | flat_new.keys()):
        a, b = flat_old.get(key, "<unset>"), flat_new.get(key, "<unset>")
        if a != b:
            return f"{key}: {a} there, {b} now"
    return None


def _load_yaml(text: str) -> dict:
    return OmegaConf.to_container(OmegaConf.create(text), resolve=False)


def comparable(config: dict) -> dict:
    """A saved config as flat `key: value` pairs, less `RUNTIME_KEYS` and its own folder."""
    own_folder = str((config.get("paths") or {}).get("output_dir") or "\0")
    flat = {}
    for key, value in _flatten(config):
        if any(key == k or key.startswith(f"{k}.") for k in RUNTIME_KEYS):
            continue
        if isinstance(value, str):
            value = value.replace(own_folder, "<output_dir>")
        flat[key] = value
    return flat


def _flatten(node, prefix: str = ""):
    if isinstance(node, dict) and node:
        for key, value in node.items():
            yield from _flatten(value, f"{prefix}{key}.")
    else:
        yield prefix[:-1], node
