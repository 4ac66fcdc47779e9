"""Flat, readable job folder names for sweeps: `<n>_<overrides>` without nested folders.

Hydra's `override_dirname` joins a job's overrides as they were typed, so `dataset.root=/data/x`
puts slashes, hence sub-folders, into the name. `job_dirname` (the `rnsf.job_dirname` resolver
of `conf/hydra/default.yaml`) keeps Hydra's order, separators and `exclude_keys`, but a value
holding a path keeps only its last component (`dataset.root=x`), any other `/` becomes `_`, and
a name longer than 200 characters is cut and ends with a hash of the whole. The full overrides
are still in the job's `.hydra/overrides.yaml` and `metrics.json` (`overrides`).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

from omegaconf import OmegaConf

RESOLVER = "rnsf.job_dirname"
MAX_LENGTH = 200


def flat_value(value: str) -> str:
    """A path's last component; other values with `/` get `_` instead."""
    if "/" not in value:
        return value
    quote = value[0] if value[:1] in ("'", '"') and value[-1:] == value[0] else ""
    inner = value[1:-1] if quote else value
    if not any(c in inner for c in "[]{},"):  # one path
        last = inner.rstrip("/").rsplit("/", 1)[-1] or "root"
        return f"{quote}{last}{quote}"
    return value.replace("/", "_")


def job_dirname(
    overrides: Iterable[str],
    exclude_keys: Iterable[str] = (),
    kv_sep: str = "=",
    item_sep: str = ",",
) -> str:
    """The folder name of a sweep job with these overrides (see the module docstring)."""
    excluded = set(exclude_keys or ())
    items = []
    for line in overrides:
        key, sep, value = str(line).partition("=")
        if key.lstrip("+~") in excluded or key in excluded:
            continue
        items.append(f"{key}{kv_sep if sep else ''}{flat_value(value)}")
    name = item_sep.join(sorted(items))
    if len(name) > MAX_LENGTH:
        digest = hashlib.sha1(name.encode()).hexdigest()[:8]
        name = f"{name[: MAX_LENGTH - 9]}_{digest}"
    return name


def register_resolver() -> None:
    """Make `${rnsf.job_dirname:...}` available to Hydra's config (idempotent)."""
    if not OmegaConf.has_resolver(RESOLVER):
        OmegaConf.register_new_resolver(
            RESOLVER,
            lambda overrides, exclude=(), kv_sep="=", item_sep=",": job_dirname(
                overrides, exclude, kv_sep, item_sep
            ),
        )


register_resolver()
