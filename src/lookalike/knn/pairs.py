"""Compiled CPU kernels of the per-pair stages (5): the float64 rerank and the pick.

Each is one compiled pass over the (query, base row) pairs instead of many small torch
operations (gathers, `unique`, sorts, chunk loops):

- `distances`: each pair's exact float64 distance, every metric, the base row read in place.
- `pick_into`: for pairs grouped by query, each query's k best by (distance, base index),
  written into the result arrays (past k = 32 sorted by a radix sort, `_radix_order`).

The formulas are `metrics.exact_distances` and `refine.pick`'s, and the results are the same
neighbours; `refine.py` calls these when `jit.enabled()` (the CPU, numba present,
`LOOKALIKE_JIT` not 0) and the inputs are float32 or float64 arrays, and keeps its torch code
for every other case (a GPU, tensors on a device). A distance here costs about what the fp32
refinement's score and bound of a pair cost, so where these rerank, a bf16 or int8 window is
not refined first (`refine.refines`); a compiled refinement was here, and was dropped.

Sums are in a fixed pattern (`LANES`): term t of a pair is added to lane t % 32, then the
lanes pairwise (`_tree_sum`). The order depends on d only, so a pair's result
never depends on its neighbours, its chunk or the thread that computes it (equal rows give
equal distances, and ties stay ties), and the loops vectorise without `fastmath` (never
used here: it would reassociate sums whose rounding the bounds count).
"""

from __future__ import annotations

import math

import numpy as np
import torch

from . import jit
from .metrics import Metric

try:  # pragma: no cover - exercised by whichever environment runs the tests
    from numba import prange
except ImportError:  # pragma: no cover
    prange = range

__all__ = ["usable", "as_array", "grouped", "distances", "pick_into"]

CHUNK = 64  # pairs (or queries) a parallel task takes at a time
SMALL_K = 32  # up to this k, each query's k best are kept by insertion (no sort, no allocation a query)

# metric kinds of `_distances`
L1, L2_SQUARED, L2, LINF, INNER, COSINE = range(6)


def usable(*arrays) -> bool:
    """Whether the kernels serve arrays like these: NumPy arrays (memory maps included) or
    CPU tensors of float32 or float64, with numba present and `LOOKALIKE_JIT` not 0."""
    if not jit.enabled("cpu"):
        return False
    for x in arrays:
        if isinstance(x, torch.Tensor):
            if x.device.type != "cpu" or x.dtype not in (torch.float32, torch.float64):
                return False
        elif not isinstance(x, np.ndarray) or x.dtype not in (np.float32, np.float64):
            return False
    return True


def as_array(x) -> np.ndarray:
    """A float32/float64 NumPy array (a plain ndarray view of a memory map, or of a CPU
    tensor's memory), C-contiguous, without a copy where it already is."""
    if isinstance(x, torch.Tensor):
        x = x.detach().numpy()
    return np.ascontiguousarray(np.asarray(x))


def grouped(rows: np.ndarray) -> bool:
    """Whether the pairs come grouped by query, rows non-decreasing (the small-size path)."""
    return len(rows) < 2 or bool((rows[1:] >= rows[:-1]).all())


def group_starts(rows: np.ndarray) -> np.ndarray:
    """First pair of each run of equal rows, and the end: (runs + 1,) int64."""
    n = len(rows)
    out = np.empty(n + 1, np.int64)  # at most n runs (np.r_ took 4x as long at the sizes of a few queries)
    if not n:
        out[0] = 0
        return out
    cut = np.flatnonzero(rows[1:] != rows[:-1])
    out[0] = 0
    out[1:len(cut) + 1] = cut + 1
    out[len(cut) + 1] = n
    return out[:len(cut) + 2]


# ---------------------------------------------------------------- rerank


