"""Uploaded images: checked before anything is decoded, and stored under names the server
chooses.

`check_upload` judges a file by its own bytes, never by its name or Content-Type: empty
(400), over `max_upload_bytes` (413), not JPEG, PNG, WebP, GIF, BMP or TIFF by its magic
number (415), more than `max_pixels` by its header (413, before a pixel is decoded: a
20,000 x 20,000 PNG of a few kilobytes is refused here), a header PIL cannot read (415).
Decoding itself is `load_image`'s (EXIF orientation, RGB, size), whose errors for a
truncated or corrupt file become 415 too.

`store_uploads` writes accepted files into a fresh folder of random name under the upload
folder, each named by a random token and the extension of its format: a client's file name
is never used for anything but the image's key. `discard_uploads` deletes the files that the
index does not keep: duplicates of indexed images, those of an add that failed, and the file
of an image deleted through the API (a file stays exactly as long as its image is indexed).
"""

from __future__ import annotations

import io
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..atomic import check_writable_folder
from ..errors import SourceError, write_error
from ..sources.decode import load_image
from ..sources.quiet import pil_quiet
from ..text import printable
from .errors import BadParameter, NotAnImage, TooLarge

# magic numbers -> format (the first bytes of each format lookalike reads)
MAGIC = ((b"\xff\xd8\xff", "JPEG"), (b"\x89PNG\r\n\x1a\n", "PNG"), (b"GIF87a", "GIF"), (b"GIF89a", "GIF"),
         (b"BM", "BMP"), (b"II*\x00", "TIFF"), (b"MM\x00*", "TIFF"))
EXTENSIONS = {"JPEG": ".jpg", "PNG": ".png", "GIF": ".gif", "BMP": ".bmp", "TIFF": ".tif", "WEBP": ".webp"}


@dataclass(frozen=True)
class Upload:
    """One uploaded file that passed `check_upload`."""

    name: str  # the client's file name, printable, for messages and keys only
    data: bytes
    format: str
    width: int
    height: int


def sniff(data: bytes) -> str | None:
    """The format of `data` by its first bytes, or None."""
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WEBP"
    return next((fmt for magic, fmt in MAGIC if data.startswith(magic)), None)


def check_upload(data: bytes, name: str, *, max_bytes: int, max_pixels: int) -> Upload:
    """`data` as an `Upload`, or the `ApiError` that says why not (see the module docstring)."""
    shown = printable(name or "upload")[:100]
    if not data:
        raise BadParameter(f"{shown}: empty file (0 bytes)", code="empty_upload")
    if len(data) > max_bytes:
        raise TooLarge(f"{shown}: {len(data):,} bytes is over this server's limit of {max_bytes:,} bytes per image")
    fmt = sniff(data)
    if fmt is None:
        raise NotAnImage(f"{shown}: not an image this server reads (JPEG, PNG, WebP, GIF, BMP or TIFF), "
                         "judged by its content, not its name")
    from PIL import Image

    try:
        with pil_quiet(), Image.open(io.BytesIO(data), formats=[fmt]) as im:
            width, height = im.size
    except Image.DecompressionBombError as exc:
        raise TooLarge(f"{shown}: refused before decoding, {_pixels(exc)} pixels is over this server's limit of "
                       f"{max_pixels:,} pixels") from None
    except Exception as exc:  # PIL raises many types for a damaged header
        raise NotAnImage(f"{shown}: a damaged {fmt} file ({printable(exc)[:120] or type(exc).__name__})") from None
    if width * height > max_pixels:
        raise TooLarge(f"{shown}: refused before decoding, {width}x{height} = {width * height:,} pixels is over "
                       f"this server's limit of {max_pixels:,} pixels")
    return Upload(shown, data, fmt, width, height)


def decode(upload: Upload, size: int) -> np.ndarray:
    """The pixels of an accepted upload at the index's input size; a file that fails to decode
    (truncated, corrupt) is 415."""
    try:
        return load_image(upload.data, size)
    except SourceError as exc:
        message = str(exc).replace("<bytes>", upload.name, 1)
        raise NotAnImage(message, code="corrupt_image") from None


def store_uploads(uploads: list[Upload], root: Path) -> list[Path]:
    """Write `uploads` into a new folder of random name under `root` (made if needed); returns
    their paths, in order. Each file is named `<random token><extension of its format>`."""
    paths = []
    try:
        root.mkdir(parents=True, exist_ok=True)
        check_writable_folder(root)
        folder = root / secrets.token_hex(8)
        folder.mkdir()
        for upload in uploads:
            path = folder / f"{secrets.token_hex(8)}{EXTENSIONS[upload.format]}"
            paths.append(path)
            with open(path, "xb") as f:
                f.write(upload.data)
                f.flush()
                os.fsync(f.fileno())
    except OSError as exc:
        raise write_error(root, exc) from exc
    return paths


def discard_uploads(paths: list[Path]) -> None:
    """Delete stored uploads that the index does not hold (duplicates, a failed add, a deleted
    image), and their folder once it is empty. A file already gone is no error."""
    for path in paths:
        path.unlink(missing_ok=True)
        try:
            path.parent.rmdir()
        except OSError:
            pass  # other images of the same request are still there


def _pixels(exc: Exception) -> str:
    import re

    found = re.search(r"\((\d+) pixels\)", str(exc))
    return f"{int(found.group(1)):,}" if found else "so many"
