"""lookalike's cache folder: downloaded weights, datasets, calibrations."""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir() -> Path:
    """`$LOOKALIKE_CACHE`, else `$XDG_CACHE_HOME/lookalike`, else `~/.cache/lookalike`."""
    if env := os.environ.get("LOOKALIKE_CACHE"):
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "lookalike"
