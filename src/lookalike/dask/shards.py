"""The base of a distributed search, in row shards that workers read from storage.

A `Shard` is a run of rows of a `.npy` file (a file `fit` wrote, a file the caller gave,
or a segment of an index folder) and the global index of its first row. It pickles small;
each task that needs a shard reads it from storage itself, so a worker lost in the middle
costs a rerun, never data (nothing is kept only in one worker's memory, as `scatter` would).
The storage must be one that every worker reads at the same path: a local folder for a
LocalCluster, a shared file system for a cluster of machines.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..atomic import atomic_save_npy
from ..errors import InvalidParameter
from ..features.files import load_npy
from ..index.store import IndexStore
from ..knn.validation import check_array


@dataclass(frozen=True)
class Shard:
    """Rows `start` to `stop` of the .npy file `path`: global rows `offset` onwards."""

    path: str
    start: int
    stop: int
    offset: int

    def __len__(self) -> int:
        return self.stop - self.start

    def read(self) -> np.ndarray:
        """The shard's rows, read from storage into memory (checked for NaN, inf and range)."""
        return check_array(np.array(load_npy(self.path)[self.start:self.stop]), name=f"shard {self.path}")

    def ids(self) -> np.ndarray:
        return np.arange(self.offset, self.offset + len(self), dtype=np.int64)


def cut(runs: list[tuple[str, int]], shard_rows: int | None) -> list[Shard]:
    """Shards of at most `shard_rows` rows (None: one per file) over files of (path, rows),
    numbered globally in the order given."""
    shards, offset = [], 0
    for path, rows in runs:
        step = rows if shard_rows is None else shard_rows
        for lo in range(0, rows, max(1, step)):
            hi = min(lo + max(1, step), rows)
            shards.append(Shard(str(path), lo, hi, offset + lo))
        offset += rows
    return shards


def from_files(paths: list[str | os.PathLike], shard_rows: int | None) -> tuple[list[Shard], int, np.dtype]:
    """Shards over .npy files of float rows that all have the same width; returns the shards,
    the width and the dtype."""
    runs, d, dtype = [], None, None
    for path in paths:
        a = load_npy(path)
        if a.ndim != 2 or a.dtype.kind != "f" or not len(a) or not a.shape[1]:
            raise InvalidParameter(f"{path}: holds {a.dtype} of shape {a.shape}; a shard is a 2-D array of "
                                   "float rows, at least one row and one column")
        if d is not None and a.shape[1] != d:
            raise InvalidParameter(f"{path}: shard of {a.shape[1]} dimensions, but {paths[0]} has {d}; "
                                   "all shards of a base must have the same dimension")
        d, dtype = a.shape[1], np.result_type(dtype or a.dtype, a.dtype)
        runs.append((str(Path(path).resolve()), len(a)))
    if not runs:
        raise InvalidParameter("no shard files given")
    return cut(runs, shard_rows), int(d), np.dtype(dtype)


def from_index(path: str | os.PathLike, shard_rows: int | None) -> tuple[list[Shard], int, np.dtype]:
    """Shards over the vector segments of an index folder (their sizes and shapes checked)."""
    store = IndexStore(Path(path))
    store.vectors(verify=False)  # every segment present, of its recorded size and shape
    manifest, segments = store.snapshot()
    folder = store.path.resolve() / "vectors"
    return cut([(str(folder / name), rows) for name, rows, _, _ in segments], shard_rows), \
        int(manifest["dim"]), np.dtype(np.float32)


def write(X: np.ndarray, folder: Path, shard_rows: int) -> list[Shard]:
    """`X` written to `folder` as shard files of `shard_rows` rows each, atomically."""
    shards = []
    for i, lo in enumerate(range(0, len(X), shard_rows)):
        path = folder / f"shard-{i:06d}.npy"
        atomic_save_npy(path, np.ascontiguousarray(X[lo:lo + shard_rows]))
        shards.append(Shard(str(path), 0, min(shard_rows, len(X) - lo), lo))
    return shards


def write_block(block: np.ndarray, path: str) -> tuple[int, int, str]:
    """A task: one block of a dask array, checked and written to `path` atomically, in the
    worker. Returns its (rows, columns, dtype)."""
    block = check_array(block, name=f"the block written to {path}")
    atomic_save_npy(path, np.ascontiguousarray(block))
    return int(block.shape[0]), int(block.shape[1]), str(block.dtype)
