"""One image in, uint8 RGB out: the decoding every source and every query shares.

`load_image` takes a path, bytes, a binary file object or an array; EXIF orientation is
applied, the image is made RGB on white (every PIL mode, see `modes.py`) and, with `size`,
centre-cropped to a square and resized to `size` x `size`. `read_header` checks a file
without decoding its pixels (format, size, mode), which is what a folder does when opened.

Limits, so that no input makes lookalike block or run out of memory:

- Paths must name regular files (`files.py`): a FIFO, a device or a socket is never opened.
- Formats: JPEG (and MPO), PNG (and APNG), WebP, BMP, GIF and TIFF, recognised by their
  content; anything else PIL might read (EPS, PDF, ICO, PSD, ...) is refused, so fewer
  parsers see untrusted files and no external program (Ghostscript) ever runs.
- At most `MAX_PIXELS` pixels by the file's header, checked before any pixel is decoded.
  Every later step only shrinks the image: a JPEG is decoded at 1/2, 1/4 or 1/8 scale when
  that still covers `size` (`draft`), the centre square is cut before resizing, and the
  result is `size` x `size` with `MIN_SIZE <= size <= MAX_SIZE`. So the largest image held
  is the decoded file itself, and a 60,000 x 1 strip costs no more than its pixels.
- Threads decode at most `DECODE_BUDGET` pixels at once between them; a thread waits for
  room rather than pile up another large image.
- Files and streams of at most `MAX_FILE_BYTES` (some decoders, WebP's, read a whole file
  into memory when they open it); a stream that cannot seek is read whole, up to that.
- The first frame of a multi-frame file (GIF, APNG, animated WebP, multi-page TIFF).
- PIL's warnings are silenced (`quiet.py`); what they mean shows as a refused image or not
  at all.
"""

from __future__ import annotations

import io
import os
import re
import struct
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import BinaryIO, Union

import numpy as np
from PIL import Image, ImageOps

from ..errors import SourceError
from ..text import printable
from .files import open_file
from .modes import MODES, to_rgb
from .quiet import pil_quiet

# Refuse images above this many pixels: a small file that decodes to gigabytes is an attack.
MAX_PIXELS = 64_000_000
# Sides a source may resize images to: 16 x 16 is the smallest a CNN sees anything in, and a
# 1024 x 1024 RGB image is 3 MiB, so a batch of a few hundred still fits in memory.
MIN_SIZE, MAX_SIZE = 16, 1024
# The largest image file or stream: a 64-megapixel 16-bit RGBA TIFF, uncompressed, fits.
MAX_FILE_BYTES = 512 * 2**20
# How an image that is not square becomes the network's square input: "crop" keeps the
# centre square (what the tutorial does), "pad" keeps the whole image, scaled to fit and laid
# on black. `lookalike eval` measured both (docs/quality.md); DEFAULT_RESIZE is the choice.
RESIZES = ("crop", "pad")
DEFAULT_RESIZE = "crop"
# The formats lookalike decodes (PIL's names), whatever a file's name says.
FORMATS = ("JPEG", "PNG", "WEBP", "BMP", "GIF", "TIFF")  # JPEG opens MPO files too

# Pixels decoded at once by all threads together. Folders decode in a thread pool; without
# this, sixteen threads each on a 64-megapixel image would hold over ten gigabytes.
DECODE_BUDGET = 2 * MAX_PIXELS

ImageInput = Union[str, os.PathLike, bytes, bytearray, memoryview, BinaryIO, np.ndarray]


def describe_input(image: ImageInput) -> str:
    """How errors name an input: its path (control characters escaped), or <bytes>,
    <file>, <array>."""
    if isinstance(image, (str, os.PathLike)):
        return printable(os.fspath(image))
    if isinstance(image, (bytes, bytearray, memoryview)):
        return "<bytes>"
    if isinstance(image, np.ndarray):
        return "<array>"
    if hasattr(image, "read"):
        name = getattr(image, "name", None)
        return printable(name) if isinstance(name, (str, bytes)) and name else "<file>"
    return "<unknown>"


