"""The exact-search core. Everything else in `lookalike.knn` wraps this.

    knn(xq, xb, k, metric) -> (D, I)

1. Prepare: the base is centred (translation-invariant metrics) or normalised (cosine) and
   cast to the screen precision, once (`PreparedBase`, what `fit` keeps), or block by block
   while streaming a memory-mapped base.
2. Screen: base blocks meet query blocks in one GEMM each (a float64 cdist for
   l1/chebyshev), written into one reused buffer. A running top-K (K = k + extra) keeps
   each query's best-scoring candidates. Nothing of size nq x nb is ever built.
3. Bound: screen scores carry rounding error. For each query an explicit bound E (from the
   unit roundoff of the screen precision, the dimension and the vector norms) says how far
   any score can be off: every true neighbour scores within 2E of the k-th screened score.
4. Rerank: the candidates inside that window are scored again exactly, in float64, and
   sorted by (distance, index), so ties go to the lower index.
5. Fallback: a query whose K-th kept candidate is still inside the window may have lost
   candidates; it is screened again in fp32 with no cap on candidates, every candidate in
   its window reranked in float64, and it is counted in `SearchStats.fallbacks`.

The result has the same neighbour sets as a float64 brute force, whatever the screen
precision: a lower precision only widens the window.
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np
import torch

from .metrics import Metric, exact_distances, get_metric

# Default working memory in MiB, as scikit-learn's `working_memory`. It bounds the blocks
# of scores and of base rows held at once. It does not count the inputs, the prepared
# copies of queries and base (materialised by `PreparedBase`), or the outputs.
WORKING_MEMORY_MIB = 1024
UNIT_ROUNDOFF = {torch.float64: 2.0**-53, torch.float32: 2.0**-24, torch.bfloat16: 2.0**-8,
                 torch.float16: 2.0**-11}


@dataclass
class SearchStats:
    """What one search did: time per stage, candidates reranked, queries that fell back."""

    screen_dtype: str = "float32"
    prepare_s: float = 0.0
    screen_s: float = 0.0
    rerank_s: float = 0.0
    fallback_s: float = 0.0
    candidates: int = 0
    fallbacks: int = 0
    blocks: list[int] = field(default_factory=list)

    def as_dict(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if k != "blocks"} | {"block_shape": self.blocks}


def _ranges(n: int, step: int) -> Iterator[tuple[int, int]]:
    for lo in range(0, n, step):
        yield lo, min(lo + step, n)


def _from_numpy(x: np.ndarray) -> torch.Tensor:
    """Share `x`'s memory without copying; read-only arrays (memory maps) are only ever read."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "The given NumPy array is not writable"
        return torch.from_numpy(np.ascontiguousarray(x))


def _as_tensor(x: np.ndarray, device: torch.device) -> torch.Tensor:
    t = _from_numpy(x)
    return t.to(device=device, dtype=torch.float64 if t.dtype == torch.float64 else torch.float32)


