"""The one interface every image source follows.

A source is a fixed, ordered set of images of one size. Each image has a stable string id
and, where known, a label and a location (file path or record number). Images come out as
uint8 arrays of shape (n, height, width, 3): NHWC, RGB.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np


@dataclass
class Batch:
    """A run of consecutive images of a source.

    Attributes
    ----------
    start : int
        Position of the first image in the source.
    ids : list of str
    images : ndarray of shape (n, height, width, 3), uint8
    """

    start: int
    ids: list[str]
    images: np.ndarray


@dataclass
class Skipped:
    """A file that could not be read, and why."""

    path: str
    reason: str


class Source:
    """Base class: subclasses set `name`, `ids`, `image_shape` and implement `read`."""

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
        """Return the images at `indices` as uint8 of shape (len(indices), h, w, 3)."""
        raise NotImplementedError

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
        """Yield consecutive batches from `start` up to `stop` (default: the end)."""
        stop = len(self) if stop is None else stop
        for lo in range(start, stop, batch_size):
            hi = min(lo + batch_size, stop)
            yield Batch(lo, self.ids[lo:hi], self.read(np.arange(lo, hi)))

    def subset(self, indices: Sequence[int] | np.ndarray, name: str | None = None) -> Subset:
        return Subset(self, np.asarray(indices, dtype=np.int64), name)

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

    def read(self, indices: Sequence[int] | np.ndarray) -> np.ndarray:
        return self.parent.read(self.indices[np.asarray(indices, dtype=np.int64)])

    def location(self, i: int) -> str:
        return self.parent.location(int(self.indices[i]))

    def position(self, i: int) -> int:
        return self.parent.position(int(self.indices[i]))

    def describe(self) -> dict:
        return {**self.parent.describe(), "name": self.name, "count": len(self)}
