"""Stage 3 on the small-size path, compiled: a block of screen scores in, the window's pairs out.

`window.one_block` finds each query's k-th score and the pairs inside its window with torch
ops: group minima, two top-k, a gather, a mask and its nonzero, each a pass over memory and a
dispatch. At the sizes most searches have they cost about as much as the GEMM (one thread,
1,000 x 1,000 x 256, k = 10: 5.1 against 5.5 ms). Here one compiled loop per query row does
it all while the row is in cache:

1. (int8 screens) the GEMM's exact int32 sums become scores in place, each step rounded as
   `Screen.bound` counts (see `_select_int8_centred`), so that the bound holds unchanged;
2. the k-th score: the minima of strided column groups, then an insertion top-k over the few
   columns they leave (`_kth_small`; from k = 8 to 32 by lanes, `_window_lanes`; past k = 32
   a sample's threshold, `_window_large`);
3. the threshold k-th + width, rounded up to float32 as `window._round_up` does;
4. a second pass over the row collects the columns at most the threshold, ascending (by
   lanes and past k = 32, the pass that found the k-th has collected them already).

The pairs are those of `one_block` on the same scores, rows ascending and columns ascending
within a row (`one_block` orders a row's columns by group). Rows run in parallel; each
writes up to `slot_count` columns into its own slots, and the rare row holding more is collected
again once its count is known.
"""

from __future__ import annotations

import numpy as np
import torch

from . import jit

try:  # pragma: no cover - whichever environment runs the tests
    import numba
    from numba import prange
except ImportError:  # pragma: no cover - then `usable` is False and nothing here runs
    numba = None
    prange = range

__all__ = ["MAX_K", "usable", "window_pairs"]

# The top-k is an insertion into k sorted values, O(k) per value that enters: few do in most
# rows, every one does in a row whose scores fall as it goes; the group minima of `_kth_small` cut
# those to an eighth. One CPU thread, against `one_block` (ms, 1,000 x 1,000 scores, then
# 200 x 20,000): random scores, k = 10: 2.5 vs 4.2, 2.0 vs 3.5; k = 32: 6.4 vs 10.7, 3.6 vs
# 6.1; falling rows, k = 10: 1.1 vs 2.1, 3.6 vs 5.0; k = 32: 3.4 vs 3.5, 9.1 vs 7.4. Larger k
# take a selection by a sample's threshold instead (`_window_large`).
MAX_K = 32
CAP = 256    # columns a row writes into its own slots (2k for a larger k); a row holding more is collected again
SLOTS_BYTES = 64 * 2**20  # the most the slots of one block of rows take
CHUNK = 64  # scores a row is scanned by: a chunk with nothing below the k-th costs one vector pass
GROUPS = 8  # strided column groups whose minima find a row's k-th (`_kth_small`)


def usable(device: torch.device, dtype: torch.dtype, k: int) -> bool:
    """Whether `window_pairs` serves scores of a screen of `dtype` on `device` (any k): the
    CPU with the compiled kernels on, float32 scores (fp32, bf16 and fp16 screens) or an int8
    screen's int32 sums (an int16 screen's two blocks of them)."""
    return dtype in (torch.float32, torch.bfloat16, torch.float16, torch.int8, torch.int16) and jit.enabled(device)


