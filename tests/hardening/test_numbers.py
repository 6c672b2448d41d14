"""NearestNeighbors at the edges of every dtype's range, fuzzed: each call either returns the
neighbours of a float64 brute force (`reference_knn`, which scales by powers of two so that it
neither overflows nor underflows) or refuses with an InvalidParameter that is justified: a
value beyond float32's range, or a distance (inner product) that float32, the type of the
returned distances, cannot hold. Never garbage, never an earlier call's result."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lookalike.errors import InvalidParameter
from lookalike.knn import METRICS, NearestNeighbors, get_metric, knn, reference_knn
from lookalike.knn.precision import PRECISIONS
from lookalike.knn.validation import check_array

F32_MAX = float(np.finfo(np.float32).max)
MAGNITUDES = [1.0, 1e-45, 1e-40, 1e-38, 1e-20, 1e19, 1e20, 1e30, 1e37, 3e38, 65504.0, 6e-8, 1e-160, 1e-300,
              5e-324, 1e39, 1e200]
DTYPES = ["float16", "float32", "float64", "int64", "int32", "uint8", "bool"]


def make(rng: np.random.Generator, n: int, d: int, dtype: str, magnitude: float, kind: str) -> np.ndarray:
    """n rows of d values of about `magnitude` as `dtype` (within its range), shaped by `kind`."""
    if dtype == "bool":
        return rng.random((n, d)) < 0.5
    if dtype in ("int64", "int32", "uint8"):
        info = np.iinfo(dtype)
        lo, hi = (info.min, info.max) if kind != "small" else (max(info.min, -3), min(info.max, 3))
        return rng.integers(lo, hi, (n, d), dtype=dtype, endpoint=True)
    top = float(np.finfo(dtype).max)
    x = rng.standard_normal((n, d)) * min(magnitude, top / 8)
    if kind == "mixed":  # huge and tiny rows together
        x[::2] *= 1e-30
    elif kind == "equal":
        x[:] = x[0]
    elif kind == "duplicates":
        x[1::3] = x[0]
    elif kind == "zeros":
        x[::2] = 0.0
    elif kind == "small":
        x = np.round(x / max(magnitude, 1e-300) * 2) * magnitude
    with np.errstate(over="ignore", under="ignore"):
        return x.astype(dtype)


def _as64(x: np.ndarray) -> np.ndarray:
    return np.asarray(x, dtype=np.float64)


def reference_rows(xq, xb, metric, exclude_self):
    """Per query, every base row's float64 distance and index, nearest first (itself left out)."""
    Dall, Iall = reference_knn(_as64(xq), _as64(xb), len(xb), metric)
    for r in range(len(xq)):
        keep = Iall[r] != r if exclude_self else slice(None)
        yield Dall[r][keep], Iall[r][keep]


def assert_neighbours(D, I, xq, xb, k, metric, exclude_self=False):
    """(D, I) are k nearest of a float64 brute force, up to exact ties (1e-12 relative)."""
    m = get_metric(metric)
    # dot products cancel: two float64 sums of the same terms differ by up to d u |x||y|
    q64, b64 = _as64(xq), _as64(xb)
    rounding = np.zeros(len(xq))
    if m.p is None:
        rounding[:] = 1e-15 if m.normalised else 4 * xb.shape[1] * 2.0**-52 * np.linalg.norm(
            q64, axis=1) * np.linalg.norm(b64, axis=1).max()
    assert I.shape == D.shape == (len(xq), k) and I.dtype == np.int64 and D.dtype == np.float32
    assert ((I >= 0) & (I < len(xb))).all()
    for r, (d_row, i_row) in enumerate(reference_rows(xq, xb, metric, exclude_self)):
        exact = dict(zip(i_row.tolist(), d_row.tolist()))
        assert len(set(I[r].tolist())) == k and r not in (I[r].tolist() if exclude_self else [])
        got = np.array([exact[i] for i in I[r].tolist()])
        kth = m.sort_key(d_row[k - 1])
        tol = 1e-12 * abs(kth) + rounding[r]
        assert (m.sort_key(got) <= kth + tol).all(), (r, I[r], i_row[:k])
        assert (np.diff(m.sort_key(got)) >= -tol).all()
        np.testing.assert_allclose(D[r], got.astype(np.float32), rtol=1e-5, atol=3e-45 + 2 * rounding[r])


def justified(exc: InvalidParameter, xq, xb, k, metric, exclude_self=False) -> bool:
    """A refusal is right when a value is beyond float32's range or some query's k nearest
    distances are."""
    text = str(exc)
    if "float32's range" not in text:
        return False
    top = max(np.abs(_as64(xq)).max(initial=0), np.abs(_as64(xb)).max(initial=0))
    if top > F32_MAX:
        return "in magnitude" in text
    nearest = max(np.abs(d[:k]).max() for d, _ in reference_rows(xq, xb, metric, exclude_self))
    return nearest > F32_MAX * (1 - 1e-12) and "reach" in text


