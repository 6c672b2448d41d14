"""Do two searches agree? By distances (the tutorial's test) AND by neighbour sets.

Distances alone miss wrong neighbours: a near-tie swapped for a farther point changes the
distance only a little. So `compare` reports both, and counts separately the differences
that are only a choice among tied points.

The reference (`reference_knn`) is a float64 brute force in plain NumPy (and SciPy's cdist
for manhattan and chebyshev): it shares no code with the engine. `check` judges one
backend's result against it by the backend's documented tie rule:

- an exact backend (lookalike's engine): the same neighbour sets as the reference, whose
  ties go to the lower index, as the engine's do; distances equal up to float32's rounding
  of the float64 result;
- a float32 library (scikit-learn, FAISS, torch, cuML, cuVS): a neighbour may be swapped
  only for a point whose exact distance is within the library's float32 error bound of the
  reference's k-th distance (`float32_tolerance`: gamma_d = d u / (1 - d u), u = 2^-24,
  times the magnitudes the library's formula rounds), and its distances must be within it.
"""

from __future__ import annotations

import numpy as np
from scipy.spatial.distance import cdist

from .metrics import Metric, get_metric

# Rows are multiplied by 2^-e (exact) to bring the largest value near 1, e clipped to this:
# no square or product over- or underflows float64 for any float32 input.
_SCALE_EXP = 500


def _ranges(n: int, step: int):
    for lo in range(0, n, step):
        yield lo, min(lo + step, n)


def _common_scale(m: Metric, *arrays: np.ndarray) -> float:
    if not m.power:  # cosine: each row is scaled on its own (`_unit`)
        return 1.0
    top = max(np.abs(a).max(initial=0.0) for a in arrays)
    return float(np.ldexp(1.0, -int(np.clip(np.frexp(top)[1], -_SCALE_EXP, _SCALE_EXP))))


def reference_knn(xq: np.ndarray, xb: np.ndarray, k: int, metric: str = "euclidean", *,
                  method: str = "dense", block: int = 256, extra: int = 16) -> tuple[np.ndarray, np.ndarray]:
    """A float64 brute force in plain NumPy, independent of the engine, sorted by (distance,
    index): ties go to the lower index.

    method='dense': every distance computed directly (tests; O(nq * nb * d), in blocks of
    `block` queries). method='gemm': a float64 GEMM finds k + `extra` candidates per query,
    whose distances are then computed directly; a query whose (k + extra)-th candidate is
    not clearly farther than its k-th (by 1e-9 of the scores' magnitude: many ties) is
    searched densely instead, so ties still go to the lower index. Metrics that are not
    dot products (manhattan, chebyshev) are always computed densely (SciPy's cdist).

    Rows are first multiplied by a power of two (exact) that brings the largest value to
    about 1, so that no square or product overflows or underflows float64; cosine rows each
    by their own. Distances are returned unscaled.
    """
    m = get_metric(metric)
    xq64, xb64 = np.asarray(xq, dtype=np.float64), np.asarray(xb, dtype=np.float64)
    scale = _common_scale(m, xq64, xb64)
    if scale != 1.0:
        xq64, xb64 = xq64 * scale, xb64 * scale
    if method == "gemm" and m.gemm:
        D, I = _reference_gemm(xq64, xb64, k, m, extra, block)
    else:
        D, I = _reference_dense(xq64, xb64, k, m, block)
    with np.errstate(over="ignore"):  # beyond float64: inf, as float64 would say
        return D / scale**m.power, I


def reference_distances(xq: np.ndarray, xb: np.ndarray, I: np.ndarray, metric: str = "euclidean") -> np.ndarray:
    """float64 distances (plain NumPy) between each query and the base rows `I` names,
    of shape I.shape: the exact distance of what a backend returned."""
    m = get_metric(metric)
    xq64, xb64 = np.asarray(xq, dtype=np.float64), np.asarray(xb, dtype=np.float64)
    scale = _common_scale(m, xq64, xb64)
    rows = np.repeat(np.arange(len(I)), I.shape[1])
    out = _pairs(m, xq64 * scale, xb64, I.ravel(), rows, scale).reshape(I.shape)
    with np.errstate(over="ignore"):
        return out / scale**m.power


