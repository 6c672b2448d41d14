"""Stages 4-5: the fp32 refinement keeps the true k; the rerank is exact; ties go to the lower index."""

import numpy as np
import pytest
import torch
from scipy.spatial.distance import cdist

from lookalike.knn import METRICS, PreparedBase, get_metric, reference_knn
from lookalike.knn.metrics import exact_distances
from lookalike.knn import jit
from lookalike.knn.refine import pair_distances, pick, refine, refines

GEMM = sorted(m for m in METRICS if METRICS[m].gemm)


def data(kind: str, dtype=np.float32, nb: int = 400, nq: int = 15, d: int = 40, seed: int = 0):
    rng = np.random.default_rng(seed)
    xb, xq = rng.normal(size=(nb, d)), rng.normal(size=(nq, d))
    if kind == "near_ties":  # many rows nearly equidistant from each query
        xb[: nb // 2] = xq[rng.integers(0, nq, nb // 2)] + 1e-3 * rng.normal(size=(nb // 2, d))
    elif kind == "duplicates":
        xb[::4] = xb[1]
    return xq.astype(dtype), xb.astype(dtype)


@pytest.mark.parametrize("kind", ["normal", "near_ties", "duplicates"])
@pytest.mark.parametrize("input_dtype", [np.float32, np.float64])
@pytest.mark.parametrize("screen_dtype", [torch.bfloat16, torch.float16, torch.int8, torch.int16], ids=str)
@pytest.mark.parametrize("metric", GEMM)
def test_refine_keeps_the_true_k_among_its_pairs(metric, screen_dtype, input_dtype, kind):
    k = 5
    xq, xb = data(kind, input_dtype)
    base = PreparedBase(xb, metric, screen_dtype=screen_dtype)
    nq, nb = len(xq), len(xb)
    rows = torch.arange(nq).repeat_interleave(nb)  # the widest window: every pair
    cols = torch.arange(nb).repeat(nq)
    r, c = refine(base, xq, rows, cols, k, chunk_bytes=4096)  # small chunks: many of them
    kept = {(int(a), int(b)) for a, b in zip(r, c)}
    D_ref, I_ref = reference_knn(xq, xb, k, metric)
    for q in range(nq):
        kth = D_ref[q, -1]
        exact = pair_distances(get_metric(metric), xq, xb, np.full(nb, q), np.arange(nb))
        tied = np.flatnonzero(get_metric(metric).sort_key(exact) <= get_metric(metric).sort_key(kth))
        assert {(q, int(i)) for i in tied} <= kept, q  # the k best and every tie with the k-th
    assert len(kept) < nq * nb / 2  # and it narrows


def test_only_low_precision_screens_refine_and_only_before_torchs_rerank(monkeypatch):
    """bf16, fp16 and int8 windows are refined where torch reranks them (a GPU, tensors it
    cannot read in place, LOOKALIKE_JIT=0); the compiled CPU rerank takes them whole."""
    a = np.zeros((3, 4), np.float32)
    for low in (torch.bfloat16, torch.int8, torch.float16):
        assert refines(low, "cuda", a, a) and refines(low, "cpu", a.astype(np.float16), a)
        assert refines(low, "cpu", a, a) != jit.enabled("cpu")
    assert not refines(torch.float32, "cuda", a, a) and not refines(torch.float64, "cuda", a, a)
    assert not refines(torch.int16, "cuda", a, a)  # its windows hold about fp32's rows
    monkeypatch.setenv("LOOKALIKE_JIT", "0")
    assert refines(torch.int8, "cpu", a, a)


def test_pick_orders_by_distance_then_lower_index():
    rows = np.array([1, 0, 0, 0, 1, 0, 1, 1])
    cols = np.array([4, 9, 2, 5, 3, 7, 8, 1])
    dist = np.array([1.0, 0.5, 0.5, 0.1, 1.0, 0.5, 0.2, 3.0])
    D = np.zeros((2, 3), np.float32)
    I = np.zeros((2, 3), np.int64)
    pick(get_metric("euclidean"), rows, cols, dist, 3, D, I)
    np.testing.assert_array_equal(I, [[5, 2, 7], [8, 3, 4]])  # ties at 0.5 and at 1.0: lower index first
    np.testing.assert_array_equal(D, np.float32([[0.1, 0.5, 0.5], [0.2, 1.0, 1.0]]))
    pick(get_metric("inner_product"), rows, cols, dist, 3, D, I)  # largest first, ties still to the lower index
    np.testing.assert_array_equal(I, [[2, 7, 9], [1, 3, 4]])


@pytest.mark.parametrize("metric, scipy_name", [("euclidean", "euclidean"), ("sqeuclidean", "sqeuclidean"),
                                                ("cosine", "cosine"), ("manhattan", "cityblock"),
                                                ("chebyshev", "chebyshev")])
def test_pair_distances_are_float64_exact(metric, scipy_name):
    xq, xb = data("normal", nb=50, nq=6)
    rows, cols = np.repeat(np.arange(6), 50), np.tile(np.arange(50), 6)
    got = pair_distances(get_metric(metric), xq, xb, rows, cols, chunk_bytes=512).reshape(6, 50)
    full = cdist(xq.astype(np.float64), xb.astype(np.float64), scipy_name)
    np.testing.assert_allclose(got, full, rtol=1e-13, atol=1e-13)
    ip = pair_distances(get_metric("inner_product"), xq, xb, rows, cols).reshape(6, 50)
    np.testing.assert_allclose(ip, xq.astype(np.float64) @ xb.astype(np.float64).T, rtol=1e-13, atol=1e-12)


def test_cosine_rows_in_the_comfortable_range_rerank_to_the_same_bits_unscaled():
    """The rerank skips cosine's per-row power-of-two scaling when no row needs it: the
    distances are the very same bits."""
    rng = np.random.default_rng(8)
    for magnitude in (1e-5, 1.0, 3e4):
        a = (rng.normal(size=(500, 37)) * magnitude).astype(np.float32)
        b = (rng.normal(size=(500, 37)) * magnitude).astype(np.float32)
        a[3], b[4] = 0, 0
        a[5, :36] = 0
        scaled = exact_distances(get_metric("cosine"), a, b)
        assert torch.equal(scaled, exact_distances(get_metric("cosine"), a, b, comfortable=True))


def test_pick_orders_pairs_as_numpy_lexsort_does():
    from lookalike.knn.refine import _lexsort

    rng = np.random.default_rng(2)
    rows = rng.integers(0, 30, 5000)
    cols = rng.integers(0, 200, 5000)
    key = rng.integers(0, 5, 5000).astype(np.float64)  # many ties, broken by cols
    key[::7] = -0.0
    np.testing.assert_array_equal(_lexsort(cols, key, rows), np.lexsort((cols, key, rows)))


def test_pick_orders_grouped_pairs_as_lexsort_does():
    """Pairs grouped by query, columns in any order within each (the padded, row-wise sort
    of `_order`), many ties: the same order as np.lexsort, ties to the lower index."""
    from lookalike.knn.refine import _order

    rng = np.random.default_rng(2)
    counts = rng.integers(30, 50, 40)
    rows = np.repeat(np.arange(40) * 3, counts)  # some queries absent
    cols = np.concatenate([rng.permutation(500)[:c] for c in counts])
    key = rng.integers(0, 4, len(rows)).astype(np.float64)  # ties everywhere
    np.testing.assert_array_equal(_order(rows, cols, key), np.lexsort((cols, key, rows)))
