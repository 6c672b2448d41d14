"""Images already in a NumPy file: uint8 of shape (n, height, width, 3), memory-mapped.

The file must be a regular file (`files.check_file`); each image is at most
`decode.MAX_PIXELS` pixels, as a decoded image file is.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ..errors import SourceError
from ..text import printable
from .base import Source
from .decode import MAX_PIXELS
from .files import check_file


class ArraySource(Source):
    """Images held in a `.npy` file (NHWC uint8), or in an array already in memory."""

    def __init__(self, data: str | os.PathLike | np.ndarray, name: str | None = None,
                 labels: np.ndarray | None = None):
        if isinstance(data, np.ndarray):
            self.path = None
            array = data
            self.name = name or "array"
        else:
            self.path = Path(data)
            if self.path.suffix != ".npy":
                raise SourceError(f"{printable(self.path)}: expected a .npy file of uint8 images (n, h, w, 3)")
            check_file(self.path, "a .npy file")  # a FIFO or a device is never opened
            try:
                array = np.load(self.path, mmap_mode="r", allow_pickle=False)
            except (ValueError, OSError, EOFError) as exc:
                raise SourceError(f"{printable(self.path)}: not a readable .npy file "
                                  f"({printable(exc) or type(exc).__name__})") from None
            self.name = name or f"npy:{self.path.name}"
            self.spec = str(self.path.resolve())
        where = printable(self.path or self.name)
        if array.ndim != 4 or array.shape[-1] != 3 or 0 in array.shape[1:]:
            raise SourceError(f"{where}: shape {array.shape} is not (n, height, width, 3) images")
        if array.dtype != np.uint8:
            raise SourceError(f"{where}: dtype {array.dtype}, expected uint8 pixels")
        if len(array) == 0:
            raise SourceError(f"{where}: holds no image")
        if array.shape[1] * array.shape[2] > MAX_PIXELS:
            raise SourceError(f"{where}: images of {array.shape[2]}x{array.shape[1]} pixels are over "
                              f"lookalike's limit of {MAX_PIXELS:,} pixels per image")
        self.images = array
        self.image_shape = tuple(int(s) for s in array.shape[1:])  # type: ignore[assignment]
        stem = self.path.stem if self.path else self.name
        self.ids = [f"{stem}/{i}" for i in range(len(array))]
        if labels is not None:
            self.labels = np.asarray(labels, dtype=np.int64)

    def read(self, indices) -> np.ndarray:
        return np.ascontiguousarray(self.images[np.asarray(indices, dtype=np.int64)])

    def location(self, i: int) -> str:
        return f"{self.path}#{i}" if self.path else f"{self.name}#{i}"

    def describe(self) -> dict:
        return {**super().describe(), "path": str(self.path) if self.path else None}