def _reference_dense(q64: np.ndarray, b64: np.ndarray, k: int, m: Metric, block: int) -> tuple[np.ndarray, np.ndarray]:
    D = np.empty((len(q64), k))
    I = np.empty((len(q64), k), dtype=np.int64)
    for lo, hi in _ranges(len(q64), block):
        dist = _dense(m, q64[lo:hi], b64)
        order = np.argsort(_key(m, dist), axis=1, kind="stable")[:, :k]  # stable: ties to the lower index
        D[lo:hi] = np.take_along_axis(dist, order, 1)
        I[lo:hi] = order
    return D, I


def _reference_gemm(q64: np.ndarray, b64: np.ndarray, k: int, m: Metric, extra: int,
                    block: int) -> tuple[np.ndarray, np.ndarray]:
    kk = min(len(b64), k + extra)
    D = np.empty((len(q64), k))
    I = np.empty((len(q64), k), dtype=np.int64)
    bsq = (b64**2).sum(1)
    bu = _unit(b64) if m.normalised else None
    for lo, hi in _ranges(len(q64), max(block, 1024)):
        q = q64[lo:hi]
        if m.p == 2:
            score = bsq[None, :] - 2 * q @ b64.T
            size = bsq.max(initial=0.0) + (q**2).sum(1)[:, None] + 1e-300
        elif m.normalised:
            score = -(_unit(q) @ bu.T)
            size = np.ones((len(q), 1))
        else:
            score = -(q @ b64.T)
            size = np.sqrt(bsq.max(initial=0.0) * (q**2).sum(1))[:, None] + 1e-300
        cand = np.argpartition(score, kk - 1, axis=1)[:, :kk]
        s = np.take_along_axis(score, cand, 1)
        s.sort(axis=1)
        # the k-th and the last candidate apart by more than the GEMM's rounding: no point
        # outside the candidates can be among the k, nor tie with the k-th
        clear = (s[:, -1] - s[:, k - 1] > 1e-9 * size[:, 0]) if kk < len(b64) else np.ones(len(q), bool)
        rows = np.repeat(np.arange(len(q)), kk)
        dist = _pairs(m, q, b64, cand.ravel(), rows).reshape(cand.shape)
        order = np.lexsort((cand, _key(m, dist)), axis=1)[:, :k]
        D[lo:hi] = np.take_along_axis(dist, order, 1)
        I[lo:hi] = np.take_along_axis(cand, order, 1)
        murky = np.flatnonzero(~clear)
        if len(murky):
            D[lo + murky], I[lo + murky] = _reference_dense(q[murky], b64, k, m, block)
    return D, I


def _key(m: Metric, dist: np.ndarray) -> np.ndarray:
    return -dist if m.largest_first else dist


def _pow2_rows(x: np.ndarray) -> np.ndarray:
    """Each row times the power of two that brings its largest value into [0.5, 1) (exact)."""
    e = np.frexp(np.abs(x).max(axis=-1, keepdims=True, initial=0.0))[1]
    return x * np.ldexp(1.0, -np.clip(e, -1022, 1022))  # 2^1022: the largest power of two there is


def _unit(x: np.ndarray) -> np.ndarray:
    """Rows of unit length (zero rows stay zero)."""
    x = _pow2_rows(x)
    norms = np.linalg.norm(x, axis=-1, keepdims=True)
    return x / np.where(norms > 0, norms, 1.0)


