"""Vector segments: checksums, and several memory-mapped segments seen as one array."""

from __future__ import annotations

import zlib
from pathlib import Path

import numpy as np


def crc32_file(path: Path) -> int:
    crc = 0
    with open(path, "rb") as f:
        while block := f.read(1 << 24):
            crc = zlib.crc32(block, crc)
    return crc


class SegmentedArray:
    """Several (n_i, d) memory maps seen as one (sum n_i, d) array, for the kNN engine:
    supports `shape`, `len`, `dtype`, slices of rows and integer-array row indexing."""

    def __init__(self, parts: list[np.ndarray], d: int):
        self.parts = parts
        self.starts = np.cumsum([0] + [len(p) for p in parts])
        self.shape = (int(self.starts[-1]), d)
        self.dtype = np.dtype(np.float32)
        self.ndim = 2

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, item):
        if isinstance(item, slice):
            lo, hi, step = item.indices(self.shape[0])
            if step != 1:
                return self[np.arange(lo, hi, step)]
            pieces = []
            for part, start in zip(self.parts, self.starts[:-1]):
                a, b = max(lo - start, 0), min(hi - start, len(part))
                if a < b:
                    pieces.append(part[a:b])
            return np.concatenate(pieces) if len(pieces) != 1 else np.asarray(pieces[0])
        rows = np.asarray(item, dtype=np.int64)
        if rows.ndim == 0:
            return self[int(rows) : int(rows) + 1][0]
        out = np.empty((len(rows), self.shape[1]), dtype=np.float32)
        which = np.searchsorted(self.starts, rows, side="right") - 1
        for s in np.unique(which):
            sel = which == s
            out[sel] = self.parts[s][rows[sel] - self.starts[s]]
        return out

    def __array__(self, dtype=None, copy=None):
        full = self[0 : self.shape[0]]
        return full.astype(dtype) if dtype is not None else full
