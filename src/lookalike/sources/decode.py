"""One image in, uint8 RGB out: the decoding every source and every query shares.

`load_image` takes a path, bytes, a binary file object or an array; EXIF orientation is
applied, transparency is laid on white, the image is made RGB and, with `size`, resized so
that its shorter side is `size` and centre-cropped. `read_header` checks a file without
decoding its pixels (format, size, mode), which is what a folder does when it is opened.
"""

from __future__ import annotations

import io
import os
import warnings
from pathlib import Path
from typing import BinaryIO, Union

import numpy as np
from PIL import Image, ImageOps

from ..errors import SourceError

# Refuse images above this many pixels: a small file that decodes to gigabytes is an attack.
MAX_PIXELS = 64_000_000

ImageInput = Union[str, os.PathLike, bytes, bytearray, memoryview, BinaryIO, np.ndarray]


def describe_input(image: ImageInput) -> str:
    """How errors name an input: its path, or <bytes>, <file>, <array>."""
    if isinstance(image, (str, os.PathLike)):
        return str(image)
    if isinstance(image, (bytes, bytearray, memoryview)):
        return "<bytes>"
    if isinstance(image, np.ndarray):
        return "<array>"
    return str(getattr(image, "name", None) or "<file>") if hasattr(image, "read") else "<unknown>"


def load_image(image: ImageInput, size: int | None) -> np.ndarray:
    """Decode one image to uint8 RGB of shape (size, size, 3), or (h, w, 3) when `size` is None.

    Parameters
    ----------
    image : a file path; the bytes of an encoded file (JPEG, PNG, WebP, ...); a binary file
        object; or an array of uint8 pixels of shape (h, w) (grey), (h, w, 3) (RGB) or
        (h, w, 4) (RGBA, laid on white). Float arrays are refused rather than guessed at.
    size : side of the square result, or None to keep the image's own size.

    Raises `SourceError` naming the path (or <bytes>, <file>, <array>) when the input is not
    a readable image.
    """
    name = describe_input(image)
    if isinstance(image, np.ndarray):
        return _finish(_from_array(image, name), size)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with _open(image, name) as im:
                _check_pixels(im, name)
                im.seek(0)  # GIF, TIFF, WebP: first frame
                im.load()
                return _finish(ImageOps.exif_transpose(im), size)
    except SourceError:
        raise
    except Exception as exc:  # PIL raises many types for a bad file: _decode_error sorts them
        raise _decode_error(name, exc) from None


def read_header(path: str | os.PathLike) -> tuple[int, int]:
    """Open `path` as an image without decoding its pixels; returns (width, height).

    Raises `SourceError` as `load_image` does for a file that is not an image or is too large.
    """
    name = str(path)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as im:
                _check_pixels(im, name)
                return im.size
    except SourceError:
        raise
    except Exception as exc:  # as in load_image
        raise _decode_error(name, exc) from None


def resize_crop(im: Image.Image, size: int) -> Image.Image:
    """Resize the shorter side to `size` (antialiased), then crop the centre square."""
    w, h = im.size
    scale = size / min(w, h)
    nw, nh = max(size, round(w * scale)), max(size, round(h * scale))
    im = im.resize((nw, nh), Image.Resampling.BILINEAR, reducing_gap=3.0)
    left, top = (nw - size) // 2, (nh - size) // 2
    return im.crop((left, top, left + size, top + size))


def _open(image: ImageInput, name: str) -> Image.Image:
    if isinstance(image, (str, os.PathLike)):
        return Image.open(Path(image))
    if isinstance(image, (bytes, bytearray, memoryview)):
        return Image.open(io.BytesIO(bytes(image)))
    if hasattr(image, "read"):
        seekable = getattr(image, "seekable", lambda: False)()
        return Image.open(image if seekable else io.BytesIO(image.read()))
    raise SourceError(f"{name}: expected a path, bytes, a binary file or an array, "
                      f"got {type(image).__name__}")


def _check_pixels(im: Image.Image, name: str) -> None:
    if im.width * im.height > MAX_PIXELS:
        raise SourceError(f"{name}: refused, {im.width}x{im.height} pixels is over the "
                          f"{MAX_PIXELS:,} limit (decompression bomb?)")


def _from_array(array: np.ndarray, name: str) -> Image.Image:
    if array.dtype != np.uint8:
        raise SourceError(f"{name}: pixels of dtype {array.dtype}; give uint8 values 0-255 "
                          "(from floats in [0, 1]: (x * 255).round().astype(np.uint8))")
    if array.ndim == 3 and array.shape[-1] == 1:
        array = array[..., 0]
    if not (array.ndim == 2 or (array.ndim == 3 and array.shape[-1] in (3, 4))) or 0 in array.shape:
        raise SourceError(f"{name}: shape {array.shape} is not an image (h, w), (h, w, 3) or (h, w, 4)")
    im = Image.fromarray(np.ascontiguousarray(array))
    _check_pixels(im, name)
    return im


def _finish(im: Image.Image, size: int | None) -> np.ndarray:
    """Transparency on white, RGB, then resized and cropped when `size` is given."""
    if im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info):
        im = im.convert("RGBA")
        background = Image.new("RGBA", im.size, (255, 255, 255, 255))
        im = Image.alpha_composite(background, im)
    im = im.convert("RGB")
    if size is not None:
        im = resize_crop(im, size)
    return np.asarray(im, dtype=np.uint8)


def _decode_error(name: str, exc: BaseException) -> Exception:
    """The one-line SourceError for what PIL or the OS raised while reading `name`; anything
    not about the file (a bug) is returned as it is, to keep its traceback."""
    if isinstance(exc, (Image.DecompressionBombError, Image.DecompressionBombWarning)):
        return SourceError(f"{name}: refused as a decompression bomb ({exc})")
    if isinstance(exc, FileNotFoundError):
        return SourceError(f"{name}: no such file")
    if isinstance(exc, PermissionError):
        return SourceError(f"{name}: permission denied")
    if isinstance(exc, IsADirectoryError):
        return SourceError(f"{name}: is a folder, not an image file")
    if isinstance(exc, Image.UnidentifiedImageError):
        return SourceError(f"{name}: not an image file PIL can read")
    if isinstance(exc, (OSError, SyntaxError, ValueError, EOFError)):
        return SourceError(f"{name}: corrupt or truncated image ({exc})")
    return exc
