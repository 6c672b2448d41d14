"""The compiled kernels of stage 5 (`knn/pairs.py`: rerank and pick) against the torch path of
`refine.py` (`LOOKALIKE_JIT=0`, which also refines low-precision windows first): the same
neighbours, the same distances, the same ties, on the inputs where rounding, scaling and order
matter."""

import numpy as np
import pytest
import torch

from lookalike.knn import METRICS, get_metric, knn, reference_knn
from lookalike.knn import jit, pairs
from lookalike.knn.blocks import SearchStats
from lookalike.knn.refine import pair_distances, pick

pytestmark = pytest.mark.skipif(not jit.enabled(), reason="numba is not installed (or LOOKALIKE_JIT=0)")

GEMM = sorted(m for m in METRICS if METRICS[m].gemm)


def both(monkeypatch, fn):
    """fn() with the kernels, then on the torch path."""
    with monkeypatch.context() as mp:
        mp.setenv("LOOKALIKE_JIT", "1")
        kernels = fn()
    with monkeypatch.context() as mp:
        mp.setenv("LOOKALIKE_JIT", "0")
        torch_path = fn()
    return kernels, torch_path


def case(kind: str, seed: int = 0):
    """(xq, xb, metrics) of one kind of hard input."""
    rng = np.random.default_rng(seed)
    xb = rng.normal(size=(300, 21)).astype(np.float32)
    xq = rng.normal(size=(40, 21)).astype(np.float32)
    if kind == "ties":  # small integers: exact distances, ties everywhere
        xb = rng.integers(-2, 3, xb.shape).astype(np.float32)
        xq = rng.integers(-2, 3, xq.shape).astype(np.float32)
    elif kind == "duplicates":  # one row at many indices, and queries equal to it
        xb[rng.integers(0, 300, 90)] = xb[7]
        xq[::5] = xb[7]
    elif kind == "zero_rows":  # cosine's zero rows are at cosine 0 from everything
        xb[::6] = 0
        xq[::4] = 0
        xb[1::6, :20] = 0  # and rows with one value
    elif kind == "huge":
        xb, xq = xb * np.float32(1e30), xq * np.float32(1e30)
    elif kind == "tiny":  # squares underflow float32: the rerank's scale keeps them apart
        xb, xq = xb * np.float32(1e-30), xq * np.float32(1e-30)
    elif kind == "mixed_rows":  # cosine rows of very different magnitudes: scaled one by one
        xb[::3] *= np.float32(1e-35)
        xq[::2] *= np.float32(1e33)
    elif kind == "float64":  # near-duplicates apart by less than float32's precision
        xb = rng.normal(size=xb.shape)
        xq = xb[rng.integers(0, 300, 40)] + rng.normal(size=xq.shape) * 1e-9
        xb[::7] = xb[5] + rng.normal(size=xb[::7].shape) * 1e-10
    metrics = {"huge": ["euclidean", "cosine", "manhattan", "chebyshev"],  # squares: beyond float32
               "mixed_rows": ["cosine"],
               # cosine's 1 - cos of near-duplicates is below float64's own rounding: no order to agree on
               "float64": [m for m in sorted(METRICS) if not METRICS[m].normalised]}.get(kind, sorted(METRICS))
    return xq, xb, metrics


KINDS = ["ties", "duplicates", "zero_rows", "huge", "tiny", "mixed_rows", "float64"]


