"""lookalike's cache folder: downloaded weights, datasets, calibrations."""

from __future__ import annotations

import json
import os
from pathlib import Path


def cache_dir() -> Path:
    """`$LOOKALIKE_CACHE`, else `$XDG_CACHE_HOME/lookalike`, else `~/.cache/lookalike`."""
    if env := os.environ.get("LOOKALIKE_CACHE"):
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "lookalike"


def calibration_files() -> bool:
    """Whether calibrations are kept in the cache folder (`$LOOKALIKE_CALIBRATION=0`: measured
    anew in each process, neither read nor written)."""
    return os.environ.get("LOOKALIKE_CALIBRATION", "1") != "0"


def read_calibrations(name: str, machine: dict, version: int | None = None) -> dict:
    """The calibrations (by shape class) kept in the cache folder's file `name` for `machine`;
    {} when there are none, the file is damaged, of another format `version`, or was written on
    another machine (another CPU model, core count, torch version or device)."""
    try:
        data = json.loads((cache_dir() / name).read_text())
        if (version is not None and data.get("version") != version) or data.get("machine") != machine \
                or not isinstance(data.get("classes"), dict):
            return {}
        return data["classes"]
    except (OSError, ValueError, AttributeError):
        return {}


def write_calibrations(name: str, machine: dict, classes: dict, version: int | None = None) -> None:
    """Keep `classes` for `machine` in the cache folder's file `name`, atomically; a folder that
    cannot be written costs a re-measurement next time, nothing else."""
    from .atomic import atomic_write_text

    data = {"machine": machine, "classes": classes} if version is None else \
        {"version": version, "machine": machine, "classes": classes}
    try:
        (cache_dir() / name).parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(cache_dir() / name, json.dumps(data, indent=1))
    except Exception:  # noqa: BLE001 -- a cache that cannot be written costs a re-measurement, nothing else
        pass
