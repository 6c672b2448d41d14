"""Stages 4-5 of the engine: a wide window refined in fp32, then the exact float64 rerank.

- `refine`: each pair of a bf16 or int8 window is scored again in fp32 with its own error
  bound; only pairs that can still be among their query's k are kept. Only where torch
  reranks (`refines`): the compiled rerank takes the window whole.
- `pair_distances`: exact float64 distances of (query, base row) pairs, on the CPU from NumPy
  arrays; `device_pair_distances` the same on the base's device (a GPU: the rerank stays
  there; or queries given as a tensor).
- `pick`: each query's k best pairs by (distance, base index), so ties go to the lower index.

On the CPU the rerank and the pick run as compiled kernels (`pairs.py`) when `jit.enabled()`
and the arrays are float32 or float64; the torch code here serves the GPU, `LOOKALIKE_JIT=0`
and other input types, with the same results.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from ..errors import InvalidParameter
from . import jit, pairs
from .blocks import MAX_VALUE, as_tensor, from_numpy, ranges
from .metrics import Metric, exact_distances
from .scaling import pow2_scale
from .screen import UNIT_ROUNDOFF, PreparedBase, comfortable, fp32_gemm_roundoff

GPU_CHUNK_BYTES = 1 << 30  # the most bytes of gathered rows a chunk of pairs holds on a GPU (`device_chunk`)


def pair_distances(m: Metric, xq: np.ndarray, xb: np.ndarray, rows: np.ndarray, cols: np.ndarray,
                   chunk_bytes: int = 1 << 21, scale: float = 1.0, comfortable: bool = False) -> np.ndarray:
    """Exact float64 distances between query rows[i] and base cols[i], for every i, of rows
    times `scale` (a power of two; see `exact_distances`): distances times scale**m.power.
    `comfortable`: see `exact_distances`.

    Pairs go in small chunks that stay in cache: in the order given when the base is in
    memory (the engine gives them by query, so a chunk holds a few queries), in base order
    for a memory-mapped base, which is then read sequentially.
    """
    if pairs.usable(xq, xb):
        return pairs.distances(m, xq, xb, rows, cols, scale, comfortable)
    out = np.empty(len(rows), dtype=np.float64)
    step = max(1, chunk_bytes // (8 * max(1, xq.shape[1])))
    q_t = from_numpy(xq)
    if not isinstance(xb, np.memmap):
        b_t, r_t, c_t = from_numpy(xb), torch.from_numpy(rows), torch.from_numpy(cols)
        out_t = torch.from_numpy(out)
        for lo, hi, a in _query_chunks(q_t, rows, r_t, step):
            out_t[lo:hi] = exact_distances(m, a, b_t.index_select(0, c_t[lo:hi]), scale, comfortable)
        return out
    order = np.argsort(cols, kind="stable")
    for lo, hi in ranges(len(order), step):
        sel = order[lo:hi]
        a = q_t.index_select(0, torch.from_numpy(rows[sel]))
        b = torch.from_numpy(np.ascontiguousarray(xb[cols[sel]]))
        out[sel] = exact_distances(m, a, b, scale, comfortable).numpy()
    return out


def _query_chunks(q_t: torch.Tensor, rows: np.ndarray, r_t: torch.Tensor, step: int):
    """(lo, hi, query rows of pairs lo..hi) in chunks of at most `step` pairs. Pairs grouped by
    query with many to each (a large k) go one query at a time, its row broadcast against its
    base rows (one gather a pair, not two); others gather a query row for every pair."""
    n = len(rows)
    starts = pairs.group_starts(rows)[:-1]
    if n and pairs.grouped(rows) and n >= len(starts) * step // 4:
        for s, e in zip(starts, np.r_[starts[1:], n]):
            a = q_t[int(rows[s]): int(rows[s]) + 1]
            for lo, hi in ranges(int(e - s), step):
                yield s + lo, s + hi, a
        return
    for lo, hi in ranges(n, step):
        yield lo, hi, q_t.index_select(0, r_t[lo:hi])


def device_pair_distances(base: PreparedBase, xq: np.ndarray | torch.Tensor, rows: torch.Tensor,
                          cols: torch.Tensor, scale: float = 1.0, chunk_bytes: int = 1 << 26,
                          comfortable: bool = False) -> torch.Tensor:
    """`pair_distances` on the base's device: the queries and the base as given (not as
    screened: `raw_rows`), gathered pair by pair in chunks, each pair's float64 distance
    computed on its own (`exact_distances`, as on the CPU). Returns float64 on the device."""
    dev = base.device
    q = as_tensor(xq, dev)
    b = base.raw_rows()
    rows, cols = rows.to(dev), cols.to(dev)
    out = torch.empty(len(rows), dtype=torch.float64, device=dev)
    step = max(1, device_chunk(dev, chunk_bytes) // (16 * max(1, base.d)))
    for lo, hi in ranges(len(rows), step):
        out[lo:hi] = exact_distances(base.metric, q.index_select(0, rows[lo:hi]), b.index_select(0, cols[lo:hi]),
                                     scale, comfortable)
    return out


def device_chunk(dev: torch.device, chunk_bytes: int) -> int:
    """Bytes of gathered rows a chunk of pairs holds: `chunk_bytes` on the CPU (cache-sized);
    on a GPU up to `GPU_CHUNK_BYTES` (a 32nd of its free memory at most: a chunk's peak, its
    rows widened, the query rows gathered and the products, is several times its size), since there
    each chunk costs a few dozen kernel launches whatever its size (measured on an H200:
    900,000 pairs of a bf16 window refined in chunks of 512 took 1.3 s, launch-bound)."""
    if dev.type != "cuda":
        return chunk_bytes
    return max(chunk_bytes, min(GPU_CHUNK_BYTES, torch.cuda.mem_get_info(dev)[0] // 32))


def rows_comfortable(base: PreparedBase, xq: np.ndarray | torch.Tensor) -> bool:
    """Whether every row of the base and of `xq` is float32 with its largest value within
    `scaling.COMFORT` (or zero): cosine's rerank then needs no scaling (`exact_distances`)."""
    if not base.metric.normalised or not base.rows_comfortable or base.xb.dtype != np.float32 \
            or xq.dtype not in (np.float32, torch.float32):
        return False
    q = torch.as_tensor(xq) if isinstance(xq, torch.Tensor) else from_numpy(xq)
    return comfortable(row_max(q))


