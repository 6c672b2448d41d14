"""Features on disk: FEATURES.npy with its JSON sidecar, and the work folder of a run that
can be interrupted and resumed.

The work folder (`.FEATURES.npy.partial/`) holds `job.json` (what the run computes: a
different job's leftovers are cleared) and one `NNNNNNNNNNNN.npy` per finished chunk,
starting at that image. A chunk that met images it could not decode first writes
`NNNNNNNNNNNN.failed.json` (their positions, paths and reasons); its `.npy` holds the rows
of the other images only. Every file is written atomically, the `.npy` last: it marks the
chunk done.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .. import __version__
from ..atomic import atomic_save_npy, atomic_write_text
from ..errors import ModelError
from ..sources.base import Skipped


@dataclass
class Chunk:
    """Features of a run of images: `features` (n_ok, dim) for those that decoded, in order,
    and `failed` (position in the source -> why) for those that did not."""

    features: np.ndarray
    failed: dict[int, Skipped] = field(default_factory=dict)

    @property
    def rows(self) -> int:
        return len(self.features) + len(self.failed)


def workdir(out: Path) -> Path:
    return out.with_name(f".{out.name}.partial")


def load_done(work: Path, meta: dict) -> dict[int, Chunk]:
    """Chunks a previous run of the same job finished; a different job's leftovers are cleared."""
    stamp = work / "job.json"
    if work.is_dir():
        try:
            same = json.loads(stamp.read_text()) == json.loads(json.dumps(meta))
        except (OSError, ValueError):
            same = False
        if not same:
            shutil.rmtree(work)
    work.mkdir(parents=True, exist_ok=True)
    if not stamp.exists():
        atomic_write_text(stamp, json.dumps(meta))
    done = {}
    for path in work.glob("*.npy"):
        failed_path = path.with_name(f"{path.stem}.failed.json")
        try:
            lo = int(path.stem)
            failed = json.loads(failed_path.read_text()) if failed_path.exists() else []
            chunk = Chunk(np.load(path), {int(i): Skipped(p, r) for i, p, r in failed})
        except (ValueError, OSError, TypeError):
            chunk = None  # cannot happen with atomic writes, but never trust a bad chunk
        if chunk is None or chunk.rows != min(meta["chunk"], meta["n"] - lo) or lo % meta["chunk"]:
            path.unlink()
            failed_path.unlink(missing_ok=True)
            continue
        done[lo] = chunk
    return done


def save_chunk(work: Path, lo: int, chunk: Chunk) -> None:
    if chunk.failed:
        atomic_write_text(work / f"{lo:012d}.failed.json",
                          json.dumps([[i, s.path, s.reason] for i, s in sorted(chunk.failed.items())]))
    atomic_save_npy(work / f"{lo:012d}.npy", chunk.features)


def sidecar_path(features: Path) -> Path:
    return features.with_suffix(".json")


def write_features(out: Path, features: np.ndarray, meta: dict) -> None:
    """Write FEATURES.npy and FEATURES.json (model, weights, pooling, source, ids), each atomically."""
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_save_npy(out, features)
    record = {"lookalike": __version__, "shape": list(features.shape), "dtype": "float32", **meta}
    atomic_write_text(sidecar_path(out), json.dumps(record, indent=1))


def read_features(path: str | os.PathLike) -> tuple[np.ndarray, dict]:
    """Read FEATURES.npy (memory-mapped) and its sidecar (empty dict when there is none)."""
    path = Path(path)
    if not path.is_file():
        raise ModelError(f"{path}: no such features file")
    try:
        features = np.load(path, mmap_mode="r", allow_pickle=False)
    except ValueError as exc:
        raise ModelError(f"{path}: not a readable .npy file ({exc})") from None
    side = sidecar_path(path)
    meta = json.loads(side.read_text()) if side.is_file() else {}
    return features, meta
