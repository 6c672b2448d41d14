"""Images already in a NumPy file: uint8 of shape (n, height, width, 3), memory-mapped."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ..errors import SourceError
from .base import Source


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
                raise SourceError(f"{self.path}: expected a .npy file of uint8 images (n, h, w, 3)")
            if not self.path.is_file():
                raise SourceError(f"{self.path}: no such file")
            try:
                array = np.load(self.path, mmap_mode="r", allow_pickle=False)
            except ValueError as exc:
                raise SourceError(f"{self.path}: not a readable .npy file ({exc})") from None
            self.name = name or f"npy:{self.path.name}"
            self.spec = str(self.path.resolve())
        if array.ndim != 4 or array.shape[-1] != 3:
            raise SourceError(
                f"{self.path or self.name}: shape {array.shape} is not (n, height, width, 3) images"
            )
        if array.dtype != np.uint8:
            raise SourceError(f"{self.path or self.name}: dtype {array.dtype}, expected uint8 pixels")
        if len(array) == 0:
            raise SourceError(f"{self.path or self.name}: holds no image")
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
