"""Recursive folders of image files, decoded when read.

Opening a folder lists its image files (by extension, in sorted order) and reads each one's
header in a thread pool (format, size, mode: no pixels), so the ids are fixed from then on:
files that are not images, or whose header does not read, are listed in `skipped` and are
not part of the set. Pixels are decoded when images are read (`load_image`: EXIF
orientation, RGB, the centre square resized to `size`). A file whose header read but
whose pixels do not decode fails then, on its own: `read` raises, `read_available` and
`batches` leave it out and say so, and it joins `skipped` once.

Images in sub-folders are labelled with the name of their top-level sub-folder. Which
files are used (hidden names, symbolic links, FIFOs and other special files) is decided in
`files.py`; every file that is not used is listed in `skipped` with the reason.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path, PurePosixPath

import numpy as np

from ..errors import SourceError
from ..text import printable
from .base import Skipped, Source
from .decode import MAX_PIXELS, check_size, load_image, read_header, resize_crop
from .files import EXTENSIONS, is_utf8, walk
from .pieces import Piece

__all__ = ["EXTENSIONS", "MAX_PIXELS", "FolderSource", "list_files", "load_image", "resize_crop"]

def list_files(root: Path) -> tuple[list[Path], list[Skipped]]:
    """All image files below `root` in order, and every other name met, as skipped (the
    policy on hidden names, symbolic links and special files is `files.walk`'s)."""
    return walk(root)


def _each(fn: Callable, items: Sequence, progress: bool = False, desc: str = "") -> list:
    """`fn` of every item in a thread pool (file reads and PIL's decoders release the GIL);
    a `SourceError` is returned in the item's place rather than raised. Items are handed
    to the pool a run at a time, so a folder of millions of files does not queue millions
    of tasks at once."""
    from ..progress import bar

    def one(item):
        try:
            return fn(item)
        except SourceError as exc:
            return exc

    if len(items) <= 1:
        return [one(item) for item in items]
    run = 4096
    with ThreadPoolExecutor(max_workers=min(len(items), os.cpu_count() or 1)) as pool:
        results = (r for lo in range(0, len(items), run) for r in pool.map(one, items[lo:lo + run]))
        return list(bar(results, total=len(items), desc=desc, unit="img", enabled=progress))


class FolderSource(Source):
    """Every image below a folder, decoded to `size` x `size` when read.

    Parameters
    ----------
    root : the folder.
    size : side of the images.
    progress : a progress bar while the headers are checked.
    files : these files (relative to `root`), in this order, instead of listing the folder;
        their headers are not checked at open (a bad one fails when read). This is how a
        piece reopens its part of a folder in another process.
    name : the source's name (default `folder:ROOT`).
    """

    def __init__(self, root: str | os.PathLike, size: int = 96, progress: bool = True, *,
                 files: Sequence[str] | None = None, name: str | None = None):
        self.root = Path(root)
        if not self.root.is_dir():
            raise SourceError(f"{printable(self.root)}: "
                              + ("not a folder" if os.path.lexists(self.root) else "no such folder"))
        if not is_utf8(str(self.root.resolve())):
            raise SourceError(f"{printable(self.root)}: the folder's path is not valid UTF-8; rename it")
        size = check_size(size)
        self.name = name or f"folder:{self.root}"
        self.spec = str(self.root.resolve())
        self.size = size
        self.image_shape = (size, size, 3)
        if files is None:
            kept, self.skipped = self._open(progress)
        else:
            kept, self.skipped = [_relative(self.root, f) for f in files], []
        if not kept:
            raise SourceError(f"{printable(self.root)}: no readable image found"
                              + (f" ({len(self.skipped)} file(s) skipped)" if self.skipped else ""))
        self.ids = [p.as_posix() for p in kept]
        if all(len(p.parts) > 1 for p in kept):
            names = sorted({p.parts[0] for p in kept})
            number = {name: i for i, name in enumerate(names)}
            self.label_names = names
            self.labels = np.array([number[p.parts[0]] for p in kept], dtype=np.int64)

    def _open(self, progress: bool) -> tuple[list[PurePosixPath], list[Skipped]]:
        """List the folder and read every image file's header: the files kept (relative to
        the folder) and those skipped, with why."""
        files, skipped = list_files(self.root)
        checks = _each(read_header, files, progress, desc="check")
        kept = []
        for path, check in zip(files, checks):
            if isinstance(check, SourceError):
                skipped.append(Skipped.of(check, str(path)))
            else:
                kept.append(PurePosixPath(path.relative_to(self.root).as_posix()))
        return kept, skipped

    def read_available(self, indices) -> tuple[np.ndarray, dict[int, Skipped]]:
        rows = np.asarray(indices, dtype=np.int64).reshape(-1)
        paths = [self.path(int(i)) for i in rows]
        decoded = _each(lambda p: load_image(p, self.size), paths)
        failed = {}
        for j, (path, result) in enumerate(zip(paths, decoded)):
            if isinstance(result, SourceError):  # named as the listing names a file: the folder as given
                failed[j] = Skipped.of(result, str(self.root / self.ids[int(rows[j])]), named=path)
                self.note_skipped(failed[j])
        images = [r for r in decoded if not isinstance(r, SourceError)]
        out = np.stack(images) if images else np.empty((0, *self.image_shape), np.uint8)
        return out, failed

    def path(self, i: int) -> Path:
        """The file of image `i` (made from its id when asked, not held for every image)."""
        return Path(self.spec, self.ids[i])

    def location(self, i: int) -> str:
        return str(self.path(i))

    def _piece_of(self, rows, start: int, stop: int):
        return Piece(self.spec, start, stop, self.size, len(self), files=tuple(self.ids[int(r)] for r in rows))

    def describe(self) -> dict:
        return {**super().describe(), "path": str(self.root), "skipped": len(self.skipped)}


def _relative(root: Path, file: str) -> PurePosixPath:
    """`file` as a path inside `root`; one that points outside it is refused."""
    rel = PurePosixPath(file)
    if rel.is_absolute() or ".." in rel.parts or not rel.parts:
        raise SourceError(f"{printable(root)}: {file!r} is not a file inside the folder")
    return rel