@pytest.mark.parametrize("kind", KINDS)
def test_kernels_and_torch_give_the_same_neighbours(monkeypatch, kind):
    """Every screen, every metric: the same I, the same D (to float64's rounding, which the
    two paths sum in different orders), and the reference's neighbours."""
    xq, xb, metrics = case(kind)
    for metric in metrics:
        gemm = [torch.float32, torch.bfloat16, torch.int8, torch.int16]
        for dtype in (gemm if METRICS[metric].gemm else [torch.float64]):
            (D1, I1), (D0, I0) = both(monkeypatch, lambda: knn(xq, xb, 7, metric, screen_dtype=dtype))
            np.testing.assert_array_equal(I1, I0, err_msg=f"{metric} {dtype}")
            np.testing.assert_allclose(D1, D0, rtol=1e-6, atol=1e-35, err_msg=f"{metric} {dtype}")
            if kind != "tiny":  # the reference's own float64 squares underflow there
                np.testing.assert_array_equal(I1, reference_knn(xq, xb, 7, metric)[1], err_msg=f"{metric} {dtype}")


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.int8], ids=str)
def test_a_memory_mapped_base_is_read_in_place(monkeypatch, tmp_path, dtype):
    """The rerank (and torch's refinement) read a memory-mapped base where it lies: the same
    result as the base in memory, and as the torch path, streamed in small blocks or prepared
    whole."""
    xq, xb, _ = case("duplicates", 3)
    np.save(tmp_path / "xb.npy", xb)
    mm = np.load(tmp_path / "xb.npy", mmap_mode="r")
    for metric in ("euclidean", "cosine", "inner_product"):
        want = knn(xq, xb, 5, metric, screen_dtype=dtype)
        for wm in (None, 0.02):
            got, torch_path = both(monkeypatch, lambda: knn(xq, mm, 5, metric, screen_dtype=dtype, working_memory=wm))
            for D, I in (got, torch_path):
                np.testing.assert_array_equal(I, want[1])
                # atol: a duplicate's cosine distance, 1 - cos, is 0 or a few units of float64's
                # rounding of 1, depending on the order the two paths sum in
                np.testing.assert_allclose(D, want[0], rtol=1e-6, atol=1e-15)


@pytest.mark.parametrize("metric", sorted(METRICS))
def test_pair_distances_equal_rows_give_equal_distances(monkeypatch, tmp_path, metric):
    """Each pair on its own: duplicates of a row at any index (and in any chunk or thread)
    get the very same float64 distance; small integers give the exact distances on both
    paths; a memory map gives the same bits as the array in memory."""
    m = get_metric(metric)
    rng = np.random.default_rng(5)
    xb = rng.normal(size=(2000, 37)).astype(np.float32)
    xb[rng.integers(0, 2000, 300)] = xb[11]
    xq = rng.normal(size=(30, 37)).astype(np.float32)
    rows, cols = np.repeat(np.arange(30), 2000), np.tile(np.arange(2000), 30)
    (dist, dist_t) = both(monkeypatch, lambda: pair_distances(m, xq, xb, rows, cols))
    np.testing.assert_allclose(dist, dist_t, rtol=1e-14, atol=1e-12)  # inner products cancel: d u |a||b|
    same = np.flatnonzero((xb == xb[11]).all(1))
    for q in range(30):
        assert len(set(dist[q * 2000 + same])) == 1
    np.save(tmp_path / "xb.npy", xb)
    mm = np.load(tmp_path / "xb.npy", mmap_mode="r")
    assert np.array_equal(pair_distances(m, xq, mm, rows[::-1].copy(), cols[::-1].copy()), dist[::-1])
    xq_i = rng.integers(-3, 4, (5, 19)).astype(np.float32)
    xb_i = rng.integers(-3, 4, (60, 19)).astype(np.float64)
    r, c = np.repeat(np.arange(5), 60), np.tile(np.arange(60), 5)
    ints, ints_t = both(monkeypatch, lambda: pair_distances(m, xq_i, xb_i, r, c, scale=2.0**-3))
    if m.p in (1.0, np.inf) or m.squared or (m.p is None and not m.normalised):  # sums of small integers
        np.testing.assert_array_equal(ints, ints_t)
    else:
        np.testing.assert_allclose(ints, ints_t, rtol=1e-15)


