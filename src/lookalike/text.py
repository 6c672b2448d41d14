"""Text shown to people: names from the outside world made safe to print on one line, and
times and distances written as people read them."""

from __future__ import annotations


def printable(name: object) -> str:
    """`name` with control characters (newlines, tabs, escape sequences) written as escapes,
    so that a crafted file name cannot fake a line of output or move the cursor."""
    text = str(name)
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def seconds(t: float) -> str:
    """A time for people: milliseconds below 0.1 s ('12.3 ms'), else seconds ('1.23 s')."""
    return f"{t * 1e3:.1f} ms" if t < 0.1 else f"{t:.2f} s"


def distance(d: float, digits: int = 4) -> str:
    """A distance to `digits` decimals, never '-0.0000': a cosine distance of an image to a
    near copy can come out a rounding below zero (-1e-8), which reads as a sign."""
    text = f"{d:.{digits}f}"
    return text[1:] if text.startswith("-") and not text.strip("-0.") else text
