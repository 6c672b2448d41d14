"""Every image mode PIL reads, made 8-bit RGB: `to_rgb(im)`.

How each mode becomes RGB (grey results are repeated in R, G and B):

================================================  =========================================
mode                                              how
================================================  =========================================
1, L, P, RGB, RGBX, CMYK, YCbCr, LAB, HSV         PIL's own conversion to RGB
LA, PA, RGBA, P with an alpha palette or a        laid on white (alpha compositing)
transparent index, 1/L/RGB with a transparent
colour
La, RGBa (premultiplied alpha)                    laid on white: colour + 255 - alpha
I;16, I;16L, I;16B, I;16N (unsigned 16-bit)       the format's range: v / 257, rounded, so
                                                  0..65535 -> 0..255 (an image that uses
                                                  12 of its 16 bits comes out dark, as it is)
I (32-bit signed integers)                        0..255: as they are (8-bit values in a
                                                  wide container); else within 0..65535: as
                                                  16-bit, v / 257; else the image's own
                                                  minimum..maximum stretched to 0..255
F (32-bit floats)                                 within [0, 1]: v * 255, rounded; else the
                                                  image's own minimum..maximum stretched to
                                                  0..255. NaN is black, +inf white, -inf
                                                  black; an image without one finite value
                                                  is refused
================================================  =========================================

A stretched image that holds one value only is black. A 16-bit, I or F image with a
transparent value (PNG tRNS) shows it white. Any other mode is refused with a
`SourceError`, never guessed at. Multi-frame files (GIF, APNG, WebP, TIFF pages) are read by
their first frame, before this conversion.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

from ..errors import SourceError

PLAIN = frozenset({"1", "L", "P", "RGB", "RGBX", "CMYK", "YCbCr", "LAB", "HSV"})
ALPHA = frozenset({"LA", "PA", "RGBA"})
PREMULTIPLIED = frozenset({"La", "RGBa"})
SIXTEEN_BIT = frozenset({"I;16", "I;16L", "I;16B", "I;16N"})
MODES = PLAIN | ALPHA | PREMULTIPLIED | SIXTEEN_BIT | {"I", "F"}

# round(v / 257) for every 16-bit value: 0 -> 0, 65535 -> 255, without a float copy of the image
_SIXTEEN_TO_EIGHT = ((np.arange(65536, dtype=np.uint32) + 128) // 257).astype(np.uint8)


def to_rgb(im: Image.Image) -> Image.Image:
    """`im` as an RGB image, transparency laid on white (the table in the module docstring).

    Raises `SourceError` (without a name: the caller adds it) for a mode lookalike does not
    convert, or a float image with no finite value.
    """
    mode = im.mode
    if mode not in MODES:
        raise SourceError(f"image mode {mode} is not supported")
    if mode in SIXTEEN_BIT or mode in ("I", "F"):
        return _grey_to_rgb(_wide_to_grey(im))
    if mode in PREMULTIPLIED:
        pixels = np.asarray(im).astype(np.int16)
        colour, alpha = pixels[..., :-1], pixels[..., -1:]
        out = np.clip(colour + 255 - alpha, 0, 255).astype(np.uint8)
        return _grey_to_rgb(out[..., 0]) if mode == "La" else Image.fromarray(out, "RGB")
    if mode in ALPHA or _has_transparency(im):
        rgba = im.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    if "transparency" in im.info:  # a value PIL cannot apply (bytes for a non-palette image)
        im.info.pop("transparency")
    return im.convert("RGB")


def _has_transparency(im: Image.Image) -> bool:
    """A palette with alpha, or a transparent colour that PIL can turn into alpha."""
    if im.mode == "P":
        return "transparency" in im.info or (im.palette is not None and im.palette.mode.endswith("A"))
    value = im.info.get("transparency")
    if im.mode in ("1", "L"):
        return isinstance(value, int)
    return im.mode == "RGB" and isinstance(value, tuple) and len(value) == 3


def _wide_to_grey(im: Image.Image) -> np.ndarray:
    """uint8 grey pixels of a 16-bit, I or F image (the rules of the module docstring)."""
    transparent = im.info.get("transparency")
    if im.mode in SIXTEEN_BIT:
        raw = np.asarray(im)
        grey = _SIXTEEN_TO_EIGHT[raw]
    elif im.mode == "I":
        raw = np.asarray(im)
        grey = _int_to_grey(raw)
    else:
        raw = np.array(im, dtype=np.float32)
        transparent = None  # a float image has no transparent value
        grey = _float_to_grey(raw)
    if isinstance(transparent, int):
        grey[raw == transparent] = 255
    return grey


def _int_to_grey(raw: np.ndarray) -> np.ndarray:
    lo, hi = int(raw.min()), int(raw.max())
    if lo >= 0 and hi <= 255:
        return raw.astype(np.uint8)
    if lo >= 0 and hi <= 65535:
        return _SIXTEEN_TO_EIGHT[raw]
    return _stretch(raw.astype(np.float32), lo, hi)


def _float_to_grey(raw: np.ndarray) -> np.ndarray:
    """`raw` (a writable float32 copy) to uint8 grey; it is overwritten."""
    finite = np.isfinite(raw)
    if not finite.any():
        raise SourceError("a float image without one finite pixel value")
    lo = float(np.min(raw, where=finite, initial=np.inf))
    hi = float(np.max(raw, where=finite, initial=-np.inf))
    if lo >= 0.0 and hi <= 1.0:
        with np.errstate(all="ignore"):
            raw *= 255.0
        return _to_uint8(raw)
    return _stretch(raw, lo, hi)


def _stretch(values: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """float32 `values` from lo..hi to 0..255 uint8, in place; a flat image is black."""
    with np.errstate(all="ignore"):
        values -= lo
        if hi > lo:
            values *= 255.0 / (hi - lo)
        else:
            np.multiply(values, 0.0, out=values, where=np.isfinite(values))
    return _to_uint8(values)


def _to_uint8(values: np.ndarray) -> np.ndarray:
    np.nan_to_num(values, copy=False, nan=0.0, posinf=255.0, neginf=0.0)
    np.clip(values, 0.0, 255.0, out=values)
    return np.rint(values, out=values).astype(np.uint8)


def _grey_to_rgb(grey: np.ndarray) -> Image.Image:
    return Image.fromarray(grey, "L").convert("RGB")