@st.composite
def problems(draw):
    nb, nq, d = draw(st.integers(1, 60)), draw(st.integers(1, 5)), draw(st.integers(1, 6))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    dtype = draw(st.sampled_from(DTYPES))
    kinds = ["normal", "mixed", "equal", "duplicates", "zeros", "small"]
    xb = make(rng, nb, d, dtype, draw(st.sampled_from(MAGNITUDES)), draw(st.sampled_from(kinds)))
    xq = None if draw(st.booleans()) and nb > 1 else make(
        rng, nq, d, draw(st.sampled_from([dtype, "float32", "float64"])), draw(st.sampled_from(MAGNITUDES)),
        draw(st.sampled_from(kinds)))
    k = draw(st.integers(1, nb - 1 if xq is None else nb))
    return (xq, xb, k, draw(st.sampled_from(sorted(METRICS))), draw(st.sampled_from(["fp32", "bf16", "int8"])),
            draw(st.sampled_from([None, 1e-4, 0.01])))  # working memory: tiny blocks too


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(problems())
def test_neighbours_are_exact_or_refused_for_a_reason(problem):
    xq, xb, k, metric, precision, wm = problem
    queries = xb if xq is None else xq
    try:
        D, I = NearestNeighbors(n_neighbors=k, metric=metric, precision=precision).fit(xb).kneighbors(xq)
    except InvalidParameter as exc:
        assert justified(exc, queries, xb, k, metric, xq is None), exc
        return
    assert_neighbours(D, I, queries, xb, k, metric, exclude_self=xq is None)
    if wm is not None:  # tiny blocks, on the engine itself (the estimator takes 1 MiB or more)
        D, I = knn(check_array(queries), check_array(xb), k, metric, working_memory=wm,
                   screen_dtype=PRECISIONS[precision], exclude_self=xq is None)
        assert_neighbours(D, I, queries, xb, k, metric, exclude_self=xq is None)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(problems())
def test_radius_neighbors_and_graph_are_exact_or_refused_for_a_reason(problem):
    """A radius between the k-th and the next distinct distance finds exactly the k nearest
    (and their ties); the graph holds what kneighbors holds."""
    xq, xb, k, metric, precision, wm = problem
    queries = xb if xq is None else xq
    nn = NearestNeighbors(n_neighbors=k, metric=metric, precision=precision, backend="lookalike",
                          working_memory=None if wm is None else 1)
    try:
        nn.fit(xb)
        check_radius_and_graph(nn, xq, xb, k, get_metric(metric))
    except InvalidParameter as exc:
        assert justified(exc, queries, xb, k, metric, xq is None), exc


def check_radius_and_graph(nn, xq, xb, k, m):
    queries = xb if xq is None else xq
    for r, (d_row, i_row) in enumerate(reference_rows(queries, xb, m.name, xq is None)):
        keys = m.sort_key(d_row)
        slack = 1e-9 * abs(keys[k - 1]) + (1e-14 if m.normalised else 0.0)  # beyond rounding differences
        if k < len(keys) and not keys[k] - keys[k - 1] > 2 * slack:
            continue  # no clear gap after the k-th: the radius would sit on a near-tie
        key = keys[k - 1] + slack if k == len(keys) else (keys[k - 1] + keys[k]) / 2
        radius = -key if m.largest_first else key
        if not np.isfinite(radius) or abs(radius) < 1e-290:  # beyond float64: the reference rounds to 0
            continue
        dist, ind = nn.radius_neighbors(None if xq is None else queries[r : r + 1], radius=float(radius))
        at = r if xq is None else 0
        assert set(ind[at].tolist()) == set(i_row[:k].tolist()), (r, ind[at], i_row[:k])
        exact = dict(zip(i_row.tolist(), d_row.tolist()))
        np.testing.assert_allclose(dist[at], [exact[i] for i in ind[at].tolist()], rtol=1e-9,
                                   atol=1e-15 if m.normalised else 0)
    graph = nn.kneighbors_graph(xq, mode="distance")
    D, I = nn.kneighbors(xq)
    assert graph.shape == (len(queries), len(xb))
    np.testing.assert_array_equal(graph.indices.reshape(-1, k), I)
    np.testing.assert_array_equal(graph.data.reshape(-1, k), D)