def _pairs(m: Metric, q: np.ndarray, b: np.ndarray, cols: np.ndarray, rows: np.ndarray,
           b_scale: float = 1.0) -> np.ndarray:
    """Distances between q[rows[i]] and b[cols[i]] (times `b_scale`), each pair on its own."""
    out = np.empty(len(cols))
    step = max(1, (1 << 22) // (8 * max(1, q.shape[1])))
    for lo, hi in _ranges(len(cols), step):
        a, c = q[rows[lo:hi]], b[cols[lo:hi]] * b_scale
        if m.p is not None:
            diff = np.abs(c - a)
            out[lo:hi] = (diff.sum(1) if m.p == 1 else diff.max(1, initial=0.0) if m.p == np.inf
                          else (diff**2).sum(1) if m.squared else np.sqrt((diff**2).sum(1)))
        elif m.normalised:
            a, c = _pow2_rows(a), _pow2_rows(c)
            out[lo:hi] = _cosine_distance((a * c).sum(1), (a * a).sum(1), (c * c).sum(1))
        else:
            out[lo:hi] = (a * c).sum(1)
    return out


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
    return _cosine_distance(dots, (q * q).sum(1)[:, None], (b * b).sum(1)[None, :])


def _cosine_distance(dots: np.ndarray, aa: np.ndarray, bb: np.ndarray) -> np.ndarray:
    """1 - a.b / (|a| |b|) from the dot products and squared norms, the norms' product as
    sqrt(|a|^2 |b|^2) (the engine's formula, `metrics.exact_distances`): equal rows, whose
    three sums are one number s, are exactly 0 apart, since sqrt(s s) is s. A zero row: 1."""
    norms = np.sqrt(aa * bb)
    return 1.0 - np.divide(dots, norms, out=np.zeros(np.broadcast(dots, norms).shape), where=norms > 0)


UNIT_ROUNDOFF_FP32 = 2.0**-24


def float32_tolerance(metric: str, xq: np.ndarray, xb: np.ndarray, I: np.ndarray, D_ref: np.ndarray) -> np.ndarray:
    """For each pair (query i, base row I[i, j]), how far a float32 library's distance may be
    from the exact one (first-order worst case): gamma_d (= d u / (1 - d u), u = 2^-24) times
    what the library's formula rounds: (|q| + |b|)^2 for squared L2 (|q|^2 + |b|^2 - 2 q.b),
    |q| |b| for inner products, 2 for cosine (unit rows), the distance for manhattan, and
    2 u times it for chebyshev. For euclidean, the squared bound t becomes
    t / max(distance, sqrt(t)). Returns an array of I's shape (the bound of each pair), in
    the metric's units; `D_ref`, the exact distances of those pairs."""
    m = get_metric(metric)
    d = np.asarray(xq).shape[1]
    u = UNIT_ROUNDOFF_FP32
    gamma = d * u / (1 - d * u) + 2 * u  # the sums, and the cast of each result
    D_ref = np.abs(np.asarray(D_ref, np.float64))
    if m.p in (1, np.inf):
        return (2 * gamma if m.p == 1 else 4 * u) * D_ref + np.finfo(np.float32).tiny
    qn = np.linalg.norm(np.asarray(xq, np.float64), axis=1)[:, None]
    bn = np.linalg.norm(np.asarray(xb, np.float64)[I.ravel()], axis=1).reshape(I.shape)
    if m.normalised:
        return np.full(I.shape, 4 * gamma)
    if m.p is None:
        return 2 * gamma * qn * bn + np.finfo(np.float32).tiny
    t = 2 * gamma * (qn + bn) ** 2 + np.finfo(np.float32).tiny
    return t if m.squared else t / np.maximum(D_ref, np.sqrt(t))


def check(xq: np.ndarray, xb: np.ndarray, metric: str, D_ref: np.ndarray, I_ref: np.ndarray,
          D: np.ndarray, I: np.ndarray, *, exact: bool) -> dict:
    """`compare` with the tie rule of the backend: exact (same sets as the reference) or
    float32 (swaps only within `float32_tolerance` of the k-th; see the module's docstring).
    `xq` are the queries of these rows, `xb` the whole base."""
    D_true = reference_distances(xq, xb, np.asarray(I), metric)
    if exact:
        return compare(D_ref, I_ref, D, I, D_true=D_true, tol=np.zeros(len(I_ref)), exact=True)
    tol_got = float32_tolerance(metric, xq, xb, np.asarray(I), D_true)  # the library's error on its pairs
    tol_kth = float32_tolerance(metric, xq, xb, np.asarray(I_ref), D_ref)[:, -1:]  # and on the k-th
    return compare(D_ref, I_ref, D, I, D_true=D_true, tol=tol_got + tol_kth)


def compare(D_ref: np.ndarray, I_ref: np.ndarray, D: np.ndarray, I: np.ndarray, *, tie_tol: float = 1e-6,
            D_true: np.ndarray | None = None, tol: np.ndarray | None = None, exact: bool = False) -> dict:
    """How far (D, I) is from the reference (D_ref, I_ref), both of shape (nq, k).

    Ties: a result's neighbour that the reference lacks is "a choice among ties" when its
    exact distance (`D_true`, else its reported D) is within the tolerance of the
    reference's k-th distance: `tol` (absolute, of shape (nq, 1) or (nq, k): the tolerance
    of each pair of the result) or else `tie_tol` relative to the k-th. With `exact`,
    `agree` asks for the reference's very sets.

    Returns
    -------
    dict with
      max_abs_dist_diff : largest |D - D_ref| over all queries and ranks (the tutorial
          accepts below 1); max_rel_dist_diff : the same over max(1, |D_ref|).
      frac_neighbor_sets_differ : fraction of queries whose set of k indices differs.
      frac_neighbor_sets_differ_beyond_ties : the same, not counting swaps among ties.
      agree : exact: no set differs and distances equal up to float32's rounding; else no
          set differs beyond ties and every distance is within the tolerance (or 1e-4
          relative without one).
    """
    D_ref, D = np.asarray(D_ref, np.float64), np.asarray(D, np.float64)
    I_ref, I = np.asarray(I_ref), np.asarray(I)
    nq = len(I_ref)
    diff = np.abs(D - D_ref)
    tie = np.asarray(D if D_true is None else D_true, np.float64)
    if tol is None:
        tol_pair = tie_tol * np.maximum(1.0, np.abs(D_ref[:, -1:])) * np.ones_like(D_ref)
    else:
        tol_pair = np.broadcast_to(np.asarray(tol, np.float64).reshape(nq, -1), D_ref.shape)
    differ = np.array([set(a) != set(b) for a, b in zip(I_ref.tolist(), I.tolist())], dtype=bool)
    beyond = differ.copy()
    for r in np.flatnonzero(differ):
        got = dict(zip(I[r].tolist(), range(I.shape[1])))
        extra = [got[i] for i in set(got) - set(I_ref[r].tolist())]
        kth = D_ref[r, -1]
        beyond[r] = any(abs(tie[r, j] - kth) > tol_pair[r, j] for j in extra)
    scale = np.maximum(1.0, np.abs(D_ref))
    if exact:  # float32's rounding of the float64 result, and float64's own
        dist_ok = bool((diff <= 2.0**-23 * np.abs(D_ref) + 1e-12 * scale).all())
        ok = not differ.any() and dist_ok
    else:
        dist_ok = bool((diff <= tol_pair + 2.0**-23 * np.abs(D_ref)).all()) if tol is not None \
            else (diff / scale).max(initial=0.0) <= 1e-4
        ok = not beyond.any() and dist_ok
    return {
        "max_abs_dist_diff": float(diff.max()) if diff.size else 0.0,
        "max_rel_dist_diff": float((diff / scale).max()) if diff.size else 0.0,
        "frac_neighbor_sets_differ": float(differ.mean()) if nq else 0.0,
        "frac_neighbor_sets_differ_beyond_ties": float(beyond.mean()) if nq else 0.0,
        "tie_rule": "exact: the reference's sets, ties to the lower index" if exact else
        ("float32: swaps within the float32 error bound of the k-th distance" if tol is not None
         else f"swaps within {tie_tol:g} (relative) of the k-th distance"),
        "agree": bool(ok),
    }
