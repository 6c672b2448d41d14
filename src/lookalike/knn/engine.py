"""The exact-search core. Everything else in `lookalike.knn` wraps this.

    knn(xq, xb, k, metric) -> (D, I)

1. Prepare: the base is centred (translation-invariant metrics) or normalised (cosine) and
   cast or quantised to the screen precision, once (`PreparedBase`, what `fit` keeps), or
   block by block while streaming a memory-mapped base.
2. Screen: base blocks meet query blocks in one GEMM each (fp32, bf16, fp16 with float32
   output, or int8 with exact int32 sums; a float64 cdist for l1/chebyshev), written into
   one reused buffer. Nothing
   of size nq x nb is ever built.
3. Window: screen scores carry rounding (and quantisation) error. For each query an explicit
   bound E (from the unit roundoff, the dimension, the vector norms and quantisation errors)
   says how far any score can be off, so every true neighbour scores within 2E of the k-th
   screened score. `Window` keeps each query's k best scores so far and collects every
   candidate inside (k-th so far + 2E): one pass over the block for group minima, then only
   the groups that reach the window are looked at.
4. Refine (bf16 and int8 screens, whose windows are wide, where the rerank runs in torch: a
   GPU, `LOOKALIKE_JIT=0`): each candidate is scored again in fp32 with its own error bound,
   and only those that can still be among the k are kept. The CPU's compiled rerank costs
   about as much a pair as this does, and takes the whole window (`refine.refines`).
5. Rerank: the candidates left are scored exactly, in float64, and sorted by (distance,
   index), so ties go to the lower index.
6. Fallback: a query that held too many candidates (`limit`) stops collecting; it is screened
   again in fp32 with no cap, every candidate in its window reranked in float64, and it is
   counted in `SearchStats.fallbacks`. So is a query so much larger than the base that the
   base's scale would carry it out of fp32's range: it is screened in float64 (see `screen`).

When the scores of a block of queries against the whole (materialised) base fit in the
working memory -- every search of a base up to several hundred thousand rows -- stages 2-3
take one step per query block (`_one_block`): one GEMM, each query's k-th score, the pairs
inside its window (on the CPU, one compiled loop per query row: `selection`); no base
blocks, no running window. The candidates of each query block are capped as the `Window`'s
are (`capped`); those of consecutive blocks are refined, reranked and picked together, up to
one block's candidate limit at once.

The result has the same neighbour sets as a float64 brute force, whatever the screen
precision and the magnitude of the values: a lower precision only widens the window.
Values beyond float32's range, and distances that float32 (the output) cannot hold, are
refused with an `InvalidParameter`. D and I are written afresh by every call; a query left
without k neighbours would be a bug, raised as such, never returned.
"""

from __future__ import annotations

import math
import time

import numpy as np
import torch

from ..errors import InvalidParameter
from .blocks import SearchStats, as_tensor, budget_bytes, ranges, scratch
from . import pairs, selection
from .metrics import get_metric
from .refine import device_pair_distances, pair_distances, pick, refine, refines, rows_comfortable
from .screen import Extent, PreparedBase, Rows, Screen, base_block, prepare_rows
from .validation import check_k
from .window import Window, candidate_limit, capped, one_block

__all__ = ["knn"]

# Queries a block must hold for the small-size path: fewer would make each GEMM read the whole
# base for too little arithmetic (a larger base then goes through base blocks and a `Window`).
MIN_QUERY_BLOCK = 64
# An int8 window of more than k + max(NARROW_MIN, NARROW_FACTOR nb / d) rows is narrowed by each
# pair's own bound (`selection._narrow`, over the window's columns): measured one process,
# EfficientNet-Lite0 features, 1,000 x 9,000 x 1,472, k = 3: 218 -> 99 rows a query, search
# 138 -> 83 ms. Narrowing every window cost what the rerank saved at nb = 1,000 x 256-d (k = 10)
# when it read whole rows; over the window's columns, factors 12, 6, 3 and 0 ran within 3% there
# (3.3 to 3.4 ms; 5.1 where windows held 45 rows a query), and 0 ran 20% slower at nb = 20,000,
# hence the factor; tests set both to 0 to narrow every window
NARROW_FACTOR = 6
NARROW_MIN = 8