def window_pairs(s: torch.Tensor, k: int, width: torch.Tensor, *, self_offset: int = -1,
                 int8: tuple[torch.Tensor, torch.Tensor, torch.Tensor | None] | None = None,
                 pair=None, excess: int = 8, fine: torch.Tensor | None = None
                 ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The pairs of `window.one_block(s, k, width)`, and each row's count of them.

    Parameters
    ----------
    s : tensor of shape (nq, nb), float32 scores; or, with `int8`, the int32 sums of an int8
        screen, which are turned into its float32 scores in place.
    k : 1 <= k <= nb (nb - 1 with `self_offset`); fast up to `MAX_K`.
    width : tensor of shape (nq,), float64 -- each row's window width (2E).
    self_offset : row i's own column is self_offset + i, left out (exclude_self): its score
        is set to +inf, as `one_block`'s caller does; -1: none.
    int8 : (query steps (nq,), base steps (nb,), base squared norms (nb,) or None), float32:
        the scores are `sq - 2 sx (D sb)` (centred metrics) or `-((D sb) sx)`.
    pair : with `int8` and k <= `MAX_K`, a function giving each pair's own error bound, for
        the rows whose window by `width` holds more than k + `excess` columns: it returns
        (a, b, c (nq,), g y^2 (nb,), y (nb,), e (nb,)), float64, the bound of pair (i, j) being
        a[i] y[j] + b[i] e[j] + c[i] + g y[j]^2 (`Screen.pair_bound`). Such a row's window is
        then those of its columns whose score minus its bound is at most the k-th smallest
        score plus bound among them (`_narrow`): a part of the window of the row's largest
        bound, which it replaces, and holding every true neighbour all the same.
    fine : with `int8`, an int16 screen's second int32 sums D23 (nq, nb): the scores are
        then those of D = D1 + D23 / 256 (`Screen.scores`); no `pair`.

    Returns
    -------
    r, c : tensors of shape (n_pairs,), int64 -- rows ascending, columns ascending within a row
    count : tensor of shape (nq,), int64 -- pairs per row
    """
    nq, nb = s.shape
    if not 1 <= k <= nb or (self_offset >= 0 and (self_offset + nq > nb or k >= nb)):
        raise ValueError(f"internal: k = {k} or the own columns from {self_offset} do not fit {nq} x {nb} scores")
    jit.threads(nq)
    w = width.detach().cpu().numpy().astype(np.float64, copy=False)
    counts = np.empty(nq, dtype=np.int64)
    thr = np.empty(nq, dtype=np.float32)
    slots = np.empty((nq, slot_count(nq, nb, k)), dtype=np.int64)
    if int8 is None:
        sc = s.numpy()
        _select_f32(sc, k, w, self_offset, slots, counts, thr)
    else:
        sx, sb, sq = (None if v is None else v.numpy() for v in int8)
        sc = s.numpy().view(np.float32)
        if fine is not None:
            if pair is not None:
                raise ValueError("internal: an int16 screen's windows have no pair bounds")
            _select_int16(s.numpy(), fine.numpy(), sc, sx, sb, sq if sq is not None else sb[:0], sq is not None,
                          k, w, self_offset, slots, counts, thr)
        elif sq is None:
            _select_int8_dots(s.numpy(), sc, sx, sb, k, w, self_offset, slots, counts, thr)
        else:
            _select_int8_centred(s.numpy(), sc, sx, sb, sq, k, w, self_offset, slots, counts, thr)
        wide = np.flatnonzero(counts > k + excess) if pair is not None and k <= MAX_K else ()
        if len(wide):  # rows whose window holds many more than k: again, each pair by its own bound
            jit.threads(len(wide))
            _narrow(sc, wide, k, *(_up32(v) for v in pair()), slots, counts, thr)
    starts = np.zeros(nq + 1, dtype=np.int64)
    np.cumsum(counts, out=starts[1:])
    r = np.empty(int(starts[-1]), dtype=np.int64)
    c = np.empty_like(r)
    jit.threads(nq)
    _gather(sc, thr, slots, counts, starts, r, c)
    return torch.from_numpy(r), torch.from_numpy(c), torch.from_numpy(counts)


def slot_count(nq: int, nb: int, k: int) -> int:
    """Columns each of `nq` rows of `nb` scores writes into its own slots: `CAP`, or 2k (at
    most nb) for a larger k (a row holds at least k), within `SLOTS_BYTES` in all. A row
    holding more is scanned again by `_gather` (at k = 100 and 64 slots, every row was: 4.6 of
    a search's 107 ms)."""
    return max(CAP, min(2 * k, nb, SLOTS_BYTES // (8 * max(1, nq))))


@jit.njit()
def _threshold(kth, width):
    """float64 kth + width rounded up to float32 (`window._round_up`)."""
    x = np.float64(kth) + width
    y = np.float32(x)
    if np.float64(y) < x:
        y = np.nextafter(y, np.float32(np.inf))
    return y


@jit.njit()
def _below(chunk, t):
    """How many of `chunk` are below `t` (a loop the compiler vectorises: the scan's fast path)."""
    n = np.int32(0)
    for j in range(len(chunk)):
        n += np.int32(1) if chunk[j] < t else np.int32(0)
    return n


@jit.njit()
def _at_most(chunk, t):
    """How many of `chunk` are at most `t` (vectorised as `_below`)."""
    n = np.int32(0)
    for j in range(len(chunk)):
        n += np.int32(1) if chunk[j] <= t else np.int32(0)
    return n


@jit.njit()
def _insert(best, v):
    """v into `best` (k values ascending; v below the last); the new last."""
    p = len(best) - 1
    while p > 0 and best[p - 1] > v:
        best[p] = best[p - 1]
        p -= 1
    best[p] = v
    return best[len(best) - 1]


@jit.njit()
def _top_k(chunk, best):
    """The values of `chunk` below the last of `best` (the k smallest so far, ascending)
    inserted into it; its new last. An insertion shifts up to k values: cheap for the few
    values that enter once the first chunks have filled `best`; O(k) each when the values
    fall as they go (hence `MAX_K`)."""
    last = best[len(best) - 1]
    if _below(chunk, last) == 0:  # most chunks, once the first ones have filled `best`
        return last
    for j in range(len(chunk)):
        v = chunk[j]
        if v < last:
            last = _insert(best, v)
    return last


@jit.njit()
def _collect(row, t, slots, i):
    """Columns of `row` at most `t` into slots[i], as many as it holds; their count."""
    return _columns_at_most(row, t, slots[i])


SAMPLE = 8  # `_window_large` samples every SAMPLE-th score of a row at least (more for larger k)


@jit.njit()
def _sample(row, k):
    """For a k past `MAX_K`: every `step`-th score of `row` (`step` at least SAMPLE, and large
    enough that the rank wanted of the sample, k / step + 8, is at most `MAX_K`), and that rank
    (at most the sample's length)."""
    step = SAMPLE
    while k // step + 8 > MAX_K:
        step *= 2
    sample = row[::step].copy()
    return sample, min(len(sample), k // step + 8)


@jit.njit()
def _sample_kth(sample, rank):
    """The rank-th smallest of a sample: by insertion up to `MAX_K`, else by partition."""
    return _kth_small(sample, rank) if rank <= MAX_K else np.partition(sample, rank - 1)[rank - 1]


@jit.njit()
def _kth_small(row, k):
    """The k-th smallest of `row` (with repeats), k at most `MAX_K`. A row of at least 16k
    scores is read once for the minima of GROUPS strided column groups (column j: row[j],
    row[j + w], ...; an elementwise minimum, vectorised); the k smallest scores lie in the columns whose minimum
    is at most the k-th smallest minimum (those k minima are k scores), so only those columns
    and the last n % GROUPS scores go through the insertion top-k."""
    n = len(row)
    best = np.full(k, np.inf, dtype=np.float32)
    w = n // GROUPS
    if w < 2 * k:
        last = best[k - 1]
        for j0 in range(0, n, CHUNK):
            last = _top_k(row[j0:j0 + CHUNK], best)
        return last
    mins = _fold(row, w)  # the last n % GROUPS scores folded in too (and inserted below)
    for j0 in range(0, w, CHUNK):
        _top_k(mins[j0:j0 + CHUNK], best)
    bound = best[k - 1]  # at least the row's k-th
    best[:] = np.inf
    last = best[k - 1]
    for j0 in range(0, w, CHUNK):
        if _at_most(mins[j0:j0 + CHUNK], bound) == 0:
            continue
        for j in range(j0, min(j0 + CHUNK, w)):
            if mins[j] <= bound:
                for g in range(GROUPS):
                    v = row[g * w + j]
                    if v < last:
                        last = _insert(best, v)
    for j in range(GROUPS * w, n):
        v = row[j]
        if v < last:
            last = _insert(best, v)
    return last


@jit.njit()
def _window_row(row, i, k, width, self_offset, slots, counts, thr):
    """Row i's window from its float32 scores `row`: its own column (with `self_offset`) set
    to +inf first, as `one_block`'s caller does; its k-th, threshold and pairs."""
    if self_offset >= 0:
        row[self_offset + i] = np.inf
    if k > MAX_K:
        t, n = _window_large(row, k, width[i], slots[i])
    elif k >= LANES_FROM_K and len(row) >= 2 * _lanes(k):
        t, n = _window_lanes(row, k, width[i], slots[i])
        if n < 0:  # more than a buffer's worth under the lanes' bound: as below
            t, n = _threshold(_kth_small(row, k), width[i]), -1
    else:
        t, n = _threshold(_kth_small(row, k), width[i]), -1
    thr[i] = t
    counts[i] = n if n >= 0 else _collect(row, t, slots, i)


# From k = LANES_FROM_K to MAX_K a row's k-th comes from lane minima (`_window_lanes`); below,
# `_kth_small`'s insertion top-k over group minima is cheaper. One CPU thread, 1,000 rows of an
# int8 screen's scores (1,000 x 256-d, us a row, `_kth_small` and its `_collect` against lanes):
# k = 10: 2.50 against 1.48; k = 32: 7.39 against 3.42; 200 rows of 20,000: k = 10: 15.4 against
# 14.5, k = 3: 11.2 against 12.3 (hence not below 8).
LANES_FROM_K = 8
LANE_BUFFER = 512  # scores under the lanes' bound gathered a row; a row holding more takes `_kth_small`


@jit.njit()
def _lanes(k):
    """Lanes for a k: a power of two, at least 16 and 2k (about 1.2k scores of random rows are at
    most the k-th smallest of 2k lane minima, k ln k of k's)."""
    n = 16
    while n < 2 * k:
        n *= 2
    return n


@jit.njit()
def _fold(a, w):
    """The minima of `a`'s strided column groups of width `w` (m[j] of a[j], a[j + w], ...; the
    last len(a) % w scores folded into the first lanes): an elementwise minimum over rows of w,
    which the compiler vectorises."""
    n, g = len(a), len(a) // w
    m = a[:w].copy()
    for p in range(1, g):
        part = a[p * w:(p + 1) * w]
        for j in range(w):
            v = part[j]
            m[j] = v if v < m[j] else m[j]
    for j in range(g * w, n):
        v = a[j]
        m[j - g * w] = v if v < m[j - g * w] else m[j - g * w]
    return m


@jit.njit()
def _kth_of_few(m, k):
    """The k-th smallest of the few values `m` (with repeats): the smallest value with at least k
    values at most it, by counting, O(len(m)^2) comparisons with no branch to mispredict (an
    insertion top-k of 32 lane minima cost twice as much)."""
    out = np.float32(np.inf)
    for i in range(len(m)):
        v = m[i]
        c = 0
        for j in range(len(m)):
            c += 1 if m[j] <= v else 0
        if c >= k and v < out:
            out = v
    return out


@jit.njit()
def _lane_bound(row, k):
    """At least the k-th smallest of `row` (k <= MAX_K, a row of at least 2 `_lanes(k)`): the
    k-th smallest of the minima of its `_lanes(k)` strided lanes (k scores of the row), the row
    folded eight at a time, then into the lanes."""
    m = row
    lanes = _lanes(k)
    while len(m) >= 16 * lanes:
        m = _fold(m, len(m) // 8)
    if len(m) > lanes:
        m = _fold(m, lanes)
    return _kth_of_few(m, k)


@jit.njit()
def _kth(row, k):
    """The k-th smallest of `row` (with repeats), k at most `MAX_K`: from `LANES_FROM_K` the
    k smallest of the scores under the lanes' bound (`_lane_bound`) when the buffer holds them,
    else `_kth_small`."""
    if k >= LANES_FROM_K and len(row) >= 2 * _lanes(k):
        b = _lane_bound(row, k)
        cols = np.empty(LANE_BUFFER, dtype=np.int64)
        n = _columns_at_most(row, b, cols)
        if n <= LANE_BUFFER:
            return _kth_under(row, cols[:n], k, b)
    return _kth_small(row, k)


@jit.njit()
def _kth_under(row, cols, k, b):
    """The k-th smallest of `row`, given `cols`: columns holding every score at most `b`, a
    bound on the row's k-th (more columns may come too): an insertion top-k of those scores."""
    best = np.full(k, np.inf, dtype=np.float32)
    last = best[k - 1]
    for p in range(len(cols)):
        v = row[cols[p]]
        if v < last and v <= b:
            last = _insert(best, v)
    return last


@jit.njit()
def _window_lanes(row, k, width, out):
    """For k from `LANES_FROM_K` to `MAX_K`: a row's window threshold and the count of its
    columns, written into `out` as far as it holds them (-1: more than `LANE_BUFFER` scores
    were under the bound, the caller takes `_kth_small`).

    The row is folded into `_lanes(k)` strided lanes (each a fold of long vectorised rows, by
    eight at a time); the k-th smallest of their minima, b, is at least the row's k-th (those
    minima are k scores of the row). One pass gathers every score at most b + width (rounded up
    as the threshold is), in column order: the row's k smallest among them (all scores at most b
    are), hence its k-th, its threshold k-th + width (at most b + width's), and its window."""
    b = _lane_bound(row, k)
    cols = np.empty(LANE_BUFFER, dtype=np.int64)
    n = _columns_at_most(row, _threshold(b, width), cols)
    if n > LANE_BUFFER:
        return np.float32(0), -1
    t = _threshold(_kth_under(row, cols[:n], k, b), width)
    c = 0
    for p in range(n):
        if row[cols[p]] <= t:
            if c < len(out):
                out[c] = cols[p]
            c += 1
    return t, c


@jit.njit()
def _window_large(row, k, width, out):
    """Past `MAX_K`, where an insertion top-k costs O(k) a value: a row's window threshold,
    and the count of its columns when they were written into `out` here (-1: they were not,
    `_window_row` collects them). A threshold t from a strided sample of the row (`_sample`:
    its k-th found by insertion, not by a partition, which costs about 9 ns a value whatever
    the rank), then one pass that gathers the scores at most t with their columns. When at
    least k are, the row's k-th is the k-th
    of those (all others are larger); when fewer are, the sample's rank doubles until the
    whole row is taken. When the window's threshold (k-th + width) is at most t, as it is
    unless the width is wide, its columns are among those gathered, ascending: no second pass
    over the row. One thread, a row of 20,000 scores, the k-th alone: 52 to 30 us at k = 100,
    80 to 56 us at k = 1,000 against the sample's partition (a partition of the whole row:
    about 200 us); with the window, 1,000 such rows, both threads: 18.8 to 15.2 ms at k = 100,
    41.6 to 34.1 ms at k = 1,000 against a second pass."""
    sample, rank = _sample(row, k)
    cap = max(4 * k, 1024)
    cols = np.empty(cap, dtype=np.int64)
    while rank < len(sample):
        t = _sample_kth(sample, rank)
        m = _columns_at_most(row, t, cols)
        if m > cap:  # many ties at t: room for all of them, gathered again
            cap = m
            cols = np.empty(cap, dtype=np.int64)
            m = _columns_at_most(row, t, cols)
        if m >= k:
            vals = np.empty(m, dtype=row.dtype)
            for p in range(m):
                vals[p] = row[cols[p]]
            tt = _threshold(np.partition(vals, k - 1)[k - 1], width)  # a partitioned copy: vals stay in order
            if tt > t:  # a wide window: past what was gathered
                return tt, -1
            c = 0  # every score at most tt was gathered, in column order
            for p in range(m):
                if vals[p] <= tt:
                    if c < len(out):
                        out[c] = cols[p]
                    c += 1
            return tt, c
        rank *= 2
    return _threshold(np.partition(row.copy(), k - 1)[k - 1], width), -1


@jit.njit()
def _columns_at_most(row, t, cols):
    """The columns of `row`'s scores at most `t` into cols, as many as it holds; how many there
    are. A chunk with room for all its columns writes each one and advances past it only if its
    score is at most `t`: no branch to mispredict where about one score in 14 passes, as at
    k = 1,000 (the window of 1,000 rows of 20,000 scores, both threads: 32.9 against 27.9 ms
    with a branch a score). Columns alone, their scores read back from the row in cache: one
    store a score, not two (a row of 1,000 scores, 4% of them at most `t`: 0.89 against
    0.67 us)."""
    m, cap = 0, len(cols)
    for j0 in range(0, len(row), CHUNK):
        chunk = row[j0:j0 + CHUNK]
        if _at_most(chunk, t) == 0:
            continue
        if m + len(chunk) <= cap:  # room for the whole chunk: written without a branch
            for j in range(len(chunk)):
                cols[m] = j0 + j
                m += np.int64(chunk[j] <= t)
            continue
        for j in range(len(chunk)):
            if chunk[j] <= t:
                if m < cap:
                    cols[m] = j0 + j
                m += 1
    return m


@jit.njit(parallel=True)
def _select_f32(s, k, width, self_offset, slots, counts, thr):
    """Each row of float32 scores `s`: its k-th, threshold and pairs (the own column of a
    row, with `self_offset`, set to +inf first, as `one_block`'s caller does)."""
    for i in prange(s.shape[0]):
        row = s[i]
        _window_row(row, i, k, width, self_offset, slots, counts, thr)


@jit.njit(parallel=True)
def _select_int8_centred(d, s, sx, sb, sq, k, width, self_offset, slots, counts, thr):
    """`_select_f32` of int8 scores `sq - 2 sx (D sb)`, written over their int32 sums `d`
    (`s` is the same memory as float32). Each step rounds once to float32, the steps that
    `Screen.bound` counts: D to float32 (exact below 2^24), times sb, times -2 sx (-2 sx is
    exact), plus sq. (torch's `addcmul` may fuse the last two into one rounding, as it does
    with AVX-512: a score here can then differ from `Screen.scores`'s in its last bit; both
    are within the bound.) A chunk is scored into a buffer of its own, then copied over its
    sums: in place, the compiler would not vectorise the loop (its operands alias); and the
    loops run over views of one chunk, which it vectorises (measured 3x faster than indices
    into whole rows)."""
    for i in prange(d.shape[0]):
        di, row = d[i], s[i]
        c = np.float32(-2.0) * sx[i]
        tmp = np.empty(CHUNK, dtype=np.float32)
        for j0 in range(0, len(di), CHUNK):
            dc, bc, qc, rc = di[j0:j0 + CHUNK], sb[j0:j0 + CHUNK], sq[j0:j0 + CHUNK], row[j0:j0 + CHUNK]
            for j in range(len(dc)):
                tmp[j] = qc[j] + c * (np.float32(dc[j]) * bc[j])
            for j in range(len(dc)):
                rc[j] = tmp[j]
        _window_row(row, i, k, width, self_offset, slots, counts, thr)


@jit.njit(parallel=True)
def _select_int8_dots(d, s, sx, sb, k, width, self_offset, slots, counts, thr):
    """`_select_int8_centred` for cosine and inner products: scores `-((D sb) sx)`, the
    roundings of `Screen.scores` (two products)."""
    for i in prange(d.shape[0]):
        di, row = d[i], s[i]
        c = sx[i]
        tmp = np.empty(CHUNK, dtype=np.float32)
        for j0 in range(0, len(di), CHUNK):
            dc, bc, rc = di[j0:j0 + CHUNK], sb[j0:j0 + CHUNK], row[j0:j0 + CHUNK]
            for j in range(len(dc)):
                tmp[j] = -((np.float32(dc[j]) * bc[j]) * c)
            for j in range(len(dc)):
                rc[j] = tmp[j]
        _window_row(row, i, k, width, self_offset, slots, counts, thr)


@jit.njit(parallel=True)
def _select_int16(d, d2, s, sx, sb, sq, centred, k, width, self_offset, slots, counts, thr):
    """`_select_int8_centred` (or, not `centred`, `_select_int8_dots`) of an int16 screen's
    sums: D = D1 + D23 / 256, the roundings of `Screen.scores` (each sum to float32, the
    scaling by 2^-8 exact, their sum), then as the int8 screen's."""
    quarter = np.float32(2.0**-8)
    for i in prange(d.shape[0]):
        di, fi, row = d[i], d2[i], s[i]
        c = np.float32(-2.0) * sx[i] if centred else sx[i]
        tmp = np.empty(CHUNK, dtype=np.float32)
        for j0 in range(0, len(di), CHUNK):
            dc, fc, bc, rc = di[j0:j0 + CHUNK], fi[j0:j0 + CHUNK], sb[j0:j0 + CHUNK], row[j0:j0 + CHUNK]
            if centred:
                qc = sq[j0:j0 + CHUNK]
                for j in range(len(dc)):
                    tmp[j] = qc[j] + c * ((np.float32(dc[j]) + np.float32(fc[j]) * quarter) * bc[j])
            else:
                for j in range(len(dc)):
                    tmp[j] = -(((np.float32(dc[j]) + np.float32(fc[j]) * quarter) * bc[j]) * c)
            for j in range(len(dc)):
                rc[j] = tmp[j]
        _window_row(row, i, k, width, self_offset, slots, counts, thr)


def _up32(v):
    """float64 figures of a pair's bound as float32 no smaller (scalars as 1-element arrays)."""
    v = np.atleast_1d(np.asarray(v, np.float64))
    f = v.astype(np.float32)
    return np.where(f.astype(np.float64) < v, np.nextafter(f, np.float32(np.inf)), f)


# `_narrow` sums a pair's bound and its score in float32: the bound's figures rounded up
# (`_up32`) and its four roundings (nonnegative terms: at most 2^-22 relative together) covered
# by BOUND_GROW, then score plus bound and score minus bound moved outward by OUT_GROW of their
# magnitude and OUT_TINY (their own rounding, and the margin's, are at most 2^-23 of it):
# no branch in the loop, and the window a few float32 units wider than the bound's
BOUND_GROW = np.float32(1 + 2.0**-20)
OUT_GROW = np.float32(2.0**-21)
OUT_TINY = np.float32(2.0**-120)


@jit.njit(parallel=True)
def _narrow(s, rows, k, a, b, c, gy2, y, e, slots, counts, thr):
    """Rows `rows` of float32 scores `s` (an int8 screen's, the own column already +inf)
    windowed again with each pair's own bound E_ij = a_i y_j + b_i e_j + c_i + g y_j^2
    (`Screen.pair_bound`), among the columns of the row's window by its largest bound (in its
    slots, or gathered again from the row when they hold fewer): the threshold is the k-th
    smallest of score + E over them (at least the k-th true score: every score is within its
    bound of the true one, and a k-th over fewer columns is no smaller), and the window those
    columns whose score - E is at most it. A true neighbour lies in both windows, so in this
    one. Only the window's columns are read (a pass over every score of the row cost 2.7 us a
    row of 1,000 on one thread, of which this takes a fraction). A window of more columns than
    the slots hold is left in the row for `_gather`: its columns' score - E, every other +inf."""
    cap = slots.shape[1]
    for t in prange(len(rows)):
        i = rows[t]
        row, n = s[i], counts[i]
        if n <= cap:
            cols = slots[i, :n].copy()
        else:
            cols = np.empty(n, dtype=np.int64)
            n = min(n, _columns_at_most(row, thr[i], cols))
        plus = np.empty(n, dtype=np.float32)
        minus = np.empty(n, dtype=np.float32)
        ai, bi, ci = a[i], b[i], c[i]
        for p in range(n):
            j = cols[p]
            v = row[j]
            err = (ai * y[j] + bi * e[j] + ci + gy2[j]) * BOUND_GROW
            hi = v + err
            lo = v - err
            plus[p] = hi + (abs(hi) * OUT_GROW + OUT_TINY)
            # an infinite score (the own column) stays infinite: inf - inf would be NaN
            minus[p] = lo - (abs(lo) * OUT_GROW + OUT_TINY) if lo < np.inf else lo
        th = _kth(plus, k)
        thr[i] = th
        m = 0
        for p in range(n):
            m += 1 if minus[p] <= th else 0
        if m <= cap:
            q = 0
            for p in range(n):
                if minus[p] <= th:
                    slots[i, q] = cols[p]
                    q += 1
        else:  # left in the row (`_gather` reads the columns at most `th` from it)
            row[:] = np.inf
            for p in range(n):
                row[cols[p]] = minus[p]
        counts[i] = m


@jit.njit(parallel=True)
def _gather(s, thr, slots, counts, starts, r, c):
    """Every row's pairs into r and c at its start: from its slots, or (a row holding more
    than they do) from its scores again."""
    cap = slots.shape[1]
    for i in prange(s.shape[0]):
        lo, n = starts[i], counts[i]
        for m in range(n):
            r[lo + m] = i
        if n <= cap:
            for m in range(n):
                c[lo + m] = slots[i, m]
        else:
            row, t = s[i], thr[i]
            m = lo
            for j in range(len(row)):
                if row[j] <= t:
                    c[m] = j
                    m += 1