def check_size(size: object, what: str = "image size") -> int:
    """`size` as an int within `MIN_SIZE..MAX_SIZE`, or a one-line `SourceError`."""
    if isinstance(size, bool) or not isinstance(size, (int, np.integer)):
        raise SourceError(f"{what} {size!r} is not a whole number of pixels")
    if not MIN_SIZE <= size <= MAX_SIZE:
        raise SourceError(f"{what} {size} is out of range: images are resized to between "
                          f"{MIN_SIZE} and {MAX_SIZE} pixels square")
    return int(size)


def load_image(image: ImageInput, size: int | None, resize: str = DEFAULT_RESIZE) -> np.ndarray:
    """Decode one image to uint8 RGB of shape (size, size, 3), or (h, w, 3) when `size` is None.

    Parameters
    ----------
    image : a file path; the bytes of an encoded file (JPEG, PNG, WebP, BMP, GIF, TIFF); a
        binary file object; or an array of uint8 pixels of shape (h, w) (grey), (h, w, 3)
        (RGB) or (h, w, 4) (RGBA, laid on white). Float arrays are refused rather than
        guessed at.
    size : side of the square result (`MIN_SIZE` to `MAX_SIZE`), or None to keep the
        image's own size.
    resize : how a non-square image becomes square, one of `RESIZES` (see `fit_square`).

    Raises `SourceError` naming the path (or <bytes>, <file>, <array>) when the input is not
    a readable image, is over the limits (module docstring) or `size` is out of range.
    """
    name = describe_input(image)
    if size is not None:
        size = check_size(size)
    check_resize(resize)
    if isinstance(image, np.ndarray):
        return _finish(_from_array(image, name), size, name, resize)
    try:
        with pil_quiet(), _opened(image, name) as im:
            _check_header(im, name)
            if size is not None:
                im.draft(None, (size, size))  # JPEG: decode at a smaller scale that still covers size
            with _decoding(im.width * im.height):
                im.load()
                _orient(im)
                return _finish(im, size, name, resize)
    except SourceError:
        raise
    except Exception as exc:  # PIL raises many types for a bad file: _decode_error sorts them
        raise _decode_error(name, exc) from None


def read_header(path: str | os.PathLike) -> tuple[int, int]:
    """Open `path` as an image without decoding its pixels; returns (width, height).

    Raises `SourceError` as `load_image` does for a file that is not an image lookalike
    reads, is too large or has a mode it cannot convert.
    """
    name = describe_input(path)
    try:
        with pil_quiet(), _opened(path, name) as im:
            _check_header(im, name)
            return im.size
    except SourceError:
        raise
    except Exception as exc:  # as in load_image
        raise _decode_error(name, exc) from None


_budget = threading.Condition()
_decoding_now = 0  # pixels being decoded, under _budget


@contextmanager
def _decoding(pixels: int) -> Iterator[None]:
    """Wait until `pixels` more fit in `DECODE_BUDGET`, and hold them while within."""
    global _decoding_now
    pixels = min(pixels, DECODE_BUDGET)
    with _budget:
        _budget.wait_for(lambda: _decoding_now + pixels <= DECODE_BUDGET)
        _decoding_now += pixels
    try:
        yield
    finally:
        with _budget:
            _decoding_now -= pixels
            _budget.notify_all()


def centre_square(im: Image.Image) -> Image.Image:
    """The largest square at the centre of `im` (`im` itself when it is square)."""
    w, h = im.size
    side = min(w, h)
    if w == h:
        return im
    left, top = (w - side) // 2, (h - side) // 2
    return im.crop((left, top, left + side, top + side))