def test_no_call_returns_an_earlier_calls_results():
    """Calls of very different magnitudes, a refused one among them, one after another on
    the same estimator and on fresh ones: each answers its own question."""
    rng = np.random.default_rng(0)
    nn = NearestNeighbors(n_neighbors=3)
    for scale, dtype in [(1.0, np.float32), (1e20, np.float32), (1e-40, np.float32), (1e30, np.float64),
                         (1e-300, np.float64), (1.0, np.float16)]:
        xb = (rng.standard_normal((40, 5)) * scale).astype(dtype)
        xq = (rng.standard_normal((7, 5)) * scale).astype(dtype)
        for est in (nn, NearestNeighbors(n_neighbors=3)):
            D, I = est.fit(xb).kneighbors(xq)
            assert_neighbours(D, I, xq, xb, 3, "euclidean")
        with pytest.raises(InvalidParameter, match="float32's range"):
            NearestNeighbors(n_neighbors=1, metric="sqeuclidean").fit(np.array([[3e20], [-3e20]])).kneighbors(
                np.array([[0.0]]))


@pytest.mark.parametrize("metric", sorted(METRICS))
@pytest.mark.parametrize("precision", ["fp32", "bf16", "int8"])
def test_each_dtype_at_its_edges(metric, precision):
    """The largest and smallest values of float16/32/64 and ints near int64's limits."""
    f16, f32 = np.finfo(np.float16), np.finfo(np.float32)
    cases = [
        np.array([[f16.max, 0], [-f16.max, f16.max], [f16.smallest_subnormal, 0], [0, 0]], dtype=np.float16),
        np.array([[f32.max / 4, 0], [0, f32.max / 4], [1.0, 1.0], [0, 0]], dtype=np.float32),
        np.array([[f32.smallest_subnormal, 0], [2 * f32.smallest_subnormal, 0], [0, f32.tiny], [0, 0]],
                 dtype=np.float32),
        np.array([[5e-324, 0], [1e-320, 1e-320], [0, 2e-300], [1e-310, 0]], dtype=np.float64),
        np.array([[1e30, 1e-30], [1e30, 2e-30], [-1e30, 0], [0, 1e-30]], dtype=np.float64),
        np.array([[2**62, -(2**62)], [2**62 + 512, -(2**62)], [-(2**63), 2**63 - 1], [0, 0]], dtype=np.int64),
        np.full((4, 2), 7, dtype=np.int32),
    ]
    for xb in cases:
        nn = NearestNeighbors(n_neighbors=2, metric=metric, precision=precision)
        try:
            D, I = nn.fit(xb).kneighbors(xb[::-1].copy())
        except InvalidParameter as exc:
            assert justified(exc, xb[::-1], xb, 2, metric), (xb, exc)
            continue
        assert_neighbours(D, I, xb[::-1], xb, 2, metric)


@pytest.mark.parametrize("dtype", ["fp32", "bf16", "int8"])
@pytest.mark.parametrize("metric", ["euclidean", "sqeuclidean", "cosine", "inner_product"])
@pytest.mark.parametrize("base_mag, query_mag", [(1.0, 1e-20), (2e9, 1e-20), (1e-30, 1.0), (1.0, 1e11), (1e30, 1e-30),
                                                 (1e-40, 1e-44), (1e37, 1e-45)])
def test_the_screen_bound_holds_at_any_relative_magnitude(metric, dtype, base_mag, query_mag):
    """The invariant that makes the search exact: |screen score - exact score| <= bound, for
    every pair, with queries and base rows of wildly different magnitudes (some rows a
    billion times smaller than the rest too)."""

    from lookalike.knn.screen import PreparedBase, prepare_rows

    rng = np.random.default_rng(0)
    xb = rng.standard_normal((60, 7)) * base_mag
    xb[::3] *= 1e-9
    xq = rng.standard_normal((9, 7)) * query_mag
    xb, xq = xb.astype(np.float32), xq.astype(np.float32)
    base = PreparedBase(xb, metric, screen_dtype=PRECISIONS[dtype])
    wide, _ = base.query_scales(xq)
    q = prepare_rows(base.screen, xq[~wide], base.device)
    s = base.screen.scores(q, base.rows).double().numpy()
    bound = base.screen.bound(q, base.extent).numpy()
    m, sc = get_metric(metric), base.scale
    qs, bs = xq[~wide].astype(np.float64) * sc, xb.astype(np.float64) * sc
    if m.centred:
        c = base.mean64.numpy()
        exact = ((bs - c) ** 2).sum(1)[None, :] - 2 * (qs - c) @ (bs - c).T
    elif m.normalised:
        exact = -(_unit64(qs) @ _unit64(bs).T)
    else:
        exact = -(qs @ bs.T)
    assert (np.abs(s - exact) <= bound[:, None]).all(), (np.abs(s - exact) / bound[:, None]).max()


def _unit64(x):
    x = x * np.ldexp(1.0, -np.frexp(np.abs(x).max(axis=1, keepdims=True))[1])
    n = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.where(n > 0, n, 1)
