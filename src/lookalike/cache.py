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
    another machine (another CPU model, core count, torch version or device) or for another
    thread count that this machine has none of."""
    return next((classes for m, classes in _entries(name, version) if m == machine), {})


def _entries(name: str, version: int | None) -> list[tuple[dict, dict]]:
    """The file's (machine, classes) pairs: the last writer's at the top level, then those it
    kept under "also" (the same machine at other thread counts); [] if it is unreadable."""
    try:
        data = json.loads((cache_dir() / name).read_text())
        if not isinstance(data, dict) or (version is not None and data.get("version") != version):
            return []
        found = [(data.get("machine"), data.get("classes"))]
        also = data.get("also", [])
        found += [(e.get("machine"), e.get("classes")) for e in (also if isinstance(also, list) else [])
                  if isinstance(e, dict)]
        return [(m, c) for m, c in found if isinstance(m, dict) and isinstance(c, dict)]
    except (OSError, ValueError, AttributeError):
        return []


def _host(machine: dict) -> dict:
    """What must match for two calibrations to share a file: all but the thread count and the device."""
    return {k: v for k, v in machine.items() if k not in ("threads", "cuda")}


def write_calibrations(name: str, machine: dict, classes: dict, version: int | None = None) -> None:
    """Keep `classes` for `machine` in the cache folder's file `name`, atomically; a folder that
    cannot be written costs a re-measurement next time, nothing else. The calibrations of the
    same host at other torch thread counts or on another of its devices are kept beside them
    (a server's one-thread stages and a command line's all-core run each keep theirs, the CPU's
    and a GPU's too); any other host's are dropped (another CPU, core count, architecture or
    torch version invalidates them)."""
    from .atomic import atomic_write_text

    also = [{"machine": m, "classes": c} for m, c in _entries(name, version)
            if m != machine and _host(m) == _host(machine)]
    data = {"machine": machine, "classes": classes} if version is None else \
        {"version": version, "machine": machine, "classes": classes}
    if also:
        data["also"] = also
    try:
        (cache_dir() / name).parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(cache_dir() / name, json.dumps(data, indent=1))
    except Exception:  # noqa: BLE001 -- a cache that cannot be written costs a re-measurement, nothing else
        pass
