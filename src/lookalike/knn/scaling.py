"""Powers of two that keep arithmetic within range: multiplying by one is exact (short of
underflow), so data scaled by it has the same neighbours, and distances that scale back
exactly. The engine's screen, its float64 rerank, and the float32 libraries beside it use them.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np
import torch

from .blocks import ranges

if TYPE_CHECKING:
    from .metrics import Metric

# The float64 rerank works on rows scaled by a power of two up to 2^500 (its squares and
# products stay within float64's range), so tiny float64 values keep their distances apart.
RERANK_SCALE_EXP = 500


def pow2_scale(amax: torch.Tensor, limit: int = 1022) -> torch.Tensor:
    """float64 powers of two 2^-e that bring each `amax` into [0.5, 1) (1 for 0), with e
    clamped to [-limit, limit]. Multiplying by a power of two is exact short of underflow."""
    _, e = torch.frexp(amax.double())
    return torch.ldexp(torch.ones_like(amax, dtype=torch.float64), (-e).clamp_(-limit, limit))


def pow2_of(amax: float, limit: int = 1022) -> float:
    """`pow2_scale` of one value, in Python floats (a search of a few queries calls this for
    every search: torch's tensor, frexp and ldexp took about 20 us)."""
    _, e = math.frexp(amax)
    return math.ldexp(1.0, min(max(-e, -limit), limit))


COMFORT = 2.0**20  # float32 squares and sums of values in [2^-20, 2^20] neither overflow nor underflow
# (squares within 2^-40 .. 2^40, sums of up to 2^31 of them within 2^71: far from both ends)


def float32_scale(m: Metric, X: np.ndarray) -> float:
    """The power of two that brings X's largest value near 1 when it lies outside
    [2^-20, 2^20] (1.0 inside, and for cosine, whose rows are scaled one by one)."""
    top = float(max((np.abs(X[lo:hi]).max(initial=0) for lo, hi in ranges(len(X), 4096)), default=0.0))
    if m.normalised or top == 0 or 1 / COMFORT <= top <= COMFORT:
        return 1.0
    return pow2_of(top, 125)


def rescaled(m: Metric, X: np.ndarray, scale: float) -> np.ndarray:
    """X times `scale`; cosine rows each times their own power of two where some row lies
    outside [2^-20, 2^20]. X itself when nothing changes."""
    if m.normalised:
        top = np.concatenate([np.abs(X[lo:hi]).max(axis=1, initial=0) for lo, hi in ranges(len(X), 4096)])
        if ((top == 0) | ((top >= 1 / COMFORT) & (top <= COMFORT))).all():
            return X
        s = pow2_scale(torch.from_numpy(top.astype(np.float64))).numpy()
        return (X * s[:, None]).astype(X.dtype if X.dtype == np.float64 else np.float32)
    return X if scale == 1.0 else (X * scale).astype(X.dtype if X.dtype == np.float64 else np.float32)
