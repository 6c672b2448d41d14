"""Features on disk: FEATURES.npy with its JSON sidecar, and the work folder of a run that
can be interrupted and resumed.

The work folder (`.FEATURES.npy.partial/`) holds `job.json` (what the run computes: model,
options and source; a different job's leftovers are cleared) and, per finished chunk
starting at image NNNNNNNNNNNN, `NNNNNNNNNNNN.json` (a content digest of each image the
chunk read, and the images it could not decode: positions, paths and reasons) and
`NNNNNNNNNNNN.npy` (the rows of the images that decoded). Every file is written atomically,
the `.npy` last: it marks the chunk done. A resumed run re-reads each finished chunk's
images and keeps the chunk only if their digests are the same: images replaced in between,
even by others of the same shape, are embedded again.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .. import __version__
from ..atomic import atomic_save_npy, atomic_write_text, check_output_file
from ..errors import InvalidParameter, ModelError, SourceError, write_error
from ..sources.base import Skipped
from ..text import printable

WORK_FORMAT = 2  # job.json's "format": work folders of another format are cleared
# what lookalike writes there (`.failed.json`: work folders of format 1)
_WORK_FILE = re.compile(r"(job\.json|\d{12}\.(npy|json|failed\.json)|\..*\.tmp)")


@dataclass
class Chunk:
    """Features of a run of images: `features` (n_ok, dim) for those that decoded, in order,
    their content `digests` (one per row), and `failed` (position in the source -> why) for
    those that did not."""

    features: np.ndarray
    failed: dict[int, Skipped] = field(default_factory=dict)
    digests: list[str] = field(default_factory=list)

    @property
    def rows(self) -> int:
        return len(self.features) + len(self.failed)


def image_digests(images: np.ndarray) -> list[str]:
    """A content digest of each image (uint8 (n, h, w, 3)): BLAKE2b-128 of its pixels, hex."""
    return [hashlib.blake2b(np.ascontiguousarray(im).tobytes(), digest_size=16).hexdigest() for im in images]


def workdir(out: Path) -> Path:
    return out.with_name(f".{out.name}.partial")


def load_done(work: Path, meta: dict) -> dict[int, Chunk]:
    """Chunks a previous run of the same job finished (their digests still to be checked
    against the source); a different job's leftovers are cleared."""
    meta = {**meta, "format": WORK_FORMAT}
    stamp = work / "job.json"
    if work.is_dir():
        try:
            same = json.loads(stamp.read_text()) == json.loads(json.dumps(meta))
        except (OSError, ValueError):
            same = False
        if not same:
            clear_work(work)
    try:
        work.mkdir(exist_ok=True)
    except OSError as exc:
        raise write_error(work, exc) from exc
    if not stamp.exists():
        atomic_write_text(stamp, json.dumps(meta))
    done = {}
    for path in work.glob("[0-9]*.npy"):
        lo = int(path.stem)
        chunk = read_chunk(path)
        if chunk is None or chunk.rows != min(meta["chunk"], meta["n"] - lo) or lo % meta["chunk"]:
            path.unlink()
            path.with_suffix(".json").unlink(missing_ok=True)
            continue
        done[lo] = chunk
    return done


def read_chunk(path: Path) -> Chunk | None:
    """The finished chunk whose rows are the .npy `path` (its record beside it), or None if
    it is missing, unreadable or inconsistent."""
    try:
        record = json.loads(path.with_suffix(".json").read_text())
        failed = {int(i): Skipped(p, r) for i, p, r in record["failed"]}
        chunk = Chunk(np.load(path, allow_pickle=False), failed, [str(d) for d in record["digests"]])
    except (ValueError, OSError, TypeError, KeyError):
        return None  # cannot happen with atomic writes, but never trust a bad chunk
    return chunk if len(chunk.digests) == len(chunk.features) else None


