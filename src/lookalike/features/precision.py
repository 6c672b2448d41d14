"""The CNN's precision: what `--precision` may say for feature extraction.

'auto' is decided by measuring (`lookalike.features.calibrate`): bf16 where it is faster on
the machine at hand and keeps the features within cosine 0.999 of fp32, else fp32.
"""

from __future__ import annotations

from ..errors import ModelError

# The kNN screen has its own list in `lookalike.knn.precision.SCREEN_PRECISIONS`.
PRECISIONS = ("auto", "fp32", "bf16")


def check_precision(precision: str) -> str:
    """`precision` if lookalike knows it; else one line naming it and the choices."""
    if precision not in PRECISIONS:
        raise ModelError(f"unknown precision {precision!r}; use {', '.join(PRECISIONS)}")
    return precision