def row_max(x: torch.Tensor) -> torch.Tensor:
    """Each row's largest absolute value (0 for rows of no values): `abs().amax`, measured
    16x faster than an inf-norm `vector_norm` on the CPU (200 x 1,280 float32, one thread)."""
    return x.abs().amax(1) if x.shape[1] else x.new_zeros(len(x))


def pick(m: Metric, rows: np.ndarray, cols: np.ndarray, dist: np.ndarray, k: int, D: np.ndarray,
         I: np.ndarray, scale: float = 1.0) -> np.ndarray:
    """For each query among `rows`, its k best pairs by (distance, base index) into D and I.

    "Best" is `m.sort_key` ascending (inner products: largest first). `dist` are of rows
    times `scale` (see `pair_distances`); D gets them unscaled. Returns the queries that
    hold fewer than k pairs, left untouched for the caller to search otherwise. Refuses
    distances that float32 (D's type) cannot hold.
    """
    if not len(rows):
        return np.empty(0, dtype=np.int64)
    if (jit.enabled() and pairs.grouped(rows) and D.dtype == np.float32 and I.dtype == np.int64
            and D.flags.c_contiguous and I.flags.c_contiguous):
        # the small-size path's pairs: a compiled selection per query, written into D and I
        unscale = 1.0 / scale**m.power if scale != 1.0 and m.power else 1.0  # a power of two: exact
        short, top = pairs.pick_into(rows, cols, m.sort_key(dist), dist, k, unscale, D, I)
        check_representable(m, np.array([top]))
        return short
    order = _order(rows, cols, m.sort_key(dist))
    rs = rows[order]
    starts = pairs.group_starts(rs)[:-1]
    full = np.diff(np.r_[starts, len(rs)]) >= k
    short = rs[starts[~full]]
    starts = starts[full]
    take = order[(starts[:, None] + np.arange(k)).ravel()]
    q = rs[starts]
    best = dist[take]
    if scale != 1.0 and m.power:
        best = best / scale**m.power  # exact: a power of two (subnormal results aside)
    check_representable(m, best)
    D[q] = best.reshape(-1, k)
    I[q] = cols[take].reshape(-1, k)
    return short


