"""Do two searches agree? By distances (the tutorial's test) AND by neighbour sets.

Distances alone miss wrong neighbours: a near-tie swapped for a farther point changes the
distance only a little. So `compare` reports both, and counts separately the differences
that are only a choice among exactly tied points (duplicate images).
"""

from __future__ import annotations

import numpy as np

from ..errors import InvalidParameter
from .blocks import ranges
from .metrics import Metric, get_metric
from .refine import pair_distances


def reference_knn(xq: np.ndarray, xb: np.ndarray, k: int, metric: str = "euclidean", *,
                  method: str = "dense", block: int = 256, extra: int = 16) -> tuple[np.ndarray, np.ndarray]:
    """A float64 brute force with NumPy, independent of the engine, sorted by (distance, index).

    method='dense': every distance computed directly (tests; O(nq * nb * d) in Python loops).
    method='gemm': a float64 GEMM finds k + `extra` candidates per query, whose distances are
    then computed directly (benchmarks; GEMM metrics only).
    """
    m = get_metric(metric)
    if method == "gemm":
        return _reference_gemm(xq, xb, k, m, extra)
    xb64 = np.asarray(xb, dtype=np.float64)
    D = np.empty((len(xq), k))
    I = np.empty((len(xq), k), dtype=np.int64)
    for lo, hi in ranges(len(xq), block):
        q = np.asarray(xq[lo:hi], dtype=np.float64)
        dist = _dense(m, q, xb64)
        order = np.argsort(m.sort_key(dist), axis=1, kind="stable")[:, :k]
        D[lo:hi] = np.take_along_axis(dist, order, 1)
        I[lo:hi] = order
    return D, I


def _reference_gemm(xq: np.ndarray, xb: np.ndarray, k: int, m: Metric, extra: int) -> tuple[np.ndarray, np.ndarray]:
    kk = min(len(xb), k + extra)
    b64 = np.asarray(xb, np.float64)
    q64 = np.asarray(xq, np.float64)
    if not m.gemm:
        raise InvalidParameter(f"the GEMM reference serves GEMM metrics only, not {m.name!r}")
    if m.centred:
        score = (b64**2).sum(1)[None, :] - 2 * q64 @ b64.T
    elif m.normalised:
        score = -(q64 @ (b64 / np.maximum(np.linalg.norm(b64, axis=1, keepdims=True), 1e-300)).T)
    else:
        score = -(q64 @ b64.T)
    cand = np.argpartition(score, kk - 1, axis=1)[:, :kk]
    rows = np.repeat(np.arange(len(xq)), kk)
    dist = pair_distances(m, np.asarray(xq), np.asarray(xb), rows, cand.ravel()).reshape(cand.shape)
    order = np.lexsort((cand, m.sort_key(dist)), axis=1)[:, :k]
    return np.take_along_axis(dist, order, 1), np.take_along_axis(cand, order, 1)


def _dense(m: Metric, q: np.ndarray, b: np.ndarray) -> np.ndarray:
    if m.p == 2:
        d2 = np.stack([((b - row) ** 2).sum(1) for row in q])
        return d2 if m.squared else np.sqrt(d2)
    if m.p == 1:
        return np.stack([np.abs(b - row).sum(1) for row in q])
    if m.p == np.inf:
        return np.stack([np.abs(b - row).max(1) for row in q])
    dots = np.stack([(b * row).sum(1) for row in q])
    if not m.normalised:
        return dots
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
