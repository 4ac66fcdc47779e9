"""Where a result came from: the git commit and the environment."""

from __future__ import annotations

import functools
import subprocess
from pathlib import Path


@functools.cache
def git_sha() -> str | None:
    """The commit of the checkout this package runs from (`-dirty` when it has changes)."""
    root = Path(__file__).resolve().parents[3]
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=root,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None
    return f"{sha}-dirty" if dirty else sha