def _order(rows: np.ndarray, cols: np.ndarray, key: np.ndarray) -> np.ndarray:
    """The order of `np.lexsort((cols, key, rows))`: by row, then key, then column.

    Pairs grouped by row (as the engine's small-size path gives them) whose rows hold
    similar numbers of pairs are sorted as one padded matrix, row by row: by column, then
    by a stable sort of the keys (so that equal keys keep the lower column first); measured
    8x faster than three sorts of all pairs at 1,000 pairs a row."""
    n = len(rows)
    if n > 1 and pairs.grouped(rows):
        starts = pairs.group_starts(rows)[:-1]
        counts = np.diff(np.r_[starts, n])
        width = int(counts.max())
        if len(starts) * width <= 2 * n:
            slot = torch.from_numpy(np.arange(n) - np.repeat(starts, counts))
            line = torch.from_numpy(np.repeat(np.arange(len(starts)), counts))
            c = torch.full((len(starts), width), np.iinfo(np.int64).max, dtype=torch.int64)
            c[line, slot] = torch.from_numpy(np.asarray(cols, np.int64))
            by_col = torch.sort(c, dim=1).indices  # padding (the largest int64) after every column
            kk = torch.full((len(starts), width), math.inf, dtype=torch.float64)
            kk[line, slot] = torch.from_numpy(np.asarray(key, np.float64))
            kk = torch.gather(kk, 1, by_col)
            at = torch.gather(by_col, 1, torch.sort(kk, dim=1, stable=True).indices).numpy()  # padding (inf) last
            order = (starts[:, None] + at).ravel()
            return order[(at < counts[:, None]).ravel()]
    return _lexsort(cols, key, rows)


