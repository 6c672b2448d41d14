"""Where images come from. One way to name an image set: `open_source(spec)`.

Specs: `sample` or `sample:N[:SEED[:SIZE]]` (the bundled set), `stl10` or `stl10:PATH`
(STL-10's binary files), a `*_X.bin` file, a `.npy` file of uint8 NHWC images, or a folder
of images. Opening reads no pixels; `source.pieces(n)` cuts a source into pieces that other
processes reopen (`piece.open()`).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..errors import SourceError
from ..text import printable
from .arrays import ArraySource
from .base import Batch, Skipped, Source, Subset
from .decode import load_image, read_header
from .files import EXTENSIONS, check_file
from .folder import FolderSource
from .pieces import Piece
from .sample import SampleSource
from .split import split, split_indices
from .stl10 import STL10Source, read_stl10, read_stl10_labels

__all__ = [
    "ArraySource", "Batch", "FolderSource", "Piece", "STL10Source", "SampleSource", "Skipped", "Source",
    "Subset", "files_source", "load_image", "open_piece", "open_source", "read_header", "read_stl10",
    "read_stl10_labels", "split", "split_indices",
]


def open_source(spec: str | os.PathLike, size: int = 96, progress: bool = True) -> Source:
    """Open the image set that `spec` names; folders are decoded at `size` x `size` when read.

    A folder's files are listed and their headers checked now (with a progress bar when
    `progress`); no source decodes pixels before they are read. `size` and the sample set's
    fields are range-checked (`decode.MIN_SIZE`..`MAX_SIZE`, `sample.MAX_SAMPLE`): a value
    out of range is a one-line `SourceError`, never an attempt to allocate it.
    """
    text = str(spec)
    if not text.strip():  # Path("") is the current folder: never open it by accident
        raise SourceError("no source given (an empty name); give sample, stl10, a .npy file or a folder")
    if text == "sample" or text.startswith("sample:"):
        return _sample(text)
    if text == "stl10" or text.startswith("stl10:"):
        return STL10Source(text[6:] or None)
    path = Path(text)
    if path.suffix == ".bin":
        return STL10Source(path)
    if path.suffix == ".npy":
        return ArraySource(path)
    if path.is_dir():
        return FolderSource(path, size=size, progress=progress)
    if not os.path.lexists(path):
        raise SourceError(f"{printable(path)}: no such file or folder")
    check_file(path, "an image source")  # a broken link, a FIFO, a device: said as such
    if path.suffix.lower() in EXTENSIONS:
        raise SourceError(f"{printable(path)}: one image is not an image source; give the folder that holds "
                          "it (to search with it: lookalike search INDEX IMAGE)")
    raise SourceError(f"{printable(path)}: not an image source (expected a folder, a .npy file, "
                      "an STL-10 .bin file, or 'sample')")


def files_source(paths: Sequence[str | os.PathLike], size: int = 96) -> FolderSource:
    """The image files `paths`, an explicit list (uploads saved by a server, say), as one
    source: a folder source over their common folder, holding just these files in this
    order. Each file's header is checked now: one that is not a readable image is a
    one-line `SourceError` naming it."""
    if not paths:
        raise SourceError("no image files given")
    files = [Path(p).resolve() for p in paths]
    for f in files:
        check_file(f)
        read_header(f)
    root = Path(os.path.commonpath([f.parent for f in files]))
    return FolderSource(root, size=size, progress=False, files=[f.relative_to(root).as_posix() for f in files],
                        name=f"files:{root}")


def _sample(text: str) -> SampleSource:
    """The sample set a `sample[:N[:SEED[:SIZE]]]` spec names; each field is range-checked by
    `SampleSource`."""
    parts = text.split(":")[1:]
    if len(parts) > 3 or not all(p.isascii() and p.isdigit() for p in parts):
        raise SourceError(f"{printable(text)}: expected sample, sample:N, sample:N:SEED or sample:N:SEED:SIZE, "
                          "with whole numbers N >= 1, SEED >= 0, SIZE in pixels")
    numbers = [int(p) if len(p) <= 40 else 10**40 for p in parts]  # a longer one is out of range anyway
    return SampleSource(*numbers)


def open_piece(piece: Piece) -> Source:
    """Reopen `piece` here (what `piece.open()` does; a function to hand to a process pool):
    a source of `len(piece)` images, identical to images start to stop of the one cut."""
    if piece.files is not None:
        return FolderSource(piece.spec, size=piece.size, progress=False, files=piece.files,
                            name=f"folder:{piece.spec}[{piece.start}:{piece.stop}]")
    whole = open_source(piece.spec, size=piece.size, progress=False)
    if len(whole) != piece.count:
        raise SourceError(f"{printable(piece.spec)}: holds {len(whole)} images, {piece.count} when it was cut "
                          "into pieces; it changed in between")
    rows = np.arange(piece.start, piece.stop) if piece.positions is None else np.asarray(piece.positions)
    return whole.subset(rows, f"{whole.name}[{piece.start}:{piece.stop}]")
