"""The one interface every image source follows.

A source is a fixed, ordered set of images of one size. Each image has a stable string id
and, where known, a label and a location (file path or record number). Images come out as
uint8 arrays of shape (n, height, width, 3): NHWC, RGB.

Opening a source reads no pixels: images are decoded when they are read. An image whose
file looked fine when the source was opened (its header read) but whose pixels do not
decode is a *late failure*: `read` raises `SourceError` naming it, `read_available` and
`batches` leave it out and say so, and it is listed once in `skipped`.

A source that `open_source` can reopen (`spec` is not None) can be cut into `pieces`: small
picklable descriptions that another process opens and reads on its own (see `pieces.py`).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
import numpy as np

from ..errors import SourceError
from ..text import printable
from .pieces import Piece, bounds

_SKIPPED_LOCK = threading.Lock()  # guards every source's `skipped` list (failures are rare)


@dataclass
class Skipped:
    """A file that could not be read, and why."""

    path: str
    reason: str

    @classmethod
    def of(cls, error: SourceError, where: str, named=None) -> Skipped:
        """The entry of a file that `error` (a `SourceError` about file `named`, default
        `where`) stopped: listed as `where`, the reason without the name the error starts
        with (the list prints the name once)."""
        return cls(where, str(error).removeprefix(f"{printable(where if named is None else named)}: "))


@dataclass
class Batch:
    """A run of consecutive images of a source, less those that could not be decoded.

    Attributes
    ----------
    start : int
        Position in the source of the first image of the run.
    ids : list of str
        Ids of the images in `images`, in order.
    images : ndarray of shape (len(ids), height, width, 3), uint8
    failed : dict of int to Skipped
        Images of the run left out because they could not be decoded: index in the source
        -> path and reason. The run is `start` to `stop`.
    """

    start: int
    ids: list[str]
    images: np.ndarray
    failed: dict[int, Skipped] = field(default_factory=dict)

    @property
    def stop(self) -> int:
        return self.start + len(self.ids) + len(self.failed)


def unreadable(failed: dict[int, Skipped]) -> SourceError:
    """The error of a strict `read` that met images it could not decode."""
    first = next(iter(failed.values()))
    more = f" (and {len(failed) - 1} more unreadable image(s))" if len(failed) > 1 else ""
    return SourceError(f"{printable(first.path)}: {printable(first.reason)}{more}")


class Source:
    """Base class: subclasses set `name`, `ids`, `image_shape` and implement `read` (images
    that always decode: arrays, STL-10, the sample set) or `read_available` (files that may
    fail to decode)."""

    name: str = "source"
    ids: list[str]
    image_shape: tuple[int, int, int]
    labels: np.ndarray | None = None
    label_names: list[str] | None = None
    skipped: Sequence[Skipped] = ()
    spec: str | None = None  # how `open_source` reopens this set (None: an in-memory array)

    def __len__(self) -> int:
        return len(self.ids)

    def read(self, indices: Sequence[int] | np.ndarray) -> np.ndarray:
        """Return the images at `indices` as uint8 of shape (len(indices), h, w, 3).

        Raises `SourceError` naming the file when one of them cannot be decoded.
        """
        images, failed = self.read_available(indices)
        if failed:
            raise unreadable(failed)
        return images

    def read_available(self, indices: Sequence[int] | np.ndarray) -> tuple[np.ndarray, dict[int, Skipped]]:
        """The images at `indices` that decode, and why the others did not.

        Returns
        -------
        images : ndarray of shape (len(indices) - len(failed), h, w, 3), uint8, in order
        failed : dict of int to Skipped, keyed by the row of `indices` that failed
        """
        return self.read(indices), {}

    def note_skipped(self, entry: Skipped) -> None:
        """List `entry` in `skipped`, once per path (a late failure, or one found elsewhere:
        by another process reading a piece, or by an earlier run that is being resumed)."""
        with _SKIPPED_LOCK:
            if not isinstance(self.skipped, list):
                self.skipped = list(self.skipped)
            if all(s.path != entry.path for s in self.skipped):
                self.skipped.append(entry)

    def location(self, i: int) -> str:
        """Where image `i` comes from: a file path or `file#record`."""
        return self.ids[i]

    def position(self, i: int) -> int:
        """Position of image `i` in the set that `spec` reopens."""
        return i

    def label(self, i: int) -> str | None:
        if self.labels is None:
            return None
        value = int(self.labels[i])
        if self.label_names is not None and 0 <= value < len(self.label_names):
            return self.label_names[value]
        return str(value)

    def batches(self, batch_size: int, start: int = 0, stop: int | None = None) -> Iterator[Batch]:
        """Yield consecutive batches from `start` up to `stop` (default: the end); images that
        cannot be decoded are left out of each batch and named in its `failed`."""
        stop = len(self) if stop is None else stop
        for lo in range(start, stop, batch_size):
            hi = min(lo + batch_size, stop)
            images, failed = self.read_available(np.arange(lo, hi))
            ids = [self.ids[i] for i in range(lo, hi) if i - lo not in failed]
            yield Batch(lo, ids, images, {lo + j: s for j, s in failed.items()})

    def subset(self, indices: Sequence[int] | np.ndarray, name: str | None = None) -> Subset:
        return Subset(self, np.asarray(indices, dtype=np.int64), name)

    # -- pieces for other processes ----------------------------------------------------------
    def pieces(self, n: int | None = None, *, chunk: int | None = None) -> list[Piece]:
        """Cut the source into `n` pieces of near-equal length, or into pieces of `chunk`
        images; each is a small picklable description that `Piece.open` reopens anywhere."""
        if self.spec is None:
            raise SourceError(f"{printable(self.name)}: an in-memory image set cannot be cut into pieces for other "
                              "processes; save it as .npy first")
        return [self.piece(lo, hi) for lo, hi in bounds(len(self), n, chunk)]

    def piece(self, start: int, stop: int) -> Piece:
        """The piece holding images `start` to `stop` of this source."""
        if not 0 <= start < stop <= len(self):
            raise SourceError(f"{printable(self.name)}: piece {start}:{stop} is not within its {len(self)} images")
        return self._piece_of(np.arange(start, stop), start, stop)

    def _piece_of(self, rows: np.ndarray, start: int, stop: int) -> Piece:
        """A piece that reads `rows` of this source (the one `spec` opens) as images `start`
        to `stop` of the source being cut (this one, or a subset of it)."""
        plain = len(rows) == stop - start and bool(np.all(rows == np.arange(start, stop)))
        return Piece(str(self.spec), start, stop, int(self.image_shape[0]), len(self),
                     positions=None if plain else tuple(int(r) for r in rows))

    def describe(self) -> dict:
        """What the feature sidecar and the index manifest record of this source."""
        return {"name": self.name, "count": len(self), "image_shape": list(self.image_shape)}


class Subset(Source):
    """Some images of another source, in a given order (a split, a sample)."""

    def __init__(self, parent: Source, indices: np.ndarray, name: str | None = None):
        self.parent = parent
        self.indices = indices
        self.name = name or f"{parent.name}[subset]"
        self.ids = [parent.ids[i] for i in indices]
        self.image_shape = parent.image_shape
        self.labels = None if parent.labels is None else parent.labels[indices]
        self.label_names = parent.label_names
        self.skipped = []
        self.spec = parent.spec

    def read_available(self, indices: Sequence[int] | np.ndarray) -> tuple[np.ndarray, dict[int, Skipped]]:
        images, failed = self.parent.read_available(self.indices[np.asarray(indices, dtype=np.int64)])
        for entry in failed.values():
            self.note_skipped(entry)
        return images, failed

    def location(self, i: int) -> str:
        return self.parent.location(int(self.indices[i]))

    def position(self, i: int) -> int:
        return self.parent.position(int(self.indices[i]))

    def _piece_of(self, rows: np.ndarray, start: int, stop: int) -> Piece:
        return self.parent._piece_of(self.indices[rows], start, stop)

    def describe(self) -> dict:
        return {**self.parent.describe(), "name": self.name, "count": len(self)}