def _lexsort(cols: np.ndarray, key: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """`np.lexsort((cols, key, rows))`, the same order, as three stable sorts in torch
    (measured 1.5x faster on 200,000 pairs, one thread; faster still on more)."""
    c, k, r = torch.from_numpy(cols), torch.from_numpy(np.ascontiguousarray(key)), torch.from_numpy(rows)
    order = torch.argsort(c, stable=True)
    order = order[torch.argsort(k[order], stable=True)]
    return order[torch.argsort(r[order], stable=True)].numpy()


def check_representable(m: Metric, dist: np.ndarray) -> None:
    """Refuse distances (or inner products) beyond float32's range, the type they are returned in."""
    top = float(np.abs(dist).max(initial=0.0))
    if top > MAX_VALUE:
        shift = math.ceil(math.log2(top / MAX_VALUE) / max(1, m.power)) + 1  # distances grow as data**power
        raise InvalidParameter(
            f"{m.name} {'values' if m.largest_first else 'distances'} reach {top:.3g}, beyond float32's range "
            f"(+-{MAX_VALUE:.3g}) in which they are returned; scale the data down, e.g. divide it by 2**{shift}")


def refines(screen_dtype: torch.dtype, device: torch.device | str, xq, xb) -> bool:
    """Whether a screen at this precision has its windows refined in fp32 (bf16, fp16, int8;
    not fp32's, nor int16's, which hold about as many rows as fp32's would)
    on `device`, for queries `xq` against base rows `xb`. Not where the compiled kernels
    rerank them (`pairs.usable`, on the CPU): their float64 distance of a pair costs about what
    the fp32 refinement's score and bound of it cost, so refining the window first only adds
    its own pass (measured: one query x 20,000 x 256, int8, k = 10: 0.72 against 0.54 ms;
    1,000 queries 32.0 against 30.2; k = 100 148 against 143; 500 x 30,000 x 2,048, k = 3: 99.9
    against 99.1; the same neighbours and distances). Torch's float64 rerank (a GPU,
    `LOOKALIKE_JIT=0`) keeps the refinement."""
    if screen_dtype in (torch.float32, torch.float64, torch.int16):
        return False
    return not (jit.enabled(device) and pairs.usable(xq, xb))


def refine(base: PreparedBase, xq: np.ndarray, rows: torch.Tensor, cols: torch.Tensor, k: int,
           chunk_bytes: int = 1 << 22) -> tuple[torch.Tensor, torch.Tensor]:
    """Narrow a wide window (a bf16 or int8 screen's) with fp32 scores of its pairs.

    Each pair's score (what the screen ranks by: |b|^2 - 2 a.b on rows centred by the base
    mean, -cos, or -a.b) comes from one fp32 dot product and gets its own error bound e; a
    pair stays when score - e is at most its query's k-th smallest score + e. Every query
    present must hold at least k pairs. Runs on the base's device.
    """
    if not len(rows):
        return rows, cols
    rows, cols = _sharing_order(rows, cols, base.nb)
    score, err = _pair_scores(base, xq, rows, cols, chunk_bytes)
    keep = score - err <= _kth_top(rows, score + err, k)
    return rows[keep], cols[keep]


def _precision(base: PreparedBase, xq: np.ndarray | torch.Tensor) -> tuple[torch.dtype, float, float]:
    """The refinement's type (fp32; float64 for float64 inputs), and its bound's relative
    (`gamma`) and absolute (`eta`, underflow) terms.

    gamma = d u / (1 - d u) bounds the rounding of a sum of d products in any order (the
    GEMM's, whatever BLAS does); 3 u more for the scaling, centring and cast of each element."""
    float64 = as_tensor(xq[:0], base.device).dtype == torch.float64 or base.xb.dtype == np.float64
    wide = torch.float64 if float64 else torch.float32
    u, d = UNIT_ROUNDOFF[wide], base.d
    gamma = d * u / (1 - d * u) + 3 * u  # the sums, and the centring or cast of each element
    if wide == torch.float32:  # the GEMM of shared rows may round its inputs (TF32 where allowed)
        r = fp32_gemm_roundoff()
        gamma += 2 * r + r * r
    eta = 64 * torch.finfo(wide).tiny * (d + 16)  # underflow, as an absolute error (see `Screen`)
    return wide, gamma, eta


def _sharing_order(rows: torch.Tensor, cols: torch.Tensor, nb: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Pairs sorted by the smallest base row of their query's window, then by query and base
    row. Queries near one another share candidates: in this order a chunk's distinct base
    rows often serve several queries, each gathered once and all met in one small GEMM."""
    first = torch.full((int(rows.max()) + 1,), nb, dtype=torch.int64, device=rows.device)
    first.scatter_reduce_(0, rows, cols, "amin")
    order = torch.argsort(cols)
    order = order[torch.argsort(rows[order], stable=True)]
    order = order[torch.argsort(first[rows[order]], stable=True)]
    return rows[order], cols[order]


def _pair_scores(base: PreparedBase, xq: np.ndarray, rows: torch.Tensor, cols: torch.Tensor,
                 chunk_bytes: int) -> tuple[torch.Tensor, torch.Tensor]:
    """float64 (score, error bound) of every pair, from fp32 dot products (float64 for
    float64 inputs), chunk by chunk, on rows scaled as the screen scales them."""
    m, d, dev = base.metric, base.d, base.device
    xb_t = base.raw_rows()
    wide, gamma, eta = _precision(base, xq)
    mean = base.screen.mean.to(wide) if m.centred else None
    xq_t = as_tensor(xq, dev)
    # cosine rows are scaled one by one only where some row's values could over- or underflow
    scale_b = not m.normalised or not base.rows_comfortable
    scale_a = not m.normalised or not comfortable(row_max(xq_t))
    step = max(1, device_chunk(dev, chunk_bytes) // (4 * d))
    buf = torch.empty((min(step, len(rows)), d), dtype=xb_t.dtype, device=dev)
    score = torch.empty(len(rows), dtype=torch.float64, device=dev)
    err = torch.empty(len(rows), dtype=torch.float64, device=dev)
    for lo, hi in ranges(len(rows), step):
        c = cols[lo:hi]
        uq, qinv = torch.unique_consecutive(rows[lo:hi], return_inverse=True)
        uc, cinv = torch.unique(c, return_inverse=True)
        shared = len(uq) * len(uc) <= 8 * (hi - lo)
        if shared:  # shared rows: each gathered once, all met in one small GEMM
            which, at = uc, cinv
        else:  # little sharing: one gathered row a pair, a dot product a pair
            which, at = c, torch.arange(hi - lo, device=dev)
        b = torch.index_select(xb_t, 0, which, out=buf[: len(which)]).to(wide)  # scratch: changed in place
        b = _scaled(m, b, base.scale) if scale_b else b
        a = xq_t[uq].to(wide)  # this chunk's few queries, scaled and centred like the base
        a = _scaled(m, a, base.scale) if scale_a else a
        if mean is not None:
            b.sub_(mean)
            a -= mean
        if shared or len(uq) == 1:
            dots = (a @ b.T)[qinv, at].double()  # a @ b.T: 1.6x b @ a.T (measured)
        else:  # (a GEMM of every query against every row of the chunk would be len(uq) times the work)
            dots = torch.linalg.vecdot(a[qinv], b).double()
        an = torch.linalg.vector_norm(a.double(), dim=1)[qinv]
        # |b| as the prepare computed it (fp32 sums); cosine needs none
        b_l2 = base.l2[c] if wide == torch.float32 and not m.normalised else None
        score[lo:hi], err[lo:hi] = _score_and_bound(m, dots, an, b, at, b_l2, gamma, eta)
    err *= 1.5  # second-order terms
    return score, err


def _scaled(m: Metric, x: torch.Tensor, scale: float) -> torch.Tensor:
    """Rows scaled by a power of two as the screen scales them (cosine: each row by its own),
    in their own type; `x` is scratch, changed in place where the scales allow it."""
    if not m.normalised:
        return x.mul_(scale) if scale != 1.0 else x
    top = torch.linalg.vector_norm(x, float("inf"), dim=1, keepdim=True) if x.shape[1] else x.new_zeros((len(x), 1))
    s = pow2_scale(top)
    if x.dtype == torch.float64 or bool(((s >= 2.0**-126) & (s <= 2.0**126)).all()):
        return x.mul_(s.to(x.dtype))  # normal float32 powers of two: exact in place
    return (x.double() * s).to(x.dtype)


def _score_and_bound(m: Metric, dots: torch.Tensor, an: torch.Tensor, b: torch.Tensor, at: torch.Tensor,
                     b_l2: torch.Tensor | None, gamma: float, eta: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Screen scores of pairs (query norms `an`, base rows `b[at]`, dot products `dots`) and
    the bound on their rounding error (first order; `eta`: underflow's absolute error).
    `b_l2`: the base rows' norms when known."""
    if m.normalised:  # -cos; a zero row is at cosine 0 from everything, exactly
        bn = torch.linalg.vector_norm(b, dim=1).double()[at]  # rows scaled to a largest value near 1: no underflow
        nrm = an * bn
        err = (nrm > 0).double() * (3 * gamma) + eta * (1 + an + bn) ** 2
        return torch.where(nrm > 0, -dots / nrm.clamp_min(1e-300), 0.0), err
    bsq = b_l2**2 if b_l2 is not None else torch.linalg.vector_norm(b, dim=1, dtype=torch.float64)[at] ** 2
    bn = bsq.sqrt() * (1 + gamma)  # at least |b|
    absolute = eta * (1 + an + bn) ** 2
    if m.centred:
        return bsq - 2 * dots, gamma * (3 * bn * bn + 2 * an * bn) + absolute
    return -dots, gamma * an * bn + absolute


def _kth_top(rows: torch.Tensor, top: torch.Tensor, k: int) -> torch.Tensor:
    """For each pair, the k-th smallest `top` among its query's pairs."""
    by = torch.argsort(top)
    by = by[torch.argsort(rows[by], stable=True)]
    counts = torch.unique_consecutive(rows[by], return_counts=True)[1]
    starts = torch.cumsum(counts, 0) - counts
    kth = torch.empty_like(top)
    kth[by] = torch.repeat_interleave(top[by[starts + k - 1]], counts)
    return kth
