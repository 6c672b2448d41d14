"""Stage 1 compiled: rows made ready for an int8 screen in one pass each.

`Screen.prepare` of an int8 screen runs about ten torch operations over the rows (scale,
centre, a float64 norm, the step, round, clamp, cast, the quantisation error and its norm),
each a pass over memory and a dispatch: 1,000 queries of 256-d took 1 to 2 ms of a search
of 6 (1,000 x 1,000 rows, k = 10). Here each row is read once, in cache, by one compiled loop.

The arithmetic is `Screen.prepare`'s, step by step in float32 (the scale, a power of two,
is exact; the centring one rounding; the step `amax / 127`; `x / step` rounded half to
even and clamped to +-127; the error `x - q step` in two roundings), and the norms are sums
of float64 squares (by lanes, as the rerank sums: `pairs.LANES`): the rows and the figures
`Screen.bound` reads are those of the torch path, up to the order of the norms' float64
sums (a relative difference of about 1e-16, which the bound's slack covers). Cosine rows
are each scaled by their own power of two (in float64, then cast) and divided by their
norm, summed in float64 and rounded to float32 in both (a sum in another order can round
to another float32 norm: then a unit row differs from torch's in its last bit, within the
normalisation error `Screen.bound` counts, and rarely an int8 value by one step; each
row's quantisation error is measured from its row).
"""

from __future__ import annotations

import numpy as np
import torch

from . import jit
from .pairs import LANES, _lane_amax, _lane_dot, _pow2

try:  # pragma: no cover - whichever environment runs the tests
    from numba import prange
except ImportError:  # pragma: no cover - then `jit.enabled()` is False and nothing here runs
    prange = range

__all__ = ["usable", "int8_rows"]


def usable(x: torch.Tensor) -> bool:
    """Whether `int8_rows` prepares these rows: a CPU tensor of float32 or float64 with
    rows of at least one value, the compiled kernels on."""
    return (x.device.type == "cpu" and x.dtype in (torch.float32, torch.float64) and x.dim() == 2
            and x.shape[1] > 0 and jit.enabled("cpu"))


def int8_rows(x: torch.Tensor, scale: float, mean: torch.Tensor | None, normalised: bool, gamma: float,
              u32: float, split: bool = False) -> tuple:
    """Rows `x` times `scale`, minus `mean` (centred metrics), or (`normalised`: cosine) each
    times its own power of two and made unit length, then quantised: (int8 rows, float64
    norms, float32 squared norms or None, float64 quantisation-error norms, float32 steps),
    as `Screen.prepare` and `Screen.cast` make them. `split` (an int16 screen): two levels,
    rows [q1 q2 q1] of 3d values, the error that of both, and a sixth array, the float64
    norms of the second levels (`Rows.rerr`)."""
    a = np.ascontiguousarray(x.detach().numpy())
    n, d = a.shape
    q = np.empty((n, 3 * d if split else d), np.int8)
    rerr = np.empty(n, np.float64)
    l2 = np.empty(n, np.float64)
    sq = np.empty(n, np.float32)
    qerr = np.empty(n, np.float64)
    step = np.empty(n, np.float32)
    centre = mean is not None
    m = mean.detach().numpy().astype(np.float32) if centre else np.zeros(d, np.float32)
    jit.threads(n)
    _int8_rows(a, a.dtype == np.float64, normalised, np.float32(scale), np.float64(scale), m, centre, np.float64(gamma),
               np.float64(u32), split, q, l2, sq, qerr, step, rerr)
    out = (torch.from_numpy(q), torch.from_numpy(l2), torch.from_numpy(sq) if centre else None,
           torch.from_numpy(qerr), torch.from_numpy(step))
    return (*out, torch.from_numpy(rerr)) if split else out


@jit.njit(parallel=True)
def _int8_rows(a, wide, normalised, scale32, scale64, mean, centre, gamma, u32, split,  # pragma: no cover
               q, l2, sq, qerr, step, rerr):
    n, d = a.shape
    for i in prange(n):
        row = np.empty(d, np.float32)
        err = np.empty(d, np.float32)
        acc = np.empty(LANES)  # sums and maxima by lanes (`pairs.LANES`): loops that vectorise
        if normalised:  # each row times its own power of two, in float64, then cast; then unit length
            s = _pow2(_lane_amax(a[i], acc))
            for t in range(d):
                row[t] = np.float32(np.float64(a[i, t]) * s)
            norm32 = np.float32(np.sqrt(_lane_dot(row, row, 1.0, acc)))
            div = norm32 if norm32 > 0 else np.float32(1.0)
            for t in range(d):
                row[t] = row[t] / div
        else:
            for t in range(d):
                if wide:  # float64 rows are scaled before they are cast, as `Screen.scaled` does
                    v = np.float32(np.float64(a[i, t]) * scale64)
                else:
                    v = np.float32(a[i, t]) * scale32
                row[t] = v - mean[t] if centre else v
        norm = np.sqrt(_lane_dot(row, row, 1.0, acc))
        top = np.float32(_lane_amax(row, acc))  # exact: the largest |value| of float32 values
        l2[i] = norm
        sq[i] = np.float32(norm * norm)
        st = top / np.float32(127.0)
        st = st if st > 0 else np.float32(1.0)
        step[i] = st
        for t in range(d):
            r = np.float32(np.rint(row[t] / st))
            r = min(max(r, np.float32(-127.0)), np.float32(127.0))
            q[i, t] = np.int8(r)
            err[t] = row[t] - r * st
        if split:  # `Screen.cast`'s second level: the residual (err, as torch rounds it) in
            # steps of st / 256, its error in float64 (exact products), the level's norm
            fine = st * np.float32(2.0**-8)
            e64 = np.empty(d)
            r2 = np.empty(d, np.float32)
            for t in range(d):
                v = np.float32(np.rint(err[t] / fine))
                v = min(max(v, np.float32(-127.0)), np.float32(127.0))
                q[i, d + t] = np.int8(v)
                q[i, 2 * d + t] = q[i, t]
                r2[t] = v
                e64[t] = (np.float64(row[t]) - np.float64(q[i, t]) * np.float64(st)) - np.float64(v) * np.float64(fine)
            qerr[i] = np.sqrt(_lane_dot(e64, e64, 1.0, acc)) * (1 + gamma) + 2 * u32 * norm
            rerr[i] = np.sqrt(_lane_dot(r2, r2, 1.0, acc)) * np.float64(fine) * (1 + gamma)
        else:
            qerr[i] = np.sqrt(_lane_dot(err, err, 1.0, acc)) * (1 + gamma) + 2 * u32 * norm