def distances(m: Metric, xq: np.ndarray, xb: np.ndarray, rows: np.ndarray, cols: np.ndarray,
              scale: float = 1.0, comfortable: bool = False) -> np.ndarray:
    """Exact float64 distances of pairs (xq[rows[i]], xb[cols[i]]), as `exact_distances`
    defines them (rows times `scale`; cosine rows each by their own power of two unless
    `comfortable`), each pair on its own. A memory-mapped base is read in base-row order."""
    kind = _distance_kind(m)
    out = np.empty(len(rows), np.float64)
    rows = np.ascontiguousarray(rows, np.int64)
    cols = np.ascontiguousarray(cols, np.int64)
    # float32 rows need no scaling of their own either: in float64 their products are exact and
    # normal numbers, their sums cannot overflow, and a power of two factors out of every rounding
    # (the same bits with or without it); float64 rows can overflow or underflow
    scale_rows = m.normalised and not comfortable and not (_float32(xq) and _float32(xb))
    jit.threads((len(rows) + CHUNK - 1) // CHUNK)
    if isinstance(xb, np.memmap) and len(cols) > 1:  # sequential reads of the file
        order = np.argsort(cols, kind="stable")
        part = np.empty(len(rows), np.float64)
        _distances(as_array(xq), np.asarray(xb), rows[order], cols[order], kind, np.float64(scale), scale_rows, part)
        out[order] = part
        return out
    _distances(as_array(xq), as_array(xb), rows, cols, kind, np.float64(scale), scale_rows, out)
    return out


def _float32(x) -> bool:
    return x.dtype == (torch.float32 if isinstance(x, torch.Tensor) else np.float32)


def _distance_kind(m: Metric) -> int:
    if m.normalised:
        return COSINE
    if m.p is None:
        return INNER
    if m.p == 1:
        return L1
    if m.p == math.inf:
        return LINF
    return L2_SQUARED if m.squared else L2


@jit.njit(parallel=True)
def _distances(xq, xb, rows, cols, kind, scale, scale_rows, out):  # pragma: no cover - compiled
    """out[p]: the float64 distance of pair p (see `distances`)."""
    n, d = len(rows), xq.shape[1]
    for ch in prange((n + CHUNK - 1) // CHUNK):
        acc = np.empty(LANES)
        acc2 = np.empty(LANES)
        terms = np.empty(max(d, 1) if kind == LINF else 1)  # chebyshev's (a maximum: by halves)
        # the query row of the pair before, in float64 (times its scale for products), and for
        # cosine its squared norm: they serve the pairs after it of the same query (the small-size path
        # gives pairs grouped by query; otherwise they are made again)
        a64 = np.empty(d)
        last, aa = -1, 0.0
        for p in range(ch * CHUNK, min(n, (ch + 1) * CHUNK)):
            b = xb[cols[p]]
            if rows[p] != last:
                last = rows[p]
                a = xq[last]
                sa = 1.0
                if kind == COSINE:
                    sa = _pow2(_lane_amax(a, acc)) if scale_rows else 1.0
                elif kind == INNER:
                    sa = scale
                for t in range(d):
                    a64[t] = np.float64(a[t]) * sa
                if kind == COSINE:
                    aa = _lane_dot(a64, a64, 1.0, acc)
            if kind == COSINE:
                sb = _pow2(_lane_amax(b, acc)) if scale_rows else 1.0
                dot, bb = _lane_dot_and_norm(a64, b, sb, acc, acc2)
                norms = math.sqrt(aa * bb)  # |a| |b| (`metrics.exact_distances`: equal rows give 0)
                out[p] = 1.0 - (dot / norms if norms > 0 else 0.0)
            elif kind == LINF:  # a maximum: in any order the same
                for t in range(d):
                    terms[t] = abs((np.float64(b[t]) - a64[t]) * scale)
                out[p] = _tree_max(terms, d)
            elif kind == INNER:
                out[p] = _lane_dot(a64, b, scale, acc)
            elif kind == L1:
                out[p] = _lane_diff(a64, b, scale, False, acc)
            else:  # p = 2
                d2 = _lane_diff(a64, b, scale, True, acc)
                out[p] = d2 if kind == L2_SQUARED else math.sqrt(d2)


# The sums of a pair: term t goes to lane t % LANES, each lane summed in order, then the lanes
# pairwise (`_tree_sum`). The order depends on d alone, and the lane loop vectorises without
# `fastmath` (no sum is carried from one term to the next). A tree over all d terms, written
# into a buffer first, took 1.3x to 1.4x as long (one thread: 81 against 64 ns a pair at
# d = 256, 573 against 407 at d = 2,048).
LANES = 32
# (The lane loops below are written out one by one: a generic loop taking the term as a function
# argument ran as fast, but numba cannot cache a kernel that takes functions as values, and every
# process would compile `_distances` again on its first search.)


@jit.njit()
def _lane_diff(a, b, scale, square, acc):  # pragma: no cover - compiled
    """sum over t of |(b[t] - a[t]) scale|, squared if `square` (L2) or not (L1), in float64
    (`a` float64; |e|^2 is e^2 to the bit)."""
    acc[:] = 0.0
    d, t0 = len(a), 0
    while t0 + LANES <= d:
        ac, bc = a[t0:t0 + LANES], b[t0:t0 + LANES]
        for lane in range(LANES):
            e = abs((np.float64(bc[lane]) - ac[lane]) * scale)
            acc[lane] += e * e if square else e
        t0 += LANES
    for lane in range(d - t0):
        e = abs((np.float64(b[t0 + lane]) - a[t0 + lane]) * scale)
        acc[lane] += e * e if square else e
    return _tree_sum(acc, LANES)


@jit.njit()
def _lane_amax(x, acc):  # pragma: no cover - compiled
    """The largest |x[t]| (0 for none), in float64, by lanes (a loop that vectorises: a maximum
    carried from one value to the next does not)."""
    acc[:] = 0.0
    d, t0 = len(x), 0
    while t0 + LANES <= d:
        xc = x[t0:t0 + LANES]
        for lane in range(LANES):
            acc[lane] = max(acc[lane], abs(np.float64(xc[lane])))
        t0 += LANES
    for lane in range(d - t0):
        acc[lane] = max(acc[lane], abs(np.float64(x[t0 + lane])))
    return acc.max()


@jit.njit()
def _lane_dot(a, b, sb, acc):  # pragma: no cover - compiled
    """sum over t of a[t] (b[t] sb), in float64 (`a` float64, or float32 values widened)."""
    acc[:] = 0.0
    d, t0 = len(a), 0
    while t0 + LANES <= d:
        ac, bc = a[t0:t0 + LANES], b[t0:t0 + LANES]
        for lane in range(LANES):
            acc[lane] += np.float64(ac[lane]) * (np.float64(bc[lane]) * sb)
        t0 += LANES
    for lane in range(d - t0):
        acc[lane] += np.float64(a[t0 + lane]) * (np.float64(b[t0 + lane]) * sb)
    return _tree_sum(acc, LANES)


@jit.njit()
def _lane_dot_and_norm(a, b, sb, acc, acc2):  # pragma: no cover - compiled
    """`_lane_dot(a, b, sb)` and the sum of (b[t] sb)^2, in one pass (`a` float64)."""
    acc[:] = 0.0
    acc2[:] = 0.0
    d, t0 = len(a), 0
    while t0 + LANES <= d:
        ac, bc = a[t0:t0 + LANES], b[t0:t0 + LANES]
        for lane in range(LANES):
            y = np.float64(bc[lane]) * sb
            acc[lane] += ac[lane] * y
            acc2[lane] += y * y
        t0 += LANES
    for lane in range(d - t0):
        y = np.float64(b[t0 + lane]) * sb
        acc[lane] += a[t0 + lane] * y
        acc2[lane] += y * y
    return _tree_sum(acc, LANES), _tree_sum(acc2, LANES)


# ---------------------------------------------------------------- pick


def pick_into(rows: np.ndarray, cols: np.ndarray, key: np.ndarray, dist: np.ndarray, k: int, unscale: float,
              D: np.ndarray, I: np.ndarray) -> tuple[np.ndarray, float]:
    """For pairs grouped by query (`grouped(rows)`): each query's k best pairs by (key, col),
    ascending (ties to the lower column), written straight into D and I (rows of the
    queries): D the distances times `unscale` (an exact power of two) cast to float32, I
    their columns. Returns the queries holding fewer than k pairs (left untouched) and the
    largest magnitude written to D (before the cast), for `refine.check_representable`. One
    pass, where the selection's indices, two gathers of a million values, a scaling and two
    scattered writes took 11 ms of a search at k = 1,000 in NumPy."""
    starts = group_starts(rows)
    ng = len(starts) - 1
    short = np.zeros(ng, np.bool_)
    tops = np.zeros(max(1, (ng + CHUNK - 1) // CHUNK))
    jit.threads((ng + CHUNK - 1) // CHUNK)
    _pick_into(starts, np.ascontiguousarray(rows, np.int64), np.ascontiguousarray(cols, np.int64),
               np.ascontiguousarray(key, np.float64), np.ascontiguousarray(dist, np.float64), k,
               np.float64(unscale), D, I, short, tops)
    return rows[starts[:-1][short]], float(tops.max())


@jit.njit(parallel=True)
def _pick_into(starts, rows, cols, key, dist, k, unscale, D, I, short, tops):  # pragma: no cover - compiled
    ng = len(starts) - 1
    for ch in prange((ng + CHUNK - 1) // CHUNK):
        top_key = np.empty(k)
        top_col = np.empty(k, np.int64)
        sel = np.empty(k, np.int64)
        top = 0.0
        for g in range(ch * CHUNK, min(ng, (ch + 1) * CHUNK)):
            lo, hi = starts[g], starts[g + 1]
            if hi - lo < k:
                short[g] = True
                continue
            if k <= SMALL_K:
                _insertion_best(key, cols, lo, hi, k, top_key, top_col, sel)
            else:
                _sorted_best(key, cols, lo, hi, k, sel)
            q = rows[lo]
            for j in range(k):
                v = dist[sel[j]] * unscale
                top = max(top, abs(v))
                D[q, j] = np.float32(v)
                I[q, j] = cols[sel[j]]
        tops[ch] = top


@jit.njit()
def _insertion_best(key, cols, lo, hi, k, top_key, top_col, out):  # pragma: no cover - compiled
    """out: the k best of pairs lo..hi by (key, col), ascending, kept sorted by insertion."""
    m = 0
    for i in range(lo, hi):
        kv, cv = key[i], cols[i]
        if m == k and not (kv < top_key[k - 1] or (kv == top_key[k - 1] and cv < top_col[k - 1])):
            continue
        j = m if m < k else k - 1
        while j > 0 and (kv < top_key[j - 1] or (kv == top_key[j - 1] and cv < top_col[j - 1])):
            top_key[j], top_col[j], out[j] = top_key[j - 1], top_col[j - 1], out[j - 1]
            j -= 1
        top_key[j], top_col[j], out[j] = kv, cv, i
        if m < k:
            m += 1


@jit.njit()
def _sorted_best(key, cols, lo, hi, k, out):  # pragma: no cover - compiled
    """out: the k best of pairs lo..hi by (key, col), ascending: the pairs at most the k-th
    key (its ties included) sorted by key, then each run of equal keys by column."""
    keys = key[lo:hi]
    if hi - lo > 2 * k:  # many more than k (a wide window's): sort only those at most the k-th
        kth = np.partition(keys.copy(), k - 1)[k - 1]
        idx = np.flatnonzero(keys <= kth)
    else:  # a few more than k (an fp32 screen's window): a partition would cost a fifth of the sort
        idx = np.arange(hi - lo)
    order = idx[_radix_order(keys[idx])]
    i, m = 0, len(order)
    while i < k:  # runs of equal keys (-0.0 == 0.0) that reach into the k, by column
        j = i + 1
        while j < m and keys[order[j]] == keys[order[i]]:
            j += 1
        if j - i > 1:
            run = order[i:j]
            order[i:j] = run[np.argsort(cols[lo + run], kind="mergesort")]
        i = j
    for j in range(k):
        out[j] = lo + order[j]


RADIX_MIN = 64  # fewer keys than this are ordered by a comparison sort (a radix pass costs 256 counts)


@jit.njit()
def _radix_order(keys):  # pragma: no cover - compiled
    """The stable ascending order of float64 `keys` (no NaN; -0.0 equal to 0.0): a least
    significant digit radix sort of their bits turned into unsigned integers that sort as
    the floats do, 8 bits a pass, skipping the bytes every key shares (a query's distances
    share their sign and most of their exponent). 1,000 lists of 1,003 distances, both
    threads: 7.8 against 29 ms for numba's quicksort `argsort`, which was a third of a search
    at k = 1,000. Equal keys keep their order, which `_sorted_best` relies on no more than a
    comparison sort's (it orders runs of equal keys by column itself)."""
    n = len(keys)
    if n < RADIX_MIN:
        return np.argsort(keys, kind="mergesort")
    bits = np.empty(n, np.float64)
    for i in range(n):
        bits[i] = keys[i] + 0.0  # -0.0 + 0.0 is 0.0
    u = bits.view(np.uint64)
    top = np.uint64(1) << np.uint64(63)
    for i in range(n):  # negative floats: all bits flipped; others: the sign bit set
        u[i] = ~u[i] if u[i] & top else u[i] | top
    differ = np.uint64(0)
    for i in range(n):
        differ |= u[i] ^ u[0]
    order = np.arange(n)
    key2, order2 = np.empty(n, np.uint64), np.empty(n, np.int64)
    count = np.empty(257, np.int64)
    mask = np.uint64(255)
    for b in range(8):
        shift = np.uint64(8 * b)
        if (differ >> shift) & mask == 0:
            continue
        count[:] = 0
        for i in range(n):
            count[((u[i] >> shift) & mask) + 1] += 1
        for j in range(256):
            count[j + 1] += count[j]
        for i in range(n):
            digit = (u[i] >> shift) & mask
            at = count[digit]
            key2[at], order2[at] = u[i], order[i]
            count[digit] = at + 1
        u, key2 = key2, u
        order, order2 = order2, order
    return order


# ---------------------------------------------------------------- shared


@jit.njit()
def _tree_sum(x, n):  # pragma: no cover - compiled
    """The sum of x[:n] in x's type, overwriting it: its upper half added onto its lower
    half element by element (a loop with no carried sum, so it vectorises without
    `fastmath`), again and again down to at most 8 partial sums, added in order. The order
    depends on n alone. `x` holds at least one element (no terms: its first is set to 0)."""
    if n == 0:
        x[0] = 0
        n = 1
    while n > 8:
        h = (n + 1) // 2
        for t in range(n - h):
            x[t] += x[t + h]
        n = h
    total = x[0] - x[0]  # a zero of x's type
    for t in range(n):
        total += x[t]
    return total


@jit.njit()
def _tree_max(x, n):  # pragma: no cover - compiled
    """The largest of x[:n] (0 for none), overwriting it: halves against halves, down to at
    most 8 (a loop the compiler vectorises; a maximum is the same in any order)."""
    while n > 8:
        h = (n + 1) // 2
        for t in range(n - h):
            x[t] = max(x[t], x[t + h])
        n = h
    top = 0.0
    for t in range(n):
        top = max(top, x[t])
    return top


@jit.njit()
def _pow2(amax):  # pragma: no cover - compiled
    """`scaling.pow2_scale` of one value: 2^-e bringing amax into [0.5, 1), 1 for 0, e
    clamped to [-1022, 1022]."""
    _, e = math.frexp(amax)
    return math.ldexp(1.0, min(max(-e, -1022), 1022))
