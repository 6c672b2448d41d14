"""STL-10's binary files, read in place.

Each record of `*_X.bin` is 3 x 96 x 96 bytes: the red plane, then green, then blue, each
plane stored column-major (x varies slowest). `read_stl10` maps the file and returns a view
that transposes records to (96, 96, 3) rows-first on access, so nothing is read until used.
Labels (`*_y.bin`) are one byte per image, 1 to 10.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ..errors import SourceError
from ..text import printable
from .base import Source
from .files import check_file

HEIGHT = WIDTH = 96
CHANNELS = 3
RECORD_BYTES = HEIGHT * WIDTH * CHANNELS  # 27,648
CLASS_NAMES = [
    "airplane", "bird", "car", "cat", "deer", "dog", "horse", "monkey", "ship", "truck",
]
FILES = ("unlabeled_X.bin", "train_X.bin", "test_X.bin")


def read_stl10(path: str | os.PathLike) -> np.ndarray:
    """Memory-map an STL-10 image file.

    Parameters
    ----------
    path : path to `unlabeled_X.bin`, `train_X.bin` or `test_X.bin`.

    Returns
    -------
    images : ndarray of shape (n, 96, 96, 3), uint8
        A read-only view on the file: slicing it reads only the records sliced.
    """
    path = Path(path)
    size = check_file(path, "an STL-10 file").st_size
    if size == 0 or size % RECORD_BYTES:
        raise SourceError(
            f"{printable(path)}: size {size} bytes is not a multiple of an STL-10 record "
            f"({RECORD_BYTES} bytes = 3x96x96); the file is truncated or not STL-10"
        )
    raw = np.memmap(path, dtype=np.uint8, mode="r", shape=(size // RECORD_BYTES, CHANNELS, WIDTH, HEIGHT))
    # (n, c, x, y) -> (n, y, x, c): rows first, channels last.
    return raw.transpose(0, 3, 2, 1)


def to_rows_first(records: np.ndarray) -> np.ndarray:
    """Records as stored, (n, c, x, y), -> images (n, y, x, c), contiguous: a plane at a time
    (3x the speed of one transposing copy, whose every byte comes from another plane)."""
    out = np.empty((len(records), HEIGHT, WIDTH, CHANNELS), dtype=np.uint8)
    for c in range(CHANNELS):
        out[..., c] = records[:, c].transpose(0, 2, 1)
    return out


def read_stl10_labels(path: str | os.PathLike) -> np.ndarray:
    """Read an STL-10 label file (`*_y.bin`): uint8 of shape (n,), classes 1 to 10."""
    path = Path(path)
    check_file(path, "an STL-10 label file")
    return np.fromfile(path, dtype=np.uint8)


def default_root() -> Path:
    from ..cache import cache_dir

    return cache_dir() / "stl10"


def resolve(path: str | os.PathLike | None) -> Path:
    """Find the image file meant by `path`: a .bin file, a folder holding one, or STL-10's default place."""
    p = Path(path) if path else default_root()
    if os.path.lexists(p) and not p.is_dir():
        check_file(p, "an STL-10 file")  # a broken link, a FIFO, a device: said as such
        return p
    for folder in (p, p / "stl10_binary"):
        for name in FILES:
            if (folder / name).is_file():
                return folder / name
    raise SourceError(
        f"{printable(p)}: no STL-10 file found (looked for {', '.join(FILES)}); "
        "run `lookalike fetch stl10` first or give the path to a *_X.bin file"
    )


class STL10Source(Source):
    """Images of one STL-10 file, with labels where a matching `*_y.bin` exists."""

    def __init__(self, path: str | os.PathLike | None = None):
        self.path = resolve(path)
        self.images = read_stl10(self.path)
        stem = self.path.name.removesuffix("_X.bin").removesuffix(".bin")
        self.name = f"stl10:{stem}"
        self.spec = f"stl10:{self.path.resolve()}"
        self.ids = [f"{stem}/{i}" for i in range(len(self.images))]
        self.image_shape = (HEIGHT, WIDTH, CHANNELS)
        label_path = self.path.with_name(self.path.name.replace("_X.bin", "_y.bin"))
        if label_path != self.path and os.path.lexists(label_path):
            count = check_file(label_path, "an STL-10 label file").st_size  # one byte a label: checked unread
            if count != len(self.images):
                raise SourceError(
                    f"{printable(label_path)}: {count} labels for {len(self.images)} images in "
                    f"{printable(self.path)}"
                )
            self.labels = read_stl10_labels(label_path).astype(np.int64) - 1
            self.label_names = CLASS_NAMES

    def read(self, indices) -> np.ndarray:
        indices = np.asarray(indices, dtype=np.int64)
        records = self.images.transpose(0, 3, 2, 1)  # (n, c, x, y) as stored
        if len(indices) and np.all(np.diff(indices) == 1):
            return to_rows_first(records[indices[0] : indices[-1] + 1])
        return to_rows_first(records[indices])

    def location(self, i: int) -> str:
        return f"{self.path}#{i}"

    def describe(self) -> dict:
        return {**super().describe(), "path": str(self.path)}
