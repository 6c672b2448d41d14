"""Do two searches agree? By distances (the tutorial's test) AND by neighbour sets.

Distances alone miss wrong neighbours: a near-tie swapped for a farther point changes the
distance only a little. So `compare` reports both, and counts separately the differences
that are only a choice among exactly tied points (duplicate images).
"""

from __future__ import annotations

import numpy as np
from scipy.spatial.distance import cdist

from .blocks import ranges
from .metrics import Metric, get_metric
from .refine import pair_distances
from .scaling import RERANK_SCALE_EXP


def reference_knn(xq: np.ndarray, xb: np.ndarray, k: int, metric: str = "euclidean", *,
                  method: str = "dense", block: int = 256, extra: int = 16) -> tuple[np.ndarray, np.ndarray]:
    """A float64 brute force with NumPy, independent of the engine, sorted by (distance, index).

    method='dense': every distance computed directly (tests; O(nq * nb * d), in blocks of
    `block` queries). method='gemm': a float64 GEMM finds k + `extra` candidates per query,
    whose distances are then computed directly (benchmarks); metrics not screened by a GEMM
    (manhattan, chebyshev) are computed densely.

    Rows are first multiplied by a power of two (exact) that brings the largest value to
    about 1, so that no square or product overflows or underflows float64; cosine rows each
    by their own. Distances are returned unscaled.
    """
    m = get_metric(metric)
    xq64, xb64 = np.asarray(xq, dtype=np.float64), np.asarray(xb, dtype=np.float64)
    scale = 1.0
    if m.power:  # squares or products: scaled
        top = max(np.abs(xq64).max(initial=0.0), np.abs(xb64).max(initial=0.0))
        scale = float(np.ldexp(1.0, -np.clip(np.frexp(top)[1], -RERANK_SCALE_EXP, RERANK_SCALE_EXP)))
        xq64, xb64 = xq64 * scale, xb64 * scale
    if method == "gemm" and m.gemm:
        D, I = _reference_gemm(xq64, xb64, k, m, extra)
    else:
        D, I = _reference_dense(xq64, xb64, k, m, block)
    with np.errstate(over="ignore"):  # beyond float64: inf, as float64 would say
        return D / scale**m.power, I


def _reference_dense(q64: np.ndarray, b64: np.ndarray, k: int, m: Metric, block: int) -> tuple[np.ndarray, np.ndarray]:
    D = np.empty((len(q64), k))
    I = np.empty((len(q64), k), dtype=np.int64)
    for lo, hi in ranges(len(q64), block):
        dist = _dense(m, q64[lo:hi], b64)
        order = np.argsort(m.sort_key(dist), axis=1, kind="stable")[:, :k]
        D[lo:hi] = np.take_along_axis(dist, order, 1)
        I[lo:hi] = order
    return D, I


def _reference_gemm(q64: np.ndarray, b64: np.ndarray, k: int, m: Metric, extra: int) -> tuple[np.ndarray, np.ndarray]:
    kk = min(len(b64), k + extra)
    if m.centred:
        score = (b64**2).sum(1)[None, :] - 2 * q64 @ b64.T
    elif m.normalised:
        score = -(q64 @ _unit(b64).T)
    else:
        score = -(q64 @ b64.T)
    cand = np.argpartition(score, kk - 1, axis=1)[:, :kk]
    rows = np.repeat(np.arange(len(q64)), kk)
    dist = pair_distances(m, q64, b64, rows, cand.ravel()).reshape(cand.shape)
    order = np.lexsort((cand, m.sort_key(dist)), axis=1)[:, :k]
    return np.take_along_axis(dist, order, 1), np.take_along_axis(cand, order, 1)


def _pow2_rows(x: np.ndarray) -> np.ndarray:
    """Each row times the power of two that brings its largest value into [0.5, 1) (exact)."""
    e = np.frexp(np.abs(x).max(axis=1, keepdims=True, initial=0.0))[1]
    return x * np.ldexp(1.0, -np.clip(e, -1022, 1022))  # 2^1022: the largest power of two there is


def _unit(x: np.ndarray) -> np.ndarray:
    """Rows of unit length (zero rows stay zero)."""
    x = _pow2_rows(x)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.where(norms > 0, norms, 1.0)


def _dense(m: Metric, q: np.ndarray, b: np.ndarray) -> np.ndarray:
    if m.p == 2:
        d2 = np.stack([((b - row) ** 2).sum(1) for row in q])
        return d2 if m.squared else np.sqrt(d2)
    if m.p is not None:  # manhattan, chebyshev: SciPy's loops, in float64
        return cdist(q, b, "cityblock" if m.p == 1 else "chebyshev")
    if not m.normalised:
        return np.stack([(b * row).sum(1) for row in q])
    q, b = _pow2_rows(q), _pow2_rows(b)  # cosine ignores lengths: no norm over- or underflows
    dots = np.stack([(b * row).sum(1) for row in q])
    norms = np.linalg.norm(q, axis=1)[:, None] * np.linalg.norm(b, axis=1)[None, :]
    return 1.0 - np.divide(dots, norms, out=np.zeros_like(dots), where=norms > 0)


def compare(D_ref: np.ndarray, I_ref: np.ndarray, D: np.ndarray, I: np.ndarray, *, tie_tol: float = 1e-6) -> dict:
    """How far (D, I) is from the reference (D_ref, I_ref), both of shape (nq, k).

    Returns
    -------
    dict with
      max_abs_dist_diff : largest |D - D_ref| over all queries and ranks (the tutorial
          accepts below 1).
      frac_neighbor_sets_differ : fraction of queries whose set of k indices differs.
      frac_neighbor_sets_differ_beyond_ties : the same, not counting a swap between points
          at the same distance as the reference's k-th (within `tie_tol`, relative).
      agree : no neighbour set differs beyond ties and distances match to 1e-4, relative.
    """
    D_ref, D = np.asarray(D_ref, np.float64), np.asarray(D, np.float64)
    diff = np.abs(D - D_ref)
    differ = np.array([set(a) != set(b) for a, b in zip(I_ref.tolist(), I.tolist())])
    beyond = differ.copy()
    for r in np.flatnonzero(differ):
        extra = set(I[r].tolist()) - set(I_ref[r].tolist())
        kth = D_ref[r, -1]
        tol = tie_tol * max(1.0, abs(kth))
        got = {int(i): float(dv) for i, dv in zip(I[r], D[r])}
        beyond[r] = any(abs(got[i] - kth) > tol for i in extra)
    scale = np.maximum(1.0, np.abs(D_ref))
    return {
        "max_abs_dist_diff": float(diff.max()) if diff.size else 0.0,
        "max_rel_dist_diff": float((diff / scale).max()) if diff.size else 0.0,
        "frac_neighbor_sets_differ": float(differ.mean()) if len(differ) else 0.0,
        "frac_neighbor_sets_differ_beyond_ties": float(beyond.mean()) if len(beyond) else 0.0,
        "agree": bool(not beyond.any() and (diff / scale).max(initial=0.0) <= 1e-4),
    }
