"""Pieces: a source cut into runs that other processes reopen and read on their own.

A `Piece` is a few fields (the source's spec, which images, at what size), so it pickles
small and travels to a process pool or a cluster; the worker calls `piece.open()` (or
`open_piece(piece)`), which reopens the source with `open_source(spec)` and reads only that
run. Images `start` to `stop` of the source that was cut are images 0 to `stop - start` of
the opened piece, in order, identical to a local read.

How a piece finds its images again:
- sample set, `.npy` file, STL-10 file: by position in the reopened source; the source's
  length is checked, so a file replaced in between is an error, never other images.
- folder: by file name (`files`, relative to the folder): the worker neither lists the
  folder nor checks the headers of files outside its piece, and a file that changed since
  fails on its own, as a late failure, without shifting the others.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from ..errors import SourceError

if TYPE_CHECKING:
    from .base import Source


@dataclass(frozen=True)
class Piece:
    """Images `start` to `stop` of a source, as another process reopens them.

    Attributes
    ----------
    spec : str
        What `open_source` opens: `sample:N:SEED`, `stl10:PATH`, a `.npy` path, a folder.
    start, stop : int
        The run of images of the source that was cut (a subset's own numbering for a subset).
    size : int
        Side of the images; folders decode at this size.
    count : int
        Images in the source `spec` opens, checked when reopened (not for folders).
    positions : tuple of int or None
        Positions in that source when they are not `start` to `stop` (a piece of a subset).
    files : tuple of str or None
        For a folder: the files, relative to it.
    """

    spec: str
    start: int
    stop: int
    size: int
    count: int
    positions: tuple[int, ...] | None = None
    files: tuple[str, ...] | None = None

    def __len__(self) -> int:
        return self.stop - self.start

    def open(self) -> Source:
        """Reopen the piece here: a source of `len(self)` images (ids, labels, locations)."""
        from . import open_piece  # the registry of source types, which knows how to reopen each

        return open_piece(self)

    def read(self) -> np.ndarray:
        """The piece's images, uint8 (len(self), h, w, 3); `SourceError` if one cannot be decoded."""
        source = self.open()
        return source.read(np.arange(len(source)))

    def read_available(self) -> tuple[np.ndarray, dict]:
        """The piece's images that decode, uint8 (n, h, w, 3), in order, and those that do not:
        {position in the piece: `Skipped` (file and why)}. A corrupt file costs itself only."""
        source = self.open()
        return source.read_available(np.arange(len(source)))


def bounds(n: int, pieces: int | None = None, chunk: int | None = None) -> list[tuple[int, int]]:
    """(start, stop) of `pieces` near-equal runs of range(n), or of runs of `chunk`."""
    if (pieces is None) == (chunk is None):
        raise SourceError("give either the number of pieces or the chunk size, not both")
    if chunk is not None:
        if chunk < 1:
            raise SourceError(f"chunk of {chunk} images; give at least 1")
        return [(lo, min(lo + chunk, n)) for lo in range(0, n, chunk)]
    if pieces is None or pieces < 1:
        raise SourceError(f"cannot cut into {pieces} pieces; give at least 1")
    edges = np.linspace(0, n, min(pieces, n) + 1).round().astype(int)
    return [(int(a), int(b)) for a, b in zip(edges[:-1], edges[1:])]
