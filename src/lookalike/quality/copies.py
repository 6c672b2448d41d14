"""Originals and their edited copies, and both brought to a network's square input.

A folder's originals are read whole (EXIF-oriented, RGB; the longer side brought down to
`MAX_SIDE`), so that a crop or a thumbnail is made from the photo, not from a small square
cut of it; other sources (.npy, STL-10, the sample set) give their images as stored.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image

from ..errors import InvalidParameter, SourceError
from ..sources.base import Skipped, Source
from ..sources.decode import fit_square, load_image
from ..sources.folder import FolderSource
from ..text import printable
from .edits import apply_edit

MAX_SIDE = 1024  # originals larger than this are shrunk first: every edit stays cheap


@dataclass
class Copy:
    """One query: `image` is original number `original` after edit `edit`."""

    image: Image.Image
    original: int
    edit: str


def read_originals(source: Source) -> tuple[list[Image.Image], list[str]]:
    """(images, ids) of every image of `source` that reads; at least two are needed."""
    if len(source) < 2:
        raise InvalidParameter(f"{printable(source.name)}: {len(source)} image(s); an evaluation needs at least "
                               "two originals")
    images, ids = [], []
    for i in range(len(source)):
        try:
            pixels = _whole(source, i)
        except SourceError as exc:
            source.note_skipped(Skipped.of(exc, source.location(i)))
            continue
        im = Image.fromarray(pixels)
        if max(im.size) > MAX_SIDE:
            im.thumbnail((MAX_SIDE, MAX_SIDE), Image.Resampling.BILINEAR, reducing_gap=3.0)
        images.append(im)
        ids.append(source.ids[i])
    if len(images) < 2:
        raise InvalidParameter(f"{printable(source.name)}: {len(images)} readable image(s); an evaluation needs at "
                               "least two originals")
    return images, ids


def photo_originals() -> tuple[list[Image.Image], list[str]]:
    """The real photographs that ship in installed packages (`sources.sample.photo_paths`),
    whole, with their file names: the originals of the demo's evaluation."""
    from ..sources.sample import photo_paths

    images = []
    for path in photo_paths():
        with Image.open(path) as im:
            images.append(im.convert("RGB"))
    return images, [p.name for p in photo_paths()]


def _whole(source: Source, i: int) -> np.ndarray:
    if isinstance(source, FolderSource):
        return load_image(source.path(i), None)
    return source.read([i])[0]


def make_copies(originals: Sequence[Image.Image], edits: Sequence[str], seed: int = 0) -> list[Copy]:
    """Every original after every edit, originals in order, edits in order within each. Copy
    (original j, edit e) draws from its own generator seeded with (seed, j, e), so it does
    not depend on which other copies are made."""
    return [Copy(apply_edit(edit, im, np.random.default_rng([seed, j, e])), j, edit)
            for j, im in enumerate(originals) for e, edit in enumerate(edits)]


def squares(images: Sequence[Image.Image], size: int, resize: str) -> np.ndarray:
    """uint8 (n, size, size, 3): each image made square by `resize` ('crop' or 'pad')."""
    out = np.empty((len(images), size, size, 3), np.uint8)
    for r, im in enumerate(images):
        out[r] = np.asarray(fit_square(im.convert("RGB"), size, resize))
    return out


def source_squares(source: Source, rows: Sequence[int], size: int, resize: str) -> tuple[np.ndarray, list[int]]:
    """(pixels, rows kept) of `rows` of `source` at `size` x `size` by `resize`; a folder's
    files are decoded with that policy, other sources' images are fitted as stored. Images
    that fail to decode are left out and noted in `source.skipped`."""
    rows = [int(r) for r in rows]
    if isinstance(source, FolderSource):
        kept, pixels = [], []
        for r in rows:
            try:
                pixels.append(load_image(source.path(r), size, resize))
                kept.append(r)
            except SourceError as exc:
                source.note_skipped(Skipped.of(exc, source.location(r)))
        return (np.stack(pixels) if pixels else np.empty((0, size, size, 3), np.uint8)), kept
    images, failed = source.read_available(rows)
    kept = [r for j, r in enumerate(rows) if j not in failed]
    return squares([Image.fromarray(x) for x in images], size, resize), kept