def resize_crop(im: Image.Image, size: int) -> Image.Image:
    """The centre square of `im`, resized to `size` x `size` (antialiased when shrinking).

    The square is cut first, so no step is larger than `im` or than the result: a long
    strip is never scaled up whole before it is cropped."""
    square = centre_square(im)
    if square.size == (size, size):
        return square
    return square.resize((size, size), Image.Resampling.BILINEAR, reducing_gap=3.0)


def pad_square(im: Image.Image, size: int) -> Image.Image:
    """All of `im`, its longer side scaled to `size`, centred on a black `size` x `size`
    square (a thumbnail, a crop or a screenshot keeps everything it shows)."""
    w, h = im.size
    scale = size / max(w, h)
    inner = (max(1, round(w * scale)), max(1, round(h * scale)))
    if inner != (w, h):
        im = im.resize(inner, Image.Resampling.BILINEAR, reducing_gap=3.0)
    if inner == (size, size):
        return im
    square = Image.new("RGB", (size, size))
    square.paste(im.convert("RGB"), ((size - inner[0]) // 2, (size - inner[1]) // 2))
    return square


def check_resize(resize: object) -> str:
    if resize not in RESIZES:
        raise SourceError(f"unknown resize policy {resize!r}; choose one of {', '.join(RESIZES)}")
    return str(resize)


def fit_square(im: Image.Image, size: int, resize: str = DEFAULT_RESIZE) -> Image.Image:
    """`im` as a `size` x `size` square by the policy `resize`: "crop" (`resize_crop`) or
    "pad" (`pad_square`)."""
    return resize_crop(im, size) if check_resize(resize) == "crop" else pad_square(im, size)


@contextmanager
def _opened(image: ImageInput, name: str) -> Iterator[Image.Image]:
    """`image` opened by PIL, restricted to `FORMATS`; the file is closed on the way out."""
    if isinstance(image, (str, os.PathLike)):
        with open_file(image) as file:
            length = os.fstat(file.fileno()).st_size
            if length == 0:
                raise SourceError(f"{name}: empty file (0 bytes)")
            if length > MAX_FILE_BYTES:
                raise _too_many_bytes(name, f"{length:,}")
            with Image.open(file, formats=_formats()) as im:
                yield im
    elif isinstance(image, (bytes, bytearray, memoryview)):
        if len(image) == 0:
            raise SourceError(f"{name}: empty (0 bytes)")
        if len(image) > MAX_FILE_BYTES:
            raise _too_many_bytes(name, f"{len(image):,}")
        with Image.open(io.BytesIO(bytes(image)), formats=_formats()) as im:
            yield im
    elif hasattr(image, "read"):
        seekable = getattr(image, "seekable", lambda: False)()
        with Image.open(image if seekable else io.BytesIO(_read_stream(image, name)), formats=_formats()) as im:
            yield im
    else:
        raise SourceError(f"{name}: expected a path, bytes, a binary file or an array, "
                          f"got {type(image).__name__}")


def _formats() -> list[str]:
    """`FORMATS` that this PIL can open (a PIL built without WebP has no WEBP opener, and
    asking for it would fail every file)."""
    if any(f not in Image.OPEN for f in FORMATS):
        Image.init()
    return [f for f in FORMATS if f in Image.OPEN]


def _read_stream(stream: BinaryIO, name: str) -> bytes:
    """All of a stream that cannot seek, up to `MAX_FILE_BYTES` (a stream may give less
    than asked on each read)."""
    chunks, total = [], 0
    while total <= MAX_FILE_BYTES:
        chunk = stream.read(min(2**20, MAX_FILE_BYTES + 1 - total))
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)
        total += len(chunk)
    raise _too_many_bytes(name, f"more than {MAX_FILE_BYTES:,}")


def _too_many_bytes(name: str, size: str) -> SourceError:
    return SourceError(f"{name}: refused, {size} bytes is over lookalike's limit of {MAX_FILE_BYTES:,} "
                       "bytes for an image file")


def _check_header(im: Image.Image, name: str) -> None:
    """Refuse, before decoding, an image over `MAX_PIXELS` or in a mode not converted."""
    if im.width * im.height > MAX_PIXELS:
        raise _too_large(name, f"{im.width}x{im.height}")
    if im.mode not in MODES:
        raise SourceError(f"{name}: image mode {im.mode} is not supported")


def _too_large(name: str, pixels: str) -> SourceError:
    return SourceError(f"{name}: refused, {pixels} pixels is over lookalike's limit of "
                       f"{MAX_PIXELS:,} pixels (a decompression bomb?)")


def _orient(im: Image.Image) -> None:
    """Apply EXIF orientation in place; EXIF that does not parse leaves the image as stored."""
    try:
        ImageOps.exif_transpose(im, in_place=True)
    except (OSError, SyntaxError, ValueError, EOFError, struct.error, KeyError, IndexError, TypeError):
        pass


def _from_array(array: np.ndarray, name: str) -> Image.Image:
    if array.dtype != np.uint8:
        raise SourceError(f"{name}: pixels of dtype {array.dtype}; give uint8 values 0-255 "
                          "(from floats in [0, 1]: (x * 255).round().astype(np.uint8))")
    if array.ndim == 3 and array.shape[-1] == 1:
        array = array[..., 0]
    if not (array.ndim == 2 or (array.ndim == 3 and array.shape[-1] in (3, 4))) or 0 in array.shape:
        raise SourceError(f"{name}: shape {array.shape} is not an image (h, w), (h, w, 3) or (h, w, 4)")
    if array.shape[0] * array.shape[1] > MAX_PIXELS:
        raise _too_large(name, f"{array.shape[1]}x{array.shape[0]}")
    return Image.fromarray(np.ascontiguousarray(array))


def _finish(im: Image.Image, size: int | None, name: str, resize: str = DEFAULT_RESIZE) -> np.ndarray:
    """RGB on white; with `size`, the square of `fit_square` (for "crop" the centre square is
    cut before the colours are converted, so no step is larger than needed)."""
    try:
        rgb = to_rgb(centre_square(im) if size is not None and resize == "crop" else im)
    except SourceError as exc:
        raise SourceError(f"{name}: {exc}") from None
    if size is not None:
        rgb = fit_square(rgb, size, resize)
    return np.asarray(rgb, dtype=np.uint8)


_BOMB_PIXELS = re.compile(r"\((\d+) pixels\)")


def _decode_error(name: str, exc: BaseException) -> BaseException:
    """The one-line SourceError for what PIL or the OS raised while reading `name`; anything
    not about the file (a bug, or memory running out) is returned as it is, to keep its
    traceback."""
    if isinstance(exc, (Image.DecompressionBombError, Image.DecompressionBombWarning)):
        found = _BOMB_PIXELS.search(str(exc))
        return _too_large(name, f"{int(found.group(1)):,}" if found else "so many")
    if isinstance(exc, MemoryError):
        return exc
    if isinstance(exc, FileNotFoundError):
        return SourceError(f"{name}: no such file")
    if isinstance(exc, PermissionError):
        return SourceError(f"{name}: permission denied")
    if isinstance(exc, Image.UnidentifiedImageError):
        return SourceError(f"{name}: not an image file lookalike reads (JPEG, PNG, WebP, BMP, GIF or TIFF)")
    if isinstance(exc, (OSError, SyntaxError, ValueError, EOFError, struct.error)) or _raised_in_pil(exc):
        return SourceError(f"{name}: corrupt or truncated image ({printable(exc) or type(exc).__name__})")
    return exc


def _raised_in_pil(exc: BaseException) -> bool:
    """Whether `exc` came out of PIL's own code (a decoder tripping on a crafted file)."""
    tb = exc.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    return tb is not None and str(tb.tb_frame.f_globals.get("__name__", "")).startswith("PIL")