def save_chunk(work: Path, lo: int, chunk: Chunk) -> None:
    record = {"digests": chunk.digests, "failed": [[i, s.path, s.reason] for i, s in sorted(chunk.failed.items())]}
    atomic_write_text(work / f"{lo:012d}.json", json.dumps(record))
    atomic_save_npy(work / f"{lo:012d}.npy", chunk.features)


def clear_work(work: Path) -> None:
    """Remove a work folder's files, those lookalike writes there and no others; a folder
    holding anything else is refused, untouched."""
    if not work.is_dir():
        return
    strangers = [p.name for p in work.iterdir() if not (p.is_file() and _WORK_FILE.fullmatch(p.name))]
    if strangers:
        raise InvalidParameter(f"{work}: holds {strangers[0]!r}, which lookalike did not write; "
                               "move it away (this folder is lookalike's work folder)")
    for p in work.iterdir():
        p.unlink(missing_ok=True)
    work.rmdir()


def sidecar_path(features: Path) -> Path:
    return features.with_suffix(".json")


def is_own_sidecar(path: Path) -> bool:
    """Whether `path` is a features sidecar lookalike wrote (so that it may be replaced)."""
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError):
        return False
    return isinstance(record, dict) and {"lookalike", "shape", "model"} <= record.keys()


def check_features_out(out: str | os.PathLike, inputs=()) -> Path:
    """`out` as a FEATURES.npy that can be written, with its sidecar, before any work: a
    .npy name, not a folder, in a folder that exists and can be written, neither it nor its
    sidecar one of `inputs`, and no sidecar there that lookalike did not write."""
    out = check_output_file(out, suffixes=(".npy",), what="features", inputs=inputs)
    side = check_output_file(sidecar_path(out), suffixes=(".json",), what="sidecar", inputs=inputs)
    if side.exists() and not is_own_sidecar(side):
        raise InvalidParameter(f"{side}: exists and is not a sidecar lookalike wrote; the features' sidecar "
                               f"goes there, so move it away or give another --out")
    return out


def check_decoded(name: str, n: int, kept: int, work: Path) -> None:
    """Refuse to write features of a source of `n` images of which none decoded (as `index
    build` refuses it): its work folder is cleared, nothing is written, and the error says so."""
    if n and not kept:
        clear_work(work)
        raise SourceError(f"{printable(name)}: none of its {n} image(s) could be decoded; nothing written")


def write_features(out: Path, features: np.ndarray, meta: dict) -> None:
    """Write FEATURES.npy and FEATURES.json (model, weights, pooling, source, ids), each atomically."""
    check_features_out(out)
    atomic_save_npy(out, features)
    record = {"lookalike": __version__, "shape": list(features.shape), "dtype": "float32", **meta}
    atomic_write_text(sidecar_path(out), json.dumps(record, indent=1))


def load_npy(path: str | os.PathLike) -> np.ndarray:
    """A .npy file, memory-mapped; anything else (a text file, a pickle, a folder) refused in one line."""
    path = Path(path)
    if path.is_dir():
        raise InvalidParameter(f"{path}: is a folder, not a .npy file")
    if not path.is_file():
        raise InvalidParameter(f"{path}: no such .npy file")
    with open(path, "rb") as f:
        if f.read(6) != b"\x93NUMPY":
            raise InvalidParameter(f"{path}: not a .npy file (saved by numpy.save, it would start with \\x93NUMPY)")
    try:
        return np.load(path, mmap_mode="r", allow_pickle=False)
    except ValueError as exc:  # an array of Python objects, a truncated or corrupt header
        raise InvalidParameter(f"{path}: not a readable .npy file ({str(exc).splitlines()[0][:200]})") from None


def read_features(path: str | os.PathLike) -> tuple[np.ndarray, dict]:
    """Read FEATURES.npy (memory-mapped) and its sidecar (empty dict when there is none)."""
    path = Path(path)
    features = load_npy(path)
    side = sidecar_path(path)
    try:
        meta = json.loads(side.read_text()) if side.is_file() else {}
    except (OSError, ValueError) as exc:
        raise ModelError(f"{side}: not a readable features sidecar ({exc})") from None
    return features, meta
