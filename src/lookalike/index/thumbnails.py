"""Small pictures of the indexed images, kept in the index itself (table `thumbnails`), so
that the grid, search results and a web page can show an image whose file has moved or gone.

A thumbnail is the square the model saw (the source's pixels as read), shrunk to at most
`SIDE` pixels a side and stored as a JPEG of a few KB, in the same commit as the image.
"""

from __future__ import annotations

import io

import numpy as np

from ..sources.base import Source

SIDE = 128
MEDIA_TYPE = "image/jpeg"
QUALITY = 85


def encode(image: np.ndarray) -> bytes:
    """One uint8 RGB image (h, w, 3) as a JPEG thumbnail of at most `SIDE` pixels a side."""
    from PIL import Image

    im = Image.fromarray(np.ascontiguousarray(image, dtype=np.uint8))
    im.thumbnail((SIDE, SIDE), Image.Resampling.LANCZOS)
    buf = io.BytesIO()
    im.save(buf, format="JPEG", quality=QUALITY, optimize=True)
    return buf.getvalue()


def of_source(source: Source, batch_size: int = 64) -> list[bytes | None]:
    """A thumbnail of each image of `source` (None for one that cannot be read now)."""
    out: list[bytes | None] = []
    for lo in range(0, len(source), batch_size):
        rows = list(range(lo, min(lo + batch_size, len(source))))
        images, failed = source.read_available(rows)
        it = iter(images)
        out += [None if j in failed else encode(next(it)) for j in range(len(rows))]
    return out


def decode(data: bytes, size: int) -> np.ndarray:
    """A stored thumbnail as uint8 pixels (size, size, 3)."""
    from ..sources.decode import load_image

    return load_image(data, size)