def knn(xq: np.ndarray, xb: np.ndarray | PreparedBase, k: int, metric: str = "euclidean", *,
        device: str | torch.device = "cpu", working_memory: float | None = None,
        screen_dtype: torch.dtype = torch.float32, exclude_self: bool = False, limit: int | None = None,
        stats: SearchStats | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Exact k nearest neighbours of each row of `xq` among the rows of `xb`.

    Parameters
    ----------
    xq : ndarray of shape (nq, d), float32, float16 or float64; or a tensor, already on the
        device of the search (a GPU: the queries are not copied, and the search, the float64
        rerank included, runs there; the reranked pairs' distances come back to be ordered).
    xb : ndarray of shape (nb, d) -- possibly a memory map larger than `working_memory` --
        or a `PreparedBase` (then `metric`, `device`, `screen_dtype` come from it).
    k : neighbours per query, 1 <= k <= nb (nb - 1 with `exclude_self`).
    metric : see `lookalike.knn.metrics`.
    device : torch device for the screen ('cpu', 'cuda', ...).
    working_memory : MiB for blocks of scores, base rows and candidates (default 1024).
    screen_dtype : precision of the screen GEMM; the result is exact whatever it is.
    exclude_self : `xq` is the base itself; no row is its own neighbour.
    limit : candidates held at once, all queries together, before the queries holding most
        fall back (default: `candidate_limit`).
    stats : filled in with what the search did.

    Returns
    -------
    D : ndarray of shape (nq, k), float32 -- distances, increasing (inner products: decreasing)
    I : ndarray of shape (nq, k), int64 -- indices into the base; ties go to the lower index
    """
    st = stats if stats is not None else SearchStats()
    t0 = time.perf_counter()
    if isinstance(xb, PreparedBase):
        base = xb
    else:  # streamed block by block, unless the base is one block: then the small-size path takes it
        dtype = screen_dtype if get_metric(metric).gemm else torch.float64  # cdist metrics: float64
        one = getattr(xb, "ndim", 0) == 2 and len(xb) <= base_block(xb.shape[1], dtype, budget_bytes(working_memory))
        base = PreparedBase(xb, metric, device=device, screen_dtype=screen_dtype,
                            working_memory=working_memory, materialise=one)
    st.screen_dtype = str(base.screen.dtype).removeprefix("torch.")
    if getattr(xq, "ndim", 0) != 2 or xq.shape[1] != base.d:
        raise InvalidParameter(f"queries of shape {getattr(xq, 'shape', None)} do not match a base of {base.d} "
                               "dimensions")
    k = check_k(k, base.nb, exclude_self)
    nq = len(xq)
    D = np.full((nq, k), np.nan, dtype=np.float32)
    I = np.full((nq, k), -1, dtype=np.int64)
    wide, scale = base.query_scales(xq)  # refuses values beyond float32's range
    st.prepare_s += time.perf_counter() - t0
    if wide.any():  # queries beyond the base's scale: the others as usual, these in float64
        slow = np.arange(nq) if exclude_self else np.flatnonzero(wide)
        fast = np.flatnonzero(~wide) if not exclude_self else slow[:0]
        if len(fast):
            D[fast], I[fast] = knn(xq[fast], base, k, limit=limit, stats=st)
        t0 = time.perf_counter()
        _full_scan(base, xq, slow, k, D, I, exclude_self, scale, torch.float64)
        st.fallbacks += len(slow)
        st.fallback_s += time.perf_counter() - t0
        return _checked(D, I)
    _search(base, xq, k, D, I, exclude_self, limit, st, scale)
    return _checked(D, I)


def _checked(D: np.ndarray, I: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """D and I, every row of them written by this call (else a bug, said as one)."""
    if (I < 0).any():
        row = int(np.flatnonzero((I < 0).any(axis=1))[0])
        raise RuntimeError(f"internal: query {row} was left without its neighbours")
    return D, I


def _search(base: PreparedBase, xq: np.ndarray, k: int, D: np.ndarray, I: np.ndarray, exclude_self: bool,
            limit: int | None, st: SearchStats, scale: float) -> None:
    """Stages 2-6 for queries within the base's scale, into D and I; `scale`: the rerank's."""
    t0 = time.perf_counter()
    nq = len(xq)
    q_rows = prepare_rows(base.screen, xq, base.device, working_memory=base.working_memory)
    qw = base.query_block(nq, MIN_QUERY_BLOCK) if base.rows is not None and limit is None else 0
    st.prepare_s += time.perf_counter() - t0

    fb = np.zeros(nq, dtype=bool)  # queries that overflowed their window, searched again below
    if qw >= min(nq, MIN_QUERY_BLOCK):  # every score of a query block in one block (the small-size path)
        st.path = "one block" if qw >= nq else "query blocks"
        st.blocks = [qw, base.nb]
        # the blocks' pairs are refined, reranked and picked together (each of those stages
        # costs a fixed part per call), up to a block's candidate limit held at once
        held: list[tuple[torch.Tensor, torch.Tensor]] = []
        for lo, hi in ranges(nq, qw):
            t0 = time.perf_counter()
            r, c, count = _one_block(base, q_rows[lo:hi], k, exclude_self, lo)
            cap = candidate_limit(k, hi - lo, base.budget)
            r, c, over = capped(r, c, hi - lo, cap, count)
            fb[lo:hi] = over.cpu().numpy()
            st.screen_s += time.perf_counter() - t0
            if held and sum(len(p[0]) for p in held) + len(r) > cap:
                pairs_held, held = _joined(held), []  # the blocks' own tensors go as they are joined
                _finish(base, xq, *pairs_held, k, D, I, scale, st)
                del pairs_held
            r += lo  # rows of the block's pairs count from its first query (a tensor of its own)
            held.append((r, c))
        _finish(base, xq, *_joined(held), k, D, I, scale, st)
    else:
        t0 = time.perf_counter()
        qb, bb = base.block_sizes(nq)
        st.blocks = [qb, bb]
        st.path = "blocks"
        r, c, fallback = _screen(base, q_rows, k, (qb, bb), exclude_self, limit or candidate_limit(k, nq, base.budget))
        fb = fallback.cpu().numpy()
        st.screen_s += time.perf_counter() - t0
        _finish(base, xq, r, c, k, D, I, scale, st)

    t0 = time.perf_counter()
    # queries that overflowed the window, and any left with fewer than k candidates
    fb_rows = np.union1d(np.flatnonzero(fb), np.flatnonzero(I[:, 0] < 0))
    st.fallbacks += len(fb_rows)
    if len(fb_rows):
        _full_scan(base, xq, fb_rows, k, D, I, exclude_self, scale)
    st.fallback_s += time.perf_counter() - t0


def _joined(held: list[tuple[torch.Tensor, torch.Tensor]]) -> tuple[torch.Tensor, torch.Tensor]:
    """The pairs of consecutive query blocks as one set (rows stay ascending)."""
    if len(held) == 1:
        return held[0]
    return torch.cat([r for r, _ in held]), torch.cat([c for _, c in held])


def _finish(base: PreparedBase, xq: np.ndarray, r: torch.Tensor, c: torch.Tensor, k: int, D: np.ndarray,
            I: np.ndarray, scale: float, st: SearchStats) -> None:
    """Stages 4-5 for the window's pairs (r, c): the fp32 refinement of a wide window where
    torch reranks (`refines`: a GPU, `LOOKALIKE_JIT=0`), the float64 rerank, and each query's
    k best into D and I."""
    st.candidates += len(r)
    if refines(base.screen.dtype, base.device, xq, base.xb):  # a wide window before torch's rerank: narrowed in fp32
        t0 = time.perf_counter()
        r, c = refine(base, xq, r, c, k)
        st.refine_s += time.perf_counter() - t0
    t0 = time.perf_counter()
    st.reranked += len(r)
    rows, cols, dist = _rerank(base, xq, r, c, scale)
    pick(base.metric, rows, cols, dist, k, D, I, scale)
    st.rerank_s += time.perf_counter() - t0


def _screen(base: PreparedBase, q_rows: Rows, k: int, blocks: tuple[int, int], exclude_self: bool,
            limit: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Stages 2-3: every base block against every query block into one reused buffer of
    scores, each block's scores into the window. Returns the window's (query, base row)
    pairs and the queries that overflowed it."""
    screen, dev, nq = base.screen, base.device, len(q_rows.l2)
    qb, bb = blocks
    win = Window(nq, k, 2 * screen.bound(q_rows, base.extent), limit,
                 torch.float32 if base.metric.gemm else torch.float64, dev)
    buf = scratch(min(nq, qb) * min(base.nb, bb), dev) if base.metric.gemm else None
    for blo, bhi, b_rows in base.blocks(bb):
        if base.rows is None:  # a streamed base: the bound grows with the rows seen so far,
            # which is enough: a neighbour in this block is within its own error plus theirs
            win.widen(2 * screen.bound(q_rows, base.extent))
        for qlo, qhi in ranges(nq, qb):
            out = None if buf is None else buf[: (qhi - qlo) * (bhi - blo)].view(qhi - qlo, bhi - blo)
            s = screen.scores(q_rows[qlo:qhi], b_rows, out=out)
            if exclude_self and max(qlo, blo) < min(qhi, bhi):
                r = torch.arange(max(qlo, blo), min(qhi, bhi), device=dev)
                s[r - qlo, r - blo] = math.inf
            win.add(qlo, s, blo)
    r, c, fallback = win.result()
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
    return r, c, fallback


def _one_block(base: PreparedBase, q_rows: Rows, k: int, exclude_self: bool,
               offset: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Stages 2-3 when the scores of a block of queries (query `offset` on) against the whole
    materialised base fit in one block (`PreparedBase.query_block`): one GEMM (or cdist),
    each query's k-th score, and the pairs inside its window (k-th + 2E), with no base
    blocks to merge and no running window. Rows of the pairs count from the block's first
    query; the pairs per query come too when the compiled selection (`selection`) counted them."""
    nq, n = len(q_rows.l2), len(q_rows.l2) * base.nb
    screen = base.screen
    # an int16 screen's two blocks of int32 sums share one buffer: its first half is the scores'
    buf = scratch(2 * n if screen.split else n, base.device) if base.metric.gemm else None
    out = None if buf is None else buf[:n].view(nq, base.nb)
    if base.metric.gemm and selection.usable(base.device, screen.dtype, k):  # compiled selection
        width = 2 * screen.bound(q_rows, base.extent)
        self_offset = offset if exclude_self else -1
        if screen.split:  # int16: both blocks of sums, turned into scores by the selection
            d1, d23 = screen.sums(q_rows, base.rows, out.view(torch.int32), buf[n:].view(torch.int32).view(nq, base.nb))
            return selection.window_pairs(d1, k, width, self_offset=self_offset, fine=d23,
                                          int8=(q_rows.scale, base.rows.scale, base.rows.sq))
        if screen.int8:  # the int32 sums, turned into scores in place by the selection
            d, _ = screen.sums(q_rows, base.rows, out.view(torch.int32))
            # a window holding many more rows than k (NARROW_FACTOR; k up to selection.MAX_K) is
            # narrowed by each pair's own bound: rows of smaller norm or quantisation error than
            # the base's largest get a narrower one

            def pair():
                a, b, c, g = screen.pair_bound(q_rows)
                y = base.rows.l2.numpy()
                return a, b, c, g * y * y, y, base.rows.qerr.numpy()

            return selection.window_pairs(d, k, width, self_offset=self_offset,
                                          int8=(q_rows.scale, base.rows.scale, base.rows.sq), pair=pair,
                                          excess=max(NARROW_MIN, NARROW_FACTOR * base.nb // max(1, base.d)))
        return selection.window_pairs(screen.scores(q_rows, base.rows, out=out), k, width, self_offset=self_offset)
    s = screen.scores(q_rows, base.rows, out=out)
    if exclude_self:
        n = len(s)
        s[torch.arange(n, device=s.device), torch.arange(offset, offset + n, device=s.device)] = math.inf
    r, c = one_block(s, k, 2 * screen.bound(q_rows, base.extent))
    if base.device.type == "cuda":
        torch.cuda.synchronize(base.device)
    return r, c, None


def _rerank(base: PreparedBase, xq: np.ndarray | torch.Tensor, r: torch.Tensor, c: torch.Tensor,
            scale: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Exact float64 distances of the pairs (r, c), on the base's device when it is not the
    CPU or when the queries are a tensor the compiled kernels cannot read
    (`device_pair_distances`), else from the arrays (`pair_distances`: the kernels, or NumPy
    in cache-sized chunks). Returns rows, cols and distances as NumPy arrays for `pick`."""
    easy = rows_comfortable(base, xq) if len(r) else False
    if base.device.type != "cpu" or (isinstance(xq, torch.Tensor) and not pairs.usable(xq, base.xb)):
        dist = device_pair_distances(base, xq, r, c, scale, comfortable=easy).cpu().numpy()
        return r.cpu().numpy(), c.cpu().numpy(), dist
    rows, cols = r.cpu().numpy(), c.cpu().numpy()
    return rows, cols, pair_distances(base.metric, xq, base.xb, rows, cols, scale=scale, comfortable=easy)


def _full_scan(base: PreparedBase, xq: np.ndarray, rows: np.ndarray, k: int, D: np.ndarray, I: np.ndarray,
               exclude_self: bool, scale: float, dtype: torch.dtype = torch.float32) -> None:
    """The fallback: queries whose candidates overflowed are screened again in fp32 (float64
    for queries beyond the base's scale) against the whole base with no cap on candidates
    (all nb scores of a group of queries are kept), then every candidate inside the window
    is reranked in float64."""
    m, dev = base.metric, base.device
    fp = Screen(m, base.d, dtype, base.mean64, base.scale)
    nb = base.nb
    group = max(1, min(len(rows), int(base.budget // 2 // (nb * 8))))
    _, bb = base.block_sizes(group)
    for glo, ghi in ranges(len(rows), group):
        g = rows[glo:ghi]
        q = fp.prepare(as_tensor(xq[g], dev))
        scores = torch.empty((len(g), nb), dtype=torch.float64, device=dev)
        extent = Extent()
        if base.screen.dtype == fp.dtype:  # the base's own fp32 (or float64) rows serve as they are
            blocks = base.blocks(bb)
        else:
            blocks = ((lo, hi, fp.prepare(as_tensor(np.asarray(base.xb[lo:hi]), dev))) for lo, hi in ranges(nb, bb))
        for blo, bhi, b in blocks:
            extent.update(b)
            scores[:, blo:bhi] = fp.scores(q, b)
        if exclude_self:
            scores[torch.arange(len(g), device=dev), torch.as_tensor(g, device=dev)] = math.inf
        kth = torch.kthvalue(scores, k, dim=1).values
        within = scores <= (kth + 2 * fp.bound(q, extent))[:, None]
        rr, cc = within.nonzero(as_tuple=True)
        pr, pc, dist = _rerank(base, xq, torch.as_tensor(g, device=dev)[rr], cc, scale)
        short = pick(m, pr, pc, dist, k, D, I, scale)
        if len(short):
            raise RuntimeError(f"internal: the full scan of query {int(short[0])} kept fewer than {k} candidates")

