"""The edits a copy of a photo may have gone through, by name: what `lookalike eval` queries with.

Each edit takes a PIL RGB image and a random generator and returns a new RGB image; the
generator decides only where (a crop's or a bar's place, the words of a caption), so the
same seed gives the same copy. Two edits joined by `+` are applied left to right
(`crop50+jpeg15`: crop, then save the crop as JPEG).

=============  =========================================================================
crop50         half of the area (each side x 0.71) at a random place
rotate15       rotated 15 degrees about the centre, same size, corners black
grey           greyscale (three equal channels)
jpeg15         saved as JPEG at quality 15 and read back
thumb80        a thumbnail whose longer side is 80 pixels
bar            a black bar across the whole width covering a fifth of the image
text           a caption in white on a dark band covering a fifth of the image
mirror_bright  mirrored left to right and 30% brighter
=============  =========================================================================
"""

from __future__ import annotations

import io
from collections.abc import Callable, Iterable

import numpy as np
from PIL import Image, ImageDraw, ImageEnhance, ImageFont

from ..errors import InvalidParameter

Edit = Callable[[Image.Image, np.random.Generator], Image.Image]
WORDS = ("lookalike", "copy", "holiday", "2024", "sample", "photo", "image", "search", "found", "hello")


def crop50(im: Image.Image, rng: np.random.Generator) -> Image.Image:
    w, h = im.size
    cw, ch = max(1, round(w * 0.5 ** 0.5)), max(1, round(h * 0.5 ** 0.5))
    left, top = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
    return im.crop((left, top, left + cw, top + ch))


def rotate15(im: Image.Image, rng: np.random.Generator) -> Image.Image:
    return im.rotate(15, resample=Image.Resampling.BILINEAR, fillcolor=(0, 0, 0))


def grey(im: Image.Image, rng: np.random.Generator) -> Image.Image:
    return im.convert("L").convert("RGB")


def jpeg15(im: Image.Image, rng: np.random.Generator) -> Image.Image:
    buf = io.BytesIO()
    im.save(buf, "JPEG", quality=15)
    buf.seek(0)
    with Image.open(buf) as out:
        return out.convert("RGB")


def thumb80(im: Image.Image, rng: np.random.Generator) -> Image.Image:
    w, h = im.size
    scale = 80 / max(w, h)
    return im.resize((max(1, round(w * scale)), max(1, round(h * scale))), Image.Resampling.BILINEAR,
                     reducing_gap=3.0)


def _band(im: Image.Image, rng: np.random.Generator) -> tuple[int, int]:
    """(top, bottom) of a full-width band covering a fifth of `im`, at a random height."""
    h = im.size[1]
    tall = max(1, round(h / 5))
    top = int(rng.integers(0, h - tall + 1))
    return top, top + tall


def bar(im: Image.Image, rng: np.random.Generator) -> Image.Image:
    top, bottom = _band(im, rng)
    out = im.copy()
    ImageDraw.Draw(out).rectangle((0, top, im.size[0] - 1, bottom - 1), fill=(0, 0, 0))
    return out


def text(im: Image.Image, rng: np.random.Generator) -> Image.Image:
    top, bottom = _band(im, rng)
    out = im.copy()
    draw = ImageDraw.Draw(out)
    draw.rectangle((0, top, im.size[0] - 1, bottom - 1), fill=(32, 32, 32))
    caption = " ".join(rng.choice(WORDS, 3))
    font = ImageFont.load_default(size=max(8, round((bottom - top) * 0.7)))
    draw.text((im.size[0] * 0.03, top + (bottom - top) * 0.1), caption, fill=(255, 255, 255), font=font)
    return out


def mirror_bright(im: Image.Image, rng: np.random.Generator) -> Image.Image:
    return ImageEnhance.Brightness(im.transpose(Image.Transpose.FLIP_LEFT_RIGHT)).enhance(1.3)


EDITS: dict[str, Edit] = {f.__name__: f for f in (crop50, rotate15, grey, jpeg15, thumb80, bar, text, mirror_bright)}
# What `lookalike eval` queries with unless told: every edit alone, and four pairs.
DEFAULT_EDITS = (*EDITS, "crop50+jpeg15", "grey+thumb80", "rotate15+bar", "mirror_bright+text")


def parse_edits(spec: str | Iterable[str]) -> tuple[str, ...]:
    """Edit names from 'a,b,c+d' (or a list of names), checked; an unknown one is refused
    in one line that lists those known."""
    names = [n.strip() for n in (spec.split(",") if isinstance(spec, str) else spec)]
    if not names or any(not n for n in names):
        raise InvalidParameter(f"edits {spec!r}: give names separated by commas, e.g. crop50,grey,crop50+jpeg15")
    for name in names:
        for part in name.split("+"):
            if part not in EDITS:
                raise InvalidParameter(f"unknown edit {part!r}; known edits: {', '.join(EDITS)} "
                                       "(join two with +, e.g. crop50+jpeg15)")
    return tuple(dict.fromkeys(names))


def apply_edit(name: str, im: Image.Image, rng: np.random.Generator) -> Image.Image:
    """`im` (RGB) after edit `name`, one name or several joined by '+', applied left to right."""
    for part in name.split("+"):
        im = EDITS[part](im, rng)
    return im
