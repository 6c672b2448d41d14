"""Recursive folders of image files.

Every file is decoded once, EXIF orientation applied, made RGB, resized so that its shorter
side is `size` and centre-cropped to `size` x `size`. Files that cannot be decoded are
skipped and listed in `skipped`, never dropped silently. Images in sub-folders are labelled
with the name of their top-level sub-folder.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from ..errors import SourceError
from .base import Skipped, Source
from .decode import MAX_PIXELS, load_image, resize_crop

__all__ = ["EXTENSIONS", "MAX_PIXELS", "FolderSource", "list_files", "load_image", "resize_crop"]

EXTENSIONS = {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff"}


def list_files(root: Path) -> tuple[list[Path], list[Skipped]]:
    """All image files below `root` in sorted order, and the other files, as skipped."""
    images, others = [], []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in sorted(filenames):
            if name.startswith("."):
                continue
            path = Path(dirpath) / name
            if path.suffix.lower() in EXTENSIONS:
                images.append(path)
            else:
                others.append(Skipped(str(path), f"not an image file (extension {path.suffix or 'none'})"))
    return images, others


class FolderSource(Source):
    """Every image below a folder, decoded to `size` x `size`."""

    def __init__(self, root: str | os.PathLike, size: int = 96, progress: bool = True):
        self.root = Path(root)
        if not self.root.is_dir():
            raise SourceError(f"{self.root}: no such folder")
        files, skipped = list_files(self.root)
        self.name = f"folder:{self.root}"
        self.spec = str(self.root.resolve())
        self.image_shape = (size, size, 3)
        arrays, kept = self._decode(files, size, skipped, progress)
        if not kept:
            raise SourceError(
                f"{self.root}: no readable image found"
                + (f" ({len(skipped)} file(s) skipped)" if skipped else "")
            )
        self.paths = [p.resolve() for p in kept]
        self.images = np.stack(arrays)
        self.ids = [p.relative_to(self.root).as_posix() for p in kept]
        self.skipped = skipped
        tops = [p.relative_to(self.root).parts for p in kept]
        if all(len(parts) > 1 for parts in tops):
            names = sorted({parts[0] for parts in tops})
            self.label_names = names
            self.labels = np.array([names.index(parts[0]) for parts in tops], dtype=np.int64)

    @staticmethod
    def _decode(files: list[Path], size: int, skipped: list[Skipped], progress: bool):
        from ..progress import bar

        def one(path: Path):
            try:
                return load_image(path, size)
            except SourceError as exc:
                return exc

        arrays, kept = [], []
        with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
            results = pool.map(one, files)
            for path, result in bar(zip(files, results), total=len(files), desc="decode", unit="img", enabled=progress):
                if isinstance(result, SourceError):
                    skipped.append(Skipped(str(path), str(result).removeprefix(f"{path}: ")))
                else:
                    arrays.append(result)
                    kept.append(path)
        return arrays, kept

    def read(self, indices) -> np.ndarray:
        return self.images[np.asarray(indices, dtype=np.int64)]

    def location(self, i: int) -> str:
        return str(self.paths[i])

    def describe(self) -> dict:
        return {**super().describe(), "path": str(self.root), "skipped": len(self.skipped)}
