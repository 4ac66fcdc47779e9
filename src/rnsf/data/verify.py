"""The up-front check of a dataset: every file decoded completely, in parallel, before any job
file is written; results cached by (path, size, mtime) so that a rerun checks only new files.

The cache is one small JSON file, `verified_images.json`, in `$RNSF_CACHE_DIR`, else
`$XDG_CACHE_HOME/rnsf`, else `~/.cache/rnsf`. It holds, for each good file, its size and mtime and
what the check learnt (upright width and height, whether it has transparent pixels); a file
whose size or mtime changed is checked again. A cache that cannot be read or written is ignored.
"""

from __future__ import annotations

import json
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from PIL import Image

from rnsf.data.images import READ_ERRORS, has_transparency, open_rgb, to_rgb, unreadable
from rnsf.utils.errors import UserError

#: bump when decoding changes, so that files are checked again
CACHE_VERSION = 1
CACHE_NAME = "verified_images.json"


def cache_file() -> Path:
    """Where the verification cache lives (see the module docstring)."""
    if os.environ.get("RNSF_CACHE_DIR"):
        folder = Path(os.environ["RNSF_CACHE_DIR"])
    elif os.environ.get("XDG_CACHE_HOME"):
        folder = Path(os.environ["XDG_CACHE_HOME"]) / "rnsf"
    else:
        folder = Path.home() / ".cache" / "rnsf"
    return folder.expanduser() / CACHE_NAME


def inspect(path: Path) -> dict:
    """Decode `path` completely, as the dataset will: {"width", "height", "transparent"} of the
    upright image. A file that cannot be decoded raises a UserError naming it."""
    try:
        with Image.open(path) as image:
            image.load()
            transparent = has_transparency(image)
            width, height = to_rgb(image, "white", path).size
    except READ_ERRORS as err:
        raise unreadable(path, err) from None
    return {"width": width, "height": height, "transparent": transparent}


def _inspect_or_error(path: Path) -> dict | UserError:
    try:
        return inspect(path)
    except UserError as err:
        return err


def verify_images(paths: list[Path], alpha: str = "white", workers: int | None = None) -> list:
    """Check every file of `paths` completely; return [(height, width)] of the upright images.
    Raises one UserError for the first bad file (in dataset order), saying how many are bad."""
    cache = _read_cache()
    keys = [str(Path(p).resolve()) for p in paths]
    stats = [_stat(p) for p in paths]
    infos: list[dict | UserError | None] = [
        cache.get(k) if cache.get(k, {}).get("stat") == s else None
        for k, s in zip(keys, stats, strict=True)
    ]
    todo = [i for i, info in enumerate(infos) if info is None]
    if todo:
        workers = workers or min(8, os.cpu_count() or 1, len(todo))
        with ThreadPoolExecutor(max_workers=workers) as pool:
            results = pool.map(_inspect_or_error, [paths[i] for i in todo])
            for i, info in zip(todo, results, strict=True):
                infos[i] = info
        _write_cache(
            cache,
            {
                keys[i]: {**infos[i], "stat": stats[i]}
                for i in todo
                if not isinstance(infos[i], UserError)
            },
        )
    bad = [info for info in infos if isinstance(info, UserError)]
    if bad:
        more = f" ({len(bad)} of {len(paths)} files cannot be read)" if len(bad) > 1 else ""
        raise UserError(f"{bad[0]}{more}")
    if alpha == "refuse":
        transparent = [p for p, info in zip(paths, infos, strict=True) if info["transparent"]]
        if transparent:
            open_rgb(transparent[0], alpha)  # raises the one-line message naming the file
    return [(info["height"], info["width"]) for info in infos]


def _stat(path: Path) -> list[int]:
    st = Path(path).stat()
    return [st.st_size, st.st_mtime_ns]


def _read_cache() -> dict:
    try:
        data = json.loads(cache_file().read_text())
    except (OSError, ValueError):
        return {}
    if not isinstance(data, dict) or data.get("version") != CACHE_VERSION:
        return {}
    files = data.get("files")
    return files if isinstance(files, dict) else {}


def _write_cache(cache: dict, new: dict) -> None:
    if not new:
        return
    path = cache_file()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        merged = {**_read_cache(), **cache, **new}  # another job may have added files meanwhile
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps({"version": CACHE_VERSION, "files": merged}))
        tmp.replace(path)
    except OSError:
        pass  # the cache only saves time