def int8_dots(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Exact int32 dot products of int8 rows, a (m, d) against b (n, d) -> (m, n).

    torch._int_mm (VNNI/AMX on the CPU) returns garbage for d == 1 (torch 2.13, measured);
    that case is a plain outer product.
    """
    if a.shape[1] == 1:
        return a.int() * b.int().T
    return torch._int_mm(a, b.T)


@dataclass
class Rows:
    """Rows ready for the screen, with the per-row figures the error bound needs."""

    data: torch.Tensor                 # screen operand: float32/bf16/fp16, int8, or float64 (cdist)
    l2: torch.Tensor                   # float64 L2 norm of the prepared rows (L1 for manhattan)
    sq: torch.Tensor | None = None     # float32 squared L2 norm (centred metrics)
    l1: torch.Tensor | None = None     # float64 L1 norm (int8 screens)
    scale: torch.Tensor | None = None  # float32 quantisation step (int8 screens)

    def __getitem__(self, sl: slice) -> Rows:
        return Rows(*(None if v is None else v[sl] for v in (self.data, self.l2, self.sq, self.l1, self.scale)))


@dataclass
class Extent:
    """Largest per-row figures over a base, for bounds that hold for every candidate."""

    l2: float = 0.0
    l1: float = 0.0
    scale: float = 0.0

    def update(self, rows: Rows) -> None:
        self.l2 = max(self.l2, float(rows.l2.max()))
        if rows.l1 is not None:
            self.l1 = max(self.l1, float(rows.l1.max()))
        if rows.scale is not None:
            self.scale = max(self.scale, float(rows.scale.max()))


class Screen:
    """How one metric is screened at one precision: operands, scores, and their error bound.

    Precisions: float32; bfloat16/float16 (fp32 accumulation, output rounded to the type);
    int8 (rows quantised with their own step, exact int32 accumulation: VNNI/AMX units run it
    about 3x faster than fp32 on the CPU).
    """

    def __init__(self, metric: Metric, d: int, dtype: torch.dtype, mean: torch.Tensor | None):
        self.metric, self.d, self.mean = metric, d, mean
        self.dtype = dtype if metric.gemm else torch.float64
        self.int8 = self.dtype == torch.int8
        u32 = UNIT_ROUNDOFF[torch.float32]
        u_in = UNIT_ROUNDOFF[dtype] if dtype in (torch.bfloat16, torch.float16) else 0.0
        self.u_out = u_in  # a low-precision GEMM also rounds its output to its own type
        if dtype == torch.float32 and torch.backends.cuda.matmul.allow_tf32:
            u_in = 2.0**-11  # CUDA may run fp32 GEMMs in TF32 (10-bit mantissa) when allowed
        self.gamma = d * u32 / (1 - d * u32)  # fp32 accumulation over d terms
        # relative error of each prepared element: centring or normalising, then the cast
        u_prep = u32 if metric.centred else (2 * u32 + self.gamma if metric.normalised else 0.0)
        self.u_c = u_prep + u_in + u_prep * u_in

    def prepare(self, x: torch.Tensor) -> Rows:
        """Raw rows -> centred / normalised, then cast or quantised for the screen."""
        if not self.metric.gemm:
            x = x.double()
            return Rows(x, self.norms(x))
        x = x.float()
        if self.metric.centred:
            x = x - self.mean
        elif self.metric.normalised:
            norms = torch.linalg.vector_norm(x, dim=1, keepdim=True)
            x = x / torch.where(norms > 0, norms, 1.0)
        l2 = torch.linalg.vector_norm(x, dim=1)
        sq = l2 * l2 if self.metric.centred else None
        if not self.int8:
            return Rows(x.to(self.dtype), l2.double(), sq)
        scale = x.abs().amax(dim=1) / 127.0
        scale = torch.where(scale > 0, scale, 1.0)
        q = torch.round(x / scale[:, None]).clamp_(-127, 127).to(torch.int8)
        return Rows(q, l2.double(), sq, x.abs().sum(1).double(), scale)

    def norms(self, x: torch.Tensor) -> torch.Tensor:
        """Row norms for the bound (L1 for manhattan), float64."""
        if self.metric.name == "manhattan":
            return x.abs().sum(1).double()
        return torch.linalg.vector_norm(x, dim=1).double()

    def scores(self, q: Rows, b: Rows, out: torch.Tensor | None = None) -> torch.Tensor:
        """Screen scores (smaller is better) of query rows `q` against base rows `b`.

        `out`, a reused (len(q), len(b)) float32 buffer, saves allocating (and page-faulting)
        a fresh block of scores for every GEMM.
        """
        m = self.metric
        if not m.gemm:
            return torch.cdist(q.data, b.data, p=1.0 if m.name == "manhattan" else math.inf)
        if self.int8:  # exact int32 dot products, then dots = sx * sy * D
            dots = torch.mul(int8_dots(q.data, b.data), b.scale[None, :], out=out)
            if m.centred:
                return torch.addcmul(b.sq[None, :], q.scale[:, None], dots, value=-2.0, out=dots)
            return dots.mul_(q.scale[:, None]).neg_()
        if q.data.dtype != torch.float32:  # bf16/fp16 GEMM: fp32 accumulation, output in q's type
            dots = (q.data @ b.data.T).float()
            return b.sq - 2 * dots if m.centred else -dots
        if m.centred:
            return torch.addmm(b.sq, q.data, b.data.T, beta=1.0, alpha=-2.0, out=out)
        return torch.mm(q.data, b.data.T, out=out).neg_()

    def bound(self, q: Rows, base: Extent) -> torch.Tensor:
        """Per query, the largest error any of its screen scores can carry (float64)."""
        m, u32 = self.metric, UNIT_ROUNDOFF[torch.float32]
        slack = 1.5  # covers the second-order terms left out below
        qn, ymax = q.l2, base.l2
        if not m.gemm:
            if m.name == "chebyshev":
                return torch.zeros_like(qn)  # differences and maxima of float32 inputs are exact in float64
            g64 = self.d * UNIT_ROUNDOFF[torch.float64] / (1 - self.d * UNIT_ROUNDOFF[torch.float64])
            return slack * 2 * g64 * (qn + ymax)
        cross = (2 * self.u_c + self.gamma + 3 * u32 + self.u_out) * qn * ymax
        if self.int8:
            # each element is off by at most half its row's step: |x.y - sx sy D| <=
            # sy/2 |x|_1 + sx/2 |y|_1 + d sx sy / 4; then fp32 rounding of the scaling
            qs = q.scale.double()
            quant = base.scale / 2 * q.l1 + qs / 2 * base.l1 + self.d * qs * base.scale / 4
            cross = cross + quant * (1 + 4 * u32)
        if m.centred:  # |y|^2 - 2 x.y: the cross term twice, the squared norm (fp32 sum) once
            return slack * (2 * cross + (2 * self.u_c + self.gamma + 2 * u32) * ymax**2)
        return slack * cross


class PreparedBase:
    """A base made ready for the screen once, so that every search reuses it.

    With `materialise=False` (memory maps larger than the working memory) only the mean is
    kept, and each search prepares base blocks as it streams through them.
    """

    def __init__(self, xb: np.ndarray, metric: str = "euclidean", *, device: str | torch.device = "cpu",
                 screen_dtype: torch.dtype = torch.float32, working_memory: float | None = None,
                 materialise: bool | None = None):
        self.xb = xb
        self.metric = get_metric(metric)
        self.device = torch.device(device)
        self.nb, self.d = xb.shape
        self.working_memory = working_memory
        self.block = max(1, min(self.nb, 8192, int(self.budget / 4 // max(1, self.d * 8))))
        mean = self._mean() if self.metric.centred else None
        self.screen = Screen(self.metric, self.d, screen_dtype, mean)
        if materialise is None:
            materialise = not isinstance(xb, np.memmap)
        self.rows: Rows | None = None
        self.extent = Extent()
        if materialise:
            parts = []
            for lo, hi in _ranges(self.nb, self.block):
                parts.append(self._prepare_block(lo, hi))
            self.rows = Rows(*(None if parts[0].__dict__[f] is None else torch.cat([p.__dict__[f] for p in parts])
                               for f in ("data", "l2", "sq", "l1", "scale")))

    @property
    def budget(self) -> float:
        return (self.working_memory or WORKING_MEMORY_MIB) * 2**20

    def _mean(self) -> torch.Tensor:
        """Mean row of the base. Any centre keeps distances; a good one keeps norms small."""
        total = torch.zeros(self.d, dtype=torch.float64, device=self.device)
        for lo, hi in _ranges(self.nb, self.block):
            total += _as_tensor(self.xb[lo:hi], self.device).sum(0).double()
        return (total / max(1, self.nb)).float()

    def _prepare_block(self, lo: int, hi: int) -> Rows:
        rows = self.screen.prepare(_as_tensor(self.xb[lo:hi], self.device))
        self.extent.update(rows)
        return rows

    def blocks(self, bb: int) -> Iterator[tuple[int, int, Rows]]:
        """(lo, hi, screen rows) for consecutive base blocks of `bb` rows."""
        for lo, hi in _ranges(self.nb, bb):
            yield lo, hi, (self.rows[lo:hi] if self.rows is not None else self._prepare_block(lo, hi))

    def block_sizes(self, nq: int) -> tuple[int, int]:
        """(query rows, base rows) per block: a block of scores and its top-k workspace in
        half the working memory, a block of base rows in the other half."""
        elem = 1 if self.screen.int8 else torch.finfo(self.screen.dtype).bits // 8
        bb = max(1, min(self.nb, 8192, int(self.budget / 2 // max(1, self.d * (4 + elem)))))
        # 2048 x 8192 scores (64 MiB) keep the GEMM efficient; larger blocks only make the
        # passes over the scores (mask, top-k) slower.
        qb = max(1, min(nq, 2048, int(self.budget / 2 // (bb * 4 * 3))))
        return qb, bb


def smallest_k(s: torch.Tensor, K: int, groups: int = 8) -> tuple[torch.Tensor, torch.Tensor]:
    """Values and column indices of the K smallest scores of each row, unordered.

    The K smallest of a row lie in the K column groups with the smallest minima (a group
    outside them would have K smaller elements before its own). So: minima over `groups`
    strided column groups (one vectorised pass), a top-K of those, then a top-K of just
    the K * groups candidate columns. Measured 2.2x faster than one top-K over the row.
    """
    q, b = s.shape
    if b % groups or b < 4 * groups * K:
        return torch.topk(s, min(K, b), dim=1, largest=False, sorted=False)
    w = b // groups
    minima = s.view(q, groups, w).amin(1)  # minimum over columns j, j + w, j + 2w, ...
    _, sub = torch.topk(minima, K, dim=1, largest=False, sorted=False)
    cols = (sub[:, :, None] + torch.arange(groups, device=s.device) * w).reshape(q, -1)
    vals, pos = torch.topk(torch.gather(s, 1, cols), K, dim=1, largest=False, sorted=False)
    return vals, torch.gather(cols, 1, pos)


def _merge(best_s: torch.Tensor, best_i: torch.Tensor, s: torch.Tensor, offset: int) -> None:
    """Fold a block of scores `s` (rows matching `best_*`) into the running top-K, in place.

    The block's own top-K, then a top-K of (kept, new): measured 3x cheaper on the CPU
    than masking the scores that beat the current K-th and gathering those.
    """
    K = best_s.shape[1]
    vals, pos = smallest_k(s, K)
    merged_s = torch.cat([best_s, vals.to(best_s.dtype)], 1)
    top_s, top_p = torch.topk(merged_s, K, dim=1, largest=False, sorted=False)
    best_i.copy_(torch.gather(torch.cat([best_i, pos + offset], 1), 1, top_p))
    best_s.copy_(top_s)


def knn(xq: np.ndarray, xb: np.ndarray | PreparedBase, k: int, metric: str = "euclidean", *,
        device: str | torch.device = "cpu", working_memory: float | None = None,
        screen_dtype: torch.dtype = torch.float32, exclude_self: bool = False, extra: int | None = None,
        stats: SearchStats | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Exact k nearest neighbours of each row of `xq` among the rows of `xb`.

    Parameters
    ----------
    xq : ndarray of shape (nq, d), float32, float16 or float64
    xb : ndarray of shape (nb, d) -- possibly a memory map larger than `working_memory` --
        or a `PreparedBase` (then `metric`, `device`, `screen_dtype` come from it).
    k : neighbours per query, 1 <= k <= nb (nb - 1 with `exclude_self`).
    metric : see `lookalike.knn.metrics`.
    device : torch device for the screen ('cpu', 'cuda', ...).
    working_memory : MiB for blocks of scores and base rows (default 1024).
    screen_dtype : precision of the screen GEMM; the result is exact whatever it is.
    exclude_self : `xq` is the base itself; no row is its own neighbour.
    extra : candidates kept beyond k per query (default: `default_extra`).
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
    else:
        base = PreparedBase(xb, metric, device=device, screen_dtype=screen_dtype,
                            working_memory=working_memory, materialise=False)
    m, screen, dev = base.metric, base.screen, base.device
    st.screen_dtype = str(screen.dtype).removeprefix("torch.")
    nq = len(xq)
    n_valid = base.nb - 1 if exclude_self else base.nb
    K = min(n_valid, k + (default_extra(k, screen.dtype) if extra is None else extra))
    qb, bb = base.block_sizes(nq)
    st.blocks = [qb, bb]
    q_rows = screen.prepare(_as_tensor(xq, dev))
    best_s = torch.full((nq, K), math.inf, device=dev, dtype=torch.float32 if m.gemm else torch.float64)
    best_i = torch.full((nq, K), -1, device=dev, dtype=torch.int64)
    st.prepare_s += time.perf_counter() - t0

    t0 = time.perf_counter()
    buf = torch.empty(min(nq, qb) * min(base.nb, bb), device=dev) if m.gemm else None
    for blo, bhi, b_rows in base.blocks(bb):
        for qlo, qhi in _ranges(nq, qb):
            out = None if buf is None else buf[: (qhi - qlo) * (bhi - blo)].view(qhi - qlo, bhi - blo)
            s = screen.scores(q_rows[qlo:qhi], b_rows, out=out)
            if exclude_self and max(qlo, blo) < min(qhi, bhi):
                r = torch.arange(max(qlo, blo), min(qhi, bhi), device=dev)
                s[r - qlo, r - blo] = math.inf
            _merge(best_s[qlo:qhi], best_i[qlo:qhi], s, blo)
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
    st.screen_s += time.perf_counter() - t0

    # The window: every true neighbour's screen score is at most (k-th screened) + 2E.
    t0 = time.perf_counter()
    best64 = best_s.double()
    kth = torch.kthvalue(best64, k, dim=1).values if K > k else best64.max(dim=1).values
    window = kth + 2 * screen.bound(q_rows, base.extent)
    within = best64 <= window[:, None]
    st.candidates += int(within.sum())
    fallback = (within.sum(1) == K) & (K < n_valid)
    within_np, cand = within.cpu().numpy(), best_i.cpu().numpy()
    fb_rows = np.flatnonzero(fallback.cpu().numpy())
    ok_rows = np.flatnonzero(~fallback.cpu().numpy())
    D = np.empty((nq, k), dtype=np.float32)
    I = np.empty((nq, k), dtype=np.int64)
    _rerank(m, xq, base.xb, cand, within_np, ok_rows, k, D, I, base.budget)
    st.rerank_s += time.perf_counter() - t0

    t0 = time.perf_counter()
    st.fallbacks += len(fb_rows)
    if len(fb_rows):
        _full_scan(base, xq, fb_rows, k, D, I, exclude_self)
    st.fallback_s += time.perf_counter() - t0
    return D, I


def default_extra(k: int, dtype: torch.dtype) -> int:
    """Candidates kept beyond k. A query whose screen window holds more than k + extra falls
    back to a full search, so a wider window (lower precision) keeps more: measured on
    2048-d features, an fp32 window holds k + 1 points on average, an int8 one about 90."""
    if dtype == torch.int8:
        return max(256, k)
    if dtype in (torch.bfloat16, torch.float16):
        return max(64, k // 2)
    return max(8, k // 8)


def _best_k(m: Metric, dist: np.ndarray, idx: np.ndarray, k: int) -> np.ndarray:
    """Per row, positions of the k best by (distance, index); inner products largest first."""
    key = -dist if m.largest_first else dist
    return np.lexsort((idx, key), axis=-1)[:, :k]


def pair_distances(m: Metric, xq: np.ndarray, xb: np.ndarray, rows: np.ndarray, cols: np.ndarray,
                   chunk_bytes: int = 1 << 21) -> np.ndarray:
    """Exact float64 distances between query rows[i] and base cols[i], for every i.

    Pairs go in small chunks that stay in cache; base rows are read in storage order, which
    keeps a memory-mapped base's reads sequential.
    """
    out = np.empty(len(rows), dtype=np.float64)
    if not len(rows):
        return out
    d = xq.shape[1]
    order = np.argsort(cols, kind="stable")
    step = max(1, chunk_bytes // (8 * max(1, d)))
    q_t = _from_numpy(xq)
    for lo, hi in _ranges(len(order), step):
        sel = order[lo:hi]
        a = q_t.index_select(0, torch.from_numpy(rows[sel]))
        b = torch.from_numpy(np.ascontiguousarray(xb[cols[sel]]))
        out[sel] = exact_distances(m, a, b).numpy()
    return out


def _rerank(m: Metric, xq, xb, cand: np.ndarray, within: np.ndarray, rows: np.ndarray, k: int,
            D: np.ndarray, I: np.ndarray, budget: float) -> None:
    """Exact float64 scores of each row's in-window candidates; the best k by (distance, index)."""
    if not len(rows):
        return
    cand, within = cand[rows], within[rows]
    rr, cc = np.nonzero(within)
    dist = np.full(cand.shape, -np.inf if m.largest_first else np.inf)
    dist[rr, cc] = pair_distances(m, xq, xb, rows[rr], cand[rr, cc])
    idx = np.where(within, cand, np.iinfo(np.int64).max)
    pick = _best_k(m, dist, idx, k)
    D[rows] = np.take_along_axis(dist, pick, 1)
    I[rows] = np.take_along_axis(idx, pick, 1)


def _full_scan(base: PreparedBase, xq: np.ndarray, rows: np.ndarray, k: int, D: np.ndarray, I: np.ndarray,
               exclude_self: bool) -> None:
    """The fallback: queries whose candidates overflowed are screened again in fp32 against
    the whole base with no cap on candidates (all nb scores of a group of queries are kept),
    then every candidate inside the window is reranked in float64."""
    m, dev = base.metric, base.device
    fp = Screen(m, base.d, torch.float32, base.screen.mean)
    nb = base.nb
    group = max(1, min(len(rows), int(base.budget // 2 // (nb * 8))))
    _, bb = base.block_sizes(group)
    for glo, ghi in _ranges(len(rows), group):
        g = rows[glo:ghi]
        q = fp.prepare(_as_tensor(np.asarray(xq[g]), dev))
        scores = torch.empty((len(g), nb), dtype=torch.float64, device=dev)
        extent = Extent()
        if base.screen.dtype == fp.dtype:  # the base's own fp32 (or float64) rows serve as they are
            blocks = base.blocks(bb)
        else:
            blocks = ((lo, hi, fp.prepare(_as_tensor(np.asarray(base.xb[lo:hi]), dev))) for lo, hi in _ranges(nb, bb))
        for blo, bhi, b in blocks:
            extent.update(b)
            scores[:, blo:bhi] = fp.scores(q, b)
        if exclude_self:
            scores[torch.arange(len(g), device=dev), torch.as_tensor(g, device=dev)] = math.inf
        kth = torch.kthvalue(scores, k, dim=1).values
        within = scores <= (kth + 2 * fp.bound(q, extent))[:, None]
        rr, cc = (t.cpu().numpy() for t in within.nonzero(as_tuple=True))
        dist = pair_distances(m, xq, base.xb, g[rr], cc)
        key = -dist if m.largest_first else dist
        order = np.lexsort((cc, key, rr))
        starts = np.searchsorted(rr[order], np.arange(len(g)))
        for j, r in enumerate(g):
            best = order[starts[j] : starts[j] + k]
            D[r] = dist[best]
            I[r] = cc[best]


def gemm_floor(base: PreparedBase, xq: np.ndarray, dtype: torch.dtype = torch.float32) -> float:
    """Seconds for the GEMMs alone of a search of `xq` (same blocks, one reused output
    buffer), at `dtype` (float32 or int8): the floor of any brute force at that precision.
    Operands are prepared before the clock starts. For benchmarks."""
    qb, bb = base.block_sizes(len(xq))
    screen = Screen(base.metric, base.d, dtype, base.screen.mean)
    q = screen.prepare(_as_tensor(xq, base.device)).data
    blocks = [screen.prepare(_as_tensor(base.xb[lo:hi], base.device)).data for lo, hi in _ranges(base.nb, bb)]
    out_dtype = torch.int32 if dtype == torch.int8 else dtype
    buf = torch.empty(min(len(xq), qb) * min(base.nb, bb), device=base.device, dtype=out_dtype)
    t0 = time.perf_counter()
    for (blo, bhi), b in zip(_ranges(base.nb, bb), blocks):
        for qlo, qhi in _ranges(len(xq), qb):
            out = buf[: (qhi - qlo) * (bhi - blo)].view(qhi - qlo, bhi - blo)
            if dtype == torch.int8:
                torch._int_mm(q[qlo:qhi], b.T, out=out)
            else:
                torch.mm(q[qlo:qhi], b.T, out=out)
    if base.device.type == "cuda":
        torch.cuda.synchronize(base.device)
    return time.perf_counter() - t0