@pytest.mark.parametrize("k", [9, 40])  # kept by insertion; by sorts, after a partition past 2k (`pairs.SMALL_K`)
@pytest.mark.parametrize("largest_first", [False, True])
def test_pick_of_grouped_pairs_matches_the_general_sort(monkeypatch, largest_first, k):
    """Pairs grouped by query, columns in any order within each, ties everywhere (-0.0 and
    0.0 among them), some queries holding fewer than k: the same D, I and short queries."""
    m = get_metric("inner_product" if largest_first else "euclidean")
    rng = np.random.default_rng(4)
    counts = rng.integers(1, 120, 70)  # k = 40: fewer than k, k to 2k, more than 2k
    rows = np.repeat(np.arange(70) * 2, counts)  # some queries absent
    cols = np.concatenate([rng.permutation(500)[:c] for c in counts])
    dist = rng.integers(-3, 4, len(rows)).astype(np.float64)
    dist[dist == 0] = np.where(rng.random(int((dist == 0).sum())) < 0.5, -0.0, 0.0)

    def run():
        D, I = np.zeros((140, k), np.float32), np.full((140, k), -1)
        short = pick(m, rows, cols, dist, k, D, I, scale=2.0)
        return D, I, short

    (D1, I1, s1), (D0, I0, s0) = both(monkeypatch, run)
    np.testing.assert_array_equal(s1, s0)
    np.testing.assert_array_equal(I1, I0)
    np.testing.assert_array_equal(D1, D0)
    assert set(s1) == set(2 * np.flatnonzero(counts < k))


def test_cpu_searches_run_the_kernels(monkeypatch):
    """A CPU search of float32 or float64 arrays reranks and picks in the kernels, an int8
    window unrefined (the rerank takes it whole); with LOOKALIKE_JIT=0 it never calls them,
    and refines the window in torch first."""
    calls = []
    for name in ("distances", "pick_into"):
        fn = getattr(pairs, name)
        monkeypatch.setattr(pairs, name, lambda *a, _fn=fn, _name=name, **kw: calls.append(_name) or _fn(*a, **kw))
    xq, xb, _ = case("duplicates")
    stats = SearchStats()
    knn(xq, xb, 5, screen_dtype=torch.int8, stats=stats)
    assert set(calls) == {"distances", "pick_into"}
    assert stats.refine_s == 0 and stats.reranked == stats.candidates
    calls.clear()
    monkeypatch.setenv("LOOKALIKE_JIT", "0")
    stats = SearchStats()
    knn(xq, xb.astype(np.float64), 5, screen_dtype=torch.int8, stats=stats)
    assert not calls and stats.refine_s > 0


@pytest.mark.parametrize("metric", sorted(METRICS))
def test_pair_distances_of_rows_with_no_values(metric):
    """d = 0: every distance 0 (cosine: 1, zero rows at cosine 0 from everything)."""
    xq, xb = np.zeros((3, 0), np.float32), np.zeros((4, 0), np.float32)
    dist = pair_distances(get_metric(metric), xq, xb, np.repeat(np.arange(3), 4), np.tile(np.arange(4), 3))
    np.testing.assert_array_equal(dist, np.full(12, 1.0 if METRICS[metric].normalised else 0.0))


@pytest.mark.parametrize("n", [1, 5, pairs.RADIX_MIN - 1, pairs.RADIX_MIN, 1003, 5000])
def test_the_radix_order_is_a_stable_sort(n):
    """`_radix_order` (the pick's sort past k = 32) orders float64 keys as a stable
    comparison sort does: negatives (inner products' keys), -0.0 equal to 0.0, ties,
    subnormals, huge and tiny values, and keys that share all but their last bits."""
    rng = np.random.default_rng(n)
    pools = [rng.normal(size=n) * 10.0 ** rng.integers(-300, 300, n),
             rng.integers(-3, 4, n).astype(np.float64),  # many ties
             np.where(rng.random(n) < 0.5, -0.0, 0.0),
             50.0 + rng.integers(0, 8, n) * np.finfo(np.float64).eps * 64,  # the last bits only
             rng.choice([5e-324, 1e-310, -1e-310, 1e300, -1e300, 0.0], n)]
    for keys in pools:
        got = pairs._radix_order(keys)
        want = np.argsort(keys, kind="stable")
        np.testing.assert_array_equal(got, want)


