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
from lookalike.knn import METRICS, NearestNeighbors, get_metric, reference_knn

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
    assert I.shape == D.shape == (len(xq), k) and I.dtype == np.int64 and D.dtype == np.float32
    assert ((I >= 0) & (I < len(xb))).all()
    for r, (d_row, i_row) in enumerate(reference_rows(xq, xb, metric, exclude_self)):
        exact = dict(zip(i_row.tolist(), d_row.tolist()))
        assert len(set(I[r].tolist())) == k and r not in (I[r].tolist() if exclude_self else [])
        got = np.array([exact[i] for i in I[r].tolist()])
        kth = m.sort_key(d_row[k - 1])
        tol = 1e-12 * abs(kth) + 1e-300
        assert (m.sort_key(got) <= kth + tol).all(), (r, I[r], i_row[:k])
        assert (np.diff(m.sort_key(got)) >= -tol).all()
        atol = 1e-15 if m.normalised else 3e-45  # 1 - cos rounds to about 1e-16 near 0
        np.testing.assert_allclose(D[r], got.astype(np.float32), rtol=1e-5, atol=atol)


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
    nn = NearestNeighbors(n_neighbors=k, metric=metric, precision=precision, backend="lookalike", working_memory=wm)
    try:
        nn.fit(xb)
        D, I = nn.kneighbors(xq)
    except InvalidParameter as exc:
        assert justified(exc, xb if xq is None else xq, xb, k, metric, xq is None), exc
        return
    assert_neighbours(D, I, xb if xq is None else xq, xb, k, metric, exclude_self=xq is None)