def test_float32_cosine_rows_need_no_scaling_of_their_own():
    """float32 rows skip cosine's scaling by a power of two in the rerank: in float64 their
    products are exact and normal and their sums cannot overflow, so the scaling changes no
    bit. The same rows as float64 (which are scaled) give the very same distances, from
    rows near float32's largest values down to its subnormals."""
    rng = np.random.default_rng(9)
    m = get_metric("cosine")
    xb = rng.normal(size=(400, 45)).astype(np.float32)
    xq = rng.normal(size=(20, 45)).astype(np.float32)
    xb[::4] *= np.float32(1e37)
    xb[1::4] *= np.float32(1e-40)  # subnormal float32 values
    xq[::3] *= np.float32(1e-38)
    xq[1::3] *= np.float32(3e37)
    xb[2::9] = 0
    rows, cols = np.repeat(np.arange(20), 400), np.tile(np.arange(400), 20)
    d32 = pairs.distances(m, xq, xb, rows, cols)
    d64 = pairs.distances(m, xq.astype(np.float64), xb.astype(np.float64), rows, cols)
    assert np.isfinite(d32).all()
    np.testing.assert_array_equal(d32, d64)


def test_a_kernel_of_one_task_runs_on_the_calling_thread_alone(monkeypatch):
    """jit.threads(tasks): a parallel loop of one task (a query's few pairs, a query's row of
    scores) runs on the calling thread, without waking a thread that would have nothing to do;
    a loop of many tasks gets torch's thread count. The neighbours are the same either way."""
    numba = pytest.importorskip("numba")
    seen = []
    fn = pairs._distances
    monkeypatch.setattr(pairs, "_distances", lambda *a: seen.append(numba.get_num_threads()) or fn(*a))
    rng = np.random.default_rng(0)
    xb = rng.standard_normal((3000, 32)).astype(np.float32)
    xq = rng.standard_normal((40, 32)).astype(np.float32)
    one = knn(xq[:1], xb, 5, screen_dtype=torch.int8)
    assert seen == [1]  # 5 or so pairs: one chunk
    many = knn(xq, xb, 5, screen_dtype=torch.int8)  # 40 queries' pairs: several chunks
    assert seen[1] == max(1, min(torch.get_num_threads(), numba.config.NUMBA_NUM_THREADS))
    for D, I in (one, many):
        D0, I0 = reference_knn(xq[: len(D)], xb, 5)
        np.testing.assert_array_equal(I, I0)
    jit.threads(1)
    assert numba.get_num_threads() == 1
    jit.threads()
    assert numba.get_num_threads() == max(1, min(torch.get_num_threads(), numba.config.NUMBA_NUM_THREADS))


@pytest.mark.parametrize("d", [3, 64, 1280])
def test_a_cosine_row_is_exactly_0_from_an_equal_row(monkeypatch, d):
    """1 - a.b / sqrt(|a|^2 |b|^2): for equal rows the three sums are one number s and
    sqrt(s s) is s, so an exact copy is 0 away (with |a| |b| as sqrt(s) sqrt(s), about half
    of such rows lay 1e-16 away, and a near-duplicate search at threshold 0 missed them), in
    the kernels and in torch, comfortable rows or scaled ones, and through a search."""
    rng = np.random.default_rng(d)
    x = (rng.standard_normal((400, d)) * rng.choice([1e-3, 1.0, 1e3], (400, 1))).astype(np.float32)
    idx = np.arange(len(x))
    m = get_metric("cosine")
    for comfortable in (False, True):
        assert not pair_distances(m, x, x, idx, idx, comfortable=comfortable).any()
    from lookalike.knn.metrics import exact_distances
    assert not exact_distances(m, torch.from_numpy(x), torch.from_numpy(x.copy())).any()
    assert not exact_distances(m, torch.from_numpy(x[:, None]), torch.from_numpy(np.stack([x, x], 1))).any()
    monkeypatch.setenv("LOOKALIKE_JIT", "0")
    assert not pair_distances(m, x, x, idx, idx).any()
    monkeypatch.delenv("LOOKALIKE_JIT")
    D, I = knn(x[:50], np.concatenate([x[50:100], x]), 1, metric="cosine")
    assert (D[:, 0] == 0).all()
