"""The engine against an independent float64 brute force: same neighbour sets, same order
(ties to the lower index), distances within 1e-4 relative, for every metric. Each stage has its own tests
(test_screen, test_window, test_refine)."""

import os

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scipy.spatial.distance import cdist

from lookalike.knn import METRICS, PreparedBase, SearchStats, knn, reference_knn
from lookalike.knn.screen import prepare_rows

ALL = sorted(METRICS)
# LOOKALIKE_TEST_DEVICE=cuda runs the suites below through `assert_exact` on a GPU (the same
# code with another torch device; CI has none, so there they run on the CPU)
DEVICE = os.environ.get("LOOKALIKE_TEST_DEVICE", "cpu")


def assert_exact(xq, xb, k, metric, **kw):
    if not isinstance(xb, PreparedBase):
        kw.setdefault("device", DEVICE)
    D, I = knn(xq, xb, k, metric, **kw)
    D_ref, I_ref = reference_knn(xq, xb, k, metric)
    np.testing.assert_array_equal(I, I_ref)
    np.testing.assert_allclose(D, D_ref, rtol=1e-4, atol=1e-5)
    assert D.dtype == np.float32 and I.dtype == np.int64 and D.shape == (len(xq), k)
    return D, I


@st.composite
def problems(draw):
    nb = draw(st.integers(1, 40))
    nq = draw(st.integers(1, 8))
    d = draw(st.integers(1, 12))
    k = draw(st.integers(1, nb))
    kind = draw(st.sampled_from(["normal", "small_ints", "duplicates", "offset", "constant_zero"]))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    if kind == "small_ints":  # many exact ties
        xb = rng.integers(-2, 3, (nb, d)).astype(np.float32)
        xq = rng.integers(-2, 3, (nq, d)).astype(np.float32)
    else:
        xb = rng.normal(size=(nb, d)).astype(np.float32)
        xq = rng.normal(size=(nq, d)).astype(np.float32)
        if kind == "duplicates":
            xb[rng.integers(0, nb, nb)] = xb[rng.integers(0, nb)]
            xq[0] = xb[0]
        elif kind == "offset":  # large norms far from the origin
            xb += 1e4
            xq += 1e4
        elif kind == "constant_zero":
            xb[: nb // 2] = 0.0
            xb[nb // 2 :: 3] = 3.5
            xq[:: 2] = 0.0
    return xq, xb, k, draw(st.sampled_from(ALL))


@pytest.fixture(params=["compiled", "torch"])
def kernels(request, monkeypatch):
    """Both ways of running the CPU stages: the compiled kernels (`knn.jit`, the default)
    and torch's ops (`LOOKALIKE_JIT=0`, as on a GPU or without numba)."""
    if request.param == "torch":
        monkeypatch.setenv("LOOKALIKE_JIT", "0")
    return request.param


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(problems(), st.sampled_from([None, 1e-4]))
def test_engine_is_exact(problem, wm):
    """On the small-size path (wm None: every score in one block) and on blocks (1e-4 MiB)."""
    xq, xb, k, metric = problem
    stats = SearchStats()
    assert_exact(xq, xb, k, metric, working_memory=wm, stats=stats)
    if wm is None:
        assert stats.path == "one block" or stats.fallbacks
    elif len(xb) > 8:  # 1e-4 MiB holds at most 4 base rows a block
        assert stats.path == "blocks"


@settings(max_examples=60, deadline=None)
@given(problems(), st.sampled_from([1e-4, 0.01, 1.0]))
def test_engine_is_exact_with_tiny_blocks_and_low_precision_screens(problem, wm):
    """Every screen on both paths: the small-size path (every score in one block) and blocks
    with a running window (a working memory of 1e-4 MiB holds a few rows at a time)."""
    xq, xb, k, metric = problem
    assert_exact(xq, xb, k, metric, working_memory=wm)
    for dtype in (torch.bfloat16, torch.float16, torch.int8, torch.int16):
        stats = SearchStats()
        assert_exact(xq, xb, k, metric, screen_dtype=dtype, stats=stats)
        assert stats.path == "one block" or stats.fallbacks
        assert_exact(xq, xb, k, metric, screen_dtype=dtype, working_memory=1e-4)


@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(problems(), st.sampled_from([torch.float32, torch.bfloat16, torch.float16, torch.int8, torch.int16]))
def test_engine_is_exact_on_the_torch_path(problem, dtype):
    """LOOKALIKE_JIT=0: the window, refine, rerank and pick take their torch code (the GPU's)
    instead of the compiled kernels that the tests around run; on both paths of the screen (a
    fixture would last the whole test, so the variable is set here)."""
    xq, xb, k, metric = problem
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("LOOKALIKE_JIT", "0")
        assert_exact(xq, xb, k, metric, screen_dtype=dtype)
        assert_exact(xq, xb, k, metric, screen_dtype=dtype, working_memory=1e-4)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.int8, torch.int16])
def test_small_searches_take_one_block_and_large_ones_blocks(dtype, kernels):
    rng = np.random.default_rng(4)
    xb = rng.normal(size=(3000, 24)).astype(np.float32)
    xq = rng.normal(size=(50, 24)).astype(np.float32)
    for wm, path in ((None, "one block"), (0.2, "blocks")):
        base = PreparedBase(xb, "euclidean", screen_dtype=dtype, working_memory=wm)
        stats = SearchStats()
        D, I = knn(xq, base, 7, stats=stats)
        assert stats.path == path
        np.testing.assert_array_equal(I, reference_knn(xq, xb, 7, "euclidean")[1])
        D_self, I_self = knn(xb[:40], base.head(40), 3, exclude_self=True)  # the base against itself
        assert not (I_self == np.arange(40)[:, None]).any()
        np.testing.assert_array_equal(I_self, reference_knn(xb[:40], xb[:40], 4, "euclidean")[1][:, 1:])


@pytest.mark.parametrize("metric", ALL)
def test_near_ties_at_the_bound(metric):
    """Twenty points whose true distances differ by ~1e-9 relative: far below what a fp32
    screen resolves (~1e-7), well above float64's. Only the bound and the rerank order them."""
    rng = np.random.default_rng(0)
    d = 16
    if metric == "cosine":  # directions at angles 0.5 + j * 1e-9 rad from the query's
        q = np.zeros(d)
        q[0] = 1e3
        theta = 0.5 + 1e-9 * np.arange(20)[::-1]
        near = np.zeros((20, d))
        near[:, 0], near[:, 1] = np.cos(theta), np.sin(theta)
        near *= rng.uniform(1, 100, (20, 1))
    else:  # points along one direction at distances 1 + j * 1e-9 on either side
        q = rng.normal(size=d) * 1e3
        direction = rng.normal(size=d)
        direction /= np.linalg.norm(direction)
        near = np.stack([q + direction * (1.0 + 1e-9 * j) * (1 if j % 2 else -1) for j in range(20)][::-1])
    xb = np.concatenate([rng.normal(size=(200, d)) * 1e3, near]).astype(np.float64)
    xq = q[None].astype(np.float64)
    stats = SearchStats()
    assert_exact(xq, xb, 3, metric, stats=stats)
    if metric in ("euclidean", "sqeuclidean", "cosine"):
        assert stats.fallbacks + stats.candidates > 3  # the screen alone could not decide
    for dtype in (torch.bfloat16, torch.int8, torch.int16):
        assert_exact(xq, xb, 3, metric, screen_dtype=dtype)


@pytest.mark.parametrize("metric", ALL)
def test_exclude_self_matches_reference(metric, kernels):
    rng = np.random.default_rng(1)
    xb = rng.normal(size=(120, 10)).astype(np.float32)
    xb[50] = xb[7]  # a duplicate: its neighbour at distance 0 is the other copy
    D, I = knn(xb, xb, 4, metric, exclude_self=True)
    assert not (I == np.arange(120)[:, None]).any()
    D_all, I_all = reference_knn(xb, xb, 5, metric)
    for r in range(120):
        expected = [i for i in I_all[r] if i != r][:4] if r in I_all[r] else None
        if expected is not None:
            np.testing.assert_array_equal(I[r], expected)
    if metric != "inner_product":  # the other copy is at distance 0
        assert I[7, 0] == 50 and I[50, 0] == 7


def test_memory_mapped_base_streams_through_small_blocks(tmp_path):
    rng = np.random.default_rng(2)
    np.save(tmp_path / "xb.npy", rng.normal(size=(3000, 24)).astype(np.float32))
    xb = np.load(tmp_path / "xb.npy", mmap_mode="r")
    assert isinstance(xb, np.memmap)
    xq = rng.normal(size=(30, 24)).astype(np.float32)
    stats = SearchStats()
    assert_exact(xq, xb, 5, "euclidean", working_memory=0.1, stats=stats)
    qb, bb = stats.blocks
    assert bb < 3000 and qb * bb * 4 <= 0.1 * 2**20  # never the full nq x nb matrix


def test_float16_input():
    rng = np.random.default_rng(3)
    xb = rng.normal(size=(500, 32)).astype(np.float16)
    xq = rng.normal(size=(20, 32)).astype(np.float16)
    assert_exact(xq, xb, 3, "euclidean")


def test_prepared_base_is_reused():
    rng = np.random.default_rng(4)
    xb = rng.normal(size=(400, 16)).astype(np.float32)
    base = PreparedBase(xb, "cosine")
    for seed in range(3):
        xq = np.random.default_rng(seed).normal(size=(10, 16)).astype(np.float32)
        D, I = knn(xq, base, 4)
        np.testing.assert_array_equal(I, reference_knn(xq, xb, 4, "cosine")[1])


@pytest.mark.parametrize("metric, scipy_name", [("euclidean", "euclidean"), ("sqeuclidean", "sqeuclidean"),
                                                ("cosine", "cosine"), ("manhattan", "cityblock"),
                                                ("chebyshev", "chebyshev")])
def test_distances_match_scipy_cdist(metric, scipy_name):
    rng = np.random.default_rng(5)
    xb = rng.normal(size=(300, 20)).astype(np.float32)
    xq = rng.normal(size=(25, 20)).astype(np.float32)
    D, I = knn(xq, xb, 6, metric)
    full = cdist(xq.astype(np.float64), xb.astype(np.float64), scipy_name)
    np.testing.assert_allclose(D, np.take_along_axis(full, I, 1), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(D, np.sort(full, 1)[:, :6], rtol=1e-5, atol=1e-6)


def test_inner_product_is_largest_first():
    rng = np.random.default_rng(6)
    xb = rng.normal(size=(200, 8)).astype(np.float32)
    xq = rng.normal(size=(5, 8)).astype(np.float32)
    D, I = knn(xq, xb, 4, "inner_product")
    full = xq.astype(np.float64) @ xb.astype(np.float64).T
    np.testing.assert_allclose(D, -np.sort(-full, 1)[:, :4], rtol=1e-5)
    assert (np.diff(D, axis=1) <= 0).all()


def test_torch_device_parameter_runs_the_same_code():
    """The CUDA path is the same code with another torch device; here it runs on 'cpu'."""
    rng = np.random.default_rng(7)
    xb = rng.normal(size=(100, 8)).astype(np.float32)
    xq = rng.normal(size=(9, 8)).astype(np.float32)
    assert_exact(xq, xb, 3, "euclidean", device=torch.device("cpu"))
    if torch.cuda.is_available():
        assert_exact(xq, xb, 3, "euclidean", device="cuda")


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16, torch.int8, torch.int16])
def test_queries_over_the_candidate_limit_fall_back_and_stay_exact(dtype, kernels):
    """Many equidistant points put hundreds of candidates in every window; a limit of a few
    per query forces the queries holding most to fall back to the uncapped fp32 search."""
    rng = np.random.default_rng(8)
    d = 12
    xq = rng.normal(size=(6, d)).astype(np.float32)
    shell = rng.normal(size=(300, d))
    shell /= np.linalg.norm(shell, axis=1, keepdims=True)
    xb = np.concatenate([xq[0] + 2.0 * shell, rng.normal(size=(200, d)) * 5]).astype(np.float32)
    stats = SearchStats()
    assert_exact(xq, xb, 3, "euclidean", screen_dtype=dtype, limit=40, stats=stats)
    assert stats.fallbacks >= 1
    stats = SearchStats()
    assert_exact(xq, xb, 3, "euclidean", screen_dtype=dtype, stats=stats)
    assert stats.fallbacks == 0


def _query_block_data(kind: str, seed: int = 11) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    if kind == "small_ints":  # many exact ties, inside the k and at its edge
        return (rng.integers(-2, 3, (200, 6)).astype(np.float32), rng.integers(-2, 3, (2000, 6)).astype(np.float32))
    xb = rng.normal(size=(2000, 6)).astype(np.float32)
    xb[rng.integers(0, 2000, 500)] = xb[7]  # duplicates of one row, at many indices
    xq = rng.normal(size=(200, 6)).astype(np.float32)
    xq[105] = xb[7]
    return xq, xb


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16, torch.int8, torch.int16], ids=str)
@pytest.mark.parametrize("kind", ["small_ints", "duplicates"])
def test_query_blocks_and_a_large_k_stay_exact(kind, dtype, kernels):
    """A working memory that holds the scores of 100 queries against the whole base: the
    small-size path goes one query block after another ("query blocks"); k = 700 of 2,000
    rows puts hundreds of ties inside the k, and reranks one query at a time (`_query_chunks`)."""
    xq, xb = _query_block_data(kind)
    for metric, k in (("euclidean", 700), ("cosine", 300), ("inner_product", 5), ("manhattan", 40)):
        stats = SearchStats()
        assert_exact(xq, xb, k, metric, screen_dtype=dtype, working_memory=4.6, stats=stats)
        # an int16 screen's two blocks of sums take 8 bytes a score (`PreparedBase.query_block`)
        rows = 75 if dtype == torch.int16 and METRICS[metric].gemm else 100
        assert stats.path == "query blocks" and stats.blocks == [rows, 2000] and not stats.fallbacks, metric
    D, I = knn(xb[:300], PreparedBase(xb[:300] * 1.0, screen_dtype=dtype, working_memory=0.5), 9, exclude_self=True)
    assert not (I == np.arange(300)[:, None]).any()  # each query block skips its own rows, not the first block's
    np.testing.assert_array_equal(np.sort(D, 1), D)


def test_an_int8_screen_of_short_rows_takes_blocks_whose_scores_stay_in_cache(kernels):
    """int8 rows of at most `CACHE_BLOCK_D` dimensions: query blocks of `CACHE_BLOCK_BYTES` of
    scores (`CACHE_BLOCK_ROWS` queries at least), their pairs finished together, exact; fp32,
    longer rows, and bases too large for `CACHE_BLOCK_ROWS` queries keep the kept buffer's."""
    from lookalike.knn import screen as S

    rng = np.random.default_rng(2)
    xb = rng.normal(size=(12000, 32)).astype(np.float32)
    xq = rng.normal(size=(400, 32)).astype(np.float32)
    base = PreparedBase(xb, screen_dtype=torch.int8)
    rows = S.CACHE_BLOCK_BYTES // (12000 * 4)
    assert base.query_block(400, 64) == rows == 174
    assert PreparedBase(xb).query_block(400, 64) == 400  # fp32
    assert PreparedBase(np.zeros((12000, 300), np.float32), screen_dtype=torch.int8).query_block(400, 64) == 400
    assert PreparedBase(np.zeros((200000, 32), np.float32), screen_dtype=torch.int8).query_block(400, 64) == 167
    stats = SearchStats()
    D, I = knn(xq, base, 10, stats=stats)
    assert stats.path == "query blocks" and stats.blocks == [174, 12000]
    D_ref, I_ref = reference_knn(xq, xb, 10, "euclidean")
    np.testing.assert_array_equal(I, I_ref)
    np.testing.assert_allclose(D, D_ref, rtol=1e-5, atol=1e-6)


def test_query_blocks_finish_their_pairs_together_within_a_blocks_limit(kernels, monkeypatch):
    """The pairs of consecutive query blocks are refined, reranked and picked in one call,
    until holding the next block's would pass one block's candidate limit: then in another."""
    from lookalike.knn import engine

    xq, xb = _query_block_data("small_ints")
    xq = np.concatenate([xq, xq[::-1], xq[:100]])  # 500 queries: five blocks of 100
    held = []
    finish = engine._finish
    monkeypatch.setattr(engine, "_finish", lambda base, q, r, c, *a: (held.append(len(r)), finish(base, q, r, c, *a)))
    stats = SearchStats()
    assert_exact(xq, xb, 700, "euclidean", screen_dtype=torch.int8, working_memory=4.6, stats=stats)
    assert stats.path == "query blocks" and stats.blocks == [100, 2000]
    limit = engine.candidate_limit(700, 100, 4.6 * 2**20)
    assert 2 <= len(held) < 5 and all(n <= limit for n in held) and sum(held) == stats.candidates


def test_query_blocks_cap_their_candidates_and_fall_back(kernels):
    """Every base row at the same distance: each query block's window holds the whole base,
    past its candidate limit, so its queries fall back to the full scan, and stay exact."""
    xb = np.zeros((2000, 4), dtype=np.float32)
    xq = np.ones((300, 4), dtype=np.float32)
    stats = SearchStats()
    D, I = knn(xq, xb, 3, working_memory=4.6, stats=stats)
    assert stats.path == "query blocks" and stats.fallbacks >= 200  # the queries holding most, as in `Window`
    np.testing.assert_array_equal(I, np.tile([0, 1, 2], (300, 1)))
    np.testing.assert_array_equal(D, np.full((300, 3), 2.0, np.float32))


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.int8, torch.int16])
def test_streamed_base_with_a_low_precision_screen(tmp_path, dtype):
    """A memory map streams through small blocks; the bound grows with the rows seen so far
    (rows of very different norms come late) and the result stays exact."""
    rng = np.random.default_rng(9)
    xb = rng.normal(size=(2000, 16)).astype(np.float32)
    xb[1500:] *= 40  # large rows only in the last blocks
    np.save(tmp_path / "xb.npy", xb)
    xb = np.load(tmp_path / "xb.npy", mmap_mode="r")
    xq = rng.normal(size=(25, 16)).astype(np.float32)
    for metric in ("euclidean", "cosine", "inner_product"):
        stats = SearchStats()
        assert_exact(xq, xb, 4, metric, screen_dtype=dtype, working_memory=0.05, stats=stats)
        assert stats.blocks[1] < 2000
        assert stats.reranked <= stats.candidates


def test_int8_screen_refuses_a_dimension_its_int32_sums_cannot_hold():
    from lookalike.errors import SearchError

    xb = np.zeros((2, 140_000), dtype=np.float32)
    with pytest.raises(SearchError, match="int8 screen needs d <="):
        knn(xb[:1], xb, 1, screen_dtype=torch.int8)


@pytest.mark.parametrize("bad, message", [(np.nan, "NaN in the base"), (np.inf, "infinity in the base"),
                                          (1e39, r"values up to 1e\+39 in magnitude in the base")])
def test_the_engine_itself_refuses_what_it_cannot_search(bad, message):
    """`knn` takes raw arrays (no estimator's check_array in front): NaN, inf and values beyond
    float32's range are refused in one line, not searched into garbage."""
    from lookalike.errors import InvalidParameter

    xb = np.random.default_rng(0).random((50, 4))
    bad_b = xb.copy()
    bad_b[3, 1] = bad
    with pytest.raises(InvalidParameter, match=message):
        knn(xb[:5], bad_b, 2)
    with pytest.raises(InvalidParameter, match=message.replace("base", "queries")):
        knn(bad_b, xb, 2)


def test_a_radius_holding_more_pairs_than_memory_is_refused(monkeypatch):
    from lookalike.errors import InvalidParameter
    from lookalike.knn import NearestNeighbors
    from lookalike.knn import radius

    monkeypatch.setattr(radius, "max_pairs", lambda: 100)
    nn = NearestNeighbors().fit(np.random.default_rng(0).random((50, 4)))
    assert sum(len(i) for i in nn.radius_neighbors(radius=0.1)[1]) < 100  # a small radius: answered
    with pytest.raises(InvalidParameter, match="radius 1e\\+09 holds more than 100 .* pairs"):
        nn.radius_neighbors(radius=1e9)


def test_the_engine_checks_k_and_the_query_shape():
    from lookalike.errors import InvalidParameter

    xb = np.random.default_rng(0).random((50, 4)).astype(np.float32)
    for xq, k, kw, message in [(xb, 51, {}, "n_neighbors <= n_samples_fit"), (xb, 0, {}, "n_neighbors > 0"),
                               (xb, 50, {"exclude_self": True}, "n_samples_fit - 1"),
                               (xb[:, :3], 2, {}, r"queries of shape \(50, 3\) do not match a base of 4"),
                               (xb[0], 2, {}, r"queries of shape \(4,\)")]:
        with pytest.raises(InvalidParameter, match=message):
            knn(xq, xb, k, **kw)


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(problems(), st.sampled_from([torch.float32, torch.bfloat16, torch.int8, torch.int16]))
def test_queries_given_as_a_tensor_search_the_same(problem, dtype):
    """Queries already on the search's device (a GPU in benchmarks/gpu.py; the CPU here, whose
    float32 tensors the compiled rerank reads in place, and torch's `device_pair_distances`
    with LOOKALIKE_JIT=0): the same exact answer."""
    xq, xb, k, metric = problem
    D_ref, I_ref = reference_knn(xq, xb, k, metric)
    before = os.environ.get("LOOKALIKE_JIT")
    try:
        for flag in ("1", "0"):  # each against the NumPy queries' search of the same path (the
            os.environ["LOOKALIKE_JIT"] = flag  # kernels' sums and torch's differ in order)
            D, I = knn(torch.from_numpy(xq), xb, k, metric, screen_dtype=dtype)
            np.testing.assert_array_equal(I, I_ref)
            np.testing.assert_array_equal((D, I), knn(xq, xb, k, metric, screen_dtype=dtype))
    finally:
        if before is None:
            os.environ.pop("LOOKALIKE_JIT", None)
        else:
            os.environ["LOOKALIKE_JIT"] = before


def test_tensor_queries_that_fall_back_or_outgrow_the_base_stay_exact():
    rng = np.random.default_rng(8)
    d = 12
    xq = rng.normal(size=(6, d)).astype(np.float32)
    shell = rng.normal(size=(300, d))
    shell /= np.linalg.norm(shell, axis=1, keepdims=True)
    xb = np.concatenate([xq[0] + 2.0 * shell, rng.normal(size=(200, d)) * 5]).astype(np.float32)
    stats = SearchStats()
    D, I = knn(torch.from_numpy(xq), xb, 3, "euclidean", screen_dtype=torch.int8, limit=40, stats=stats)
    assert stats.fallbacks >= 1
    np.testing.assert_array_equal(I, reference_knn(xq, xb, 3, "euclidean")[1])
    big = xq.copy()
    big[2] *= 1e30  # beyond the base's scale: screened in float64
    stats = SearchStats()
    D, I = knn(torch.from_numpy(big), xb, 3, "euclidean", stats=stats)
    assert stats.fallbacks >= 1
    np.testing.assert_array_equal((D, I), knn(big, xb, 3, "euclidean"))  # the NumPy queries' path


@pytest.mark.parametrize("dtype", [torch.float32, torch.int8, torch.int16], ids=str)
def test_searches_in_threads_keep_their_own_buffer_of_scores(dtype):
    """Each thread's kept buffer of scores (`blocks.scratch`) is its own, and the compiled
    kernels release the GIL and keep nothing between calls: searches of one prepared base
    (fp32 and int8 screens) from four threads at once give what each gives alone."""
    from concurrent.futures import ThreadPoolExecutor

    from lookalike.knn.blocks import SCRATCH_MIB, scratch

    rng = np.random.default_rng(12)
    xb = rng.normal(size=(3000, 16)).astype(np.float32)
    queries = [rng.normal(size=(n, 16)).astype(np.float32) for n in (5, 80, 300, 700)]
    base = PreparedBase(xb, "euclidean", screen_dtype=dtype)
    alone = [knn(q, base, 6) for q in queries]
    with ThreadPoolExecutor(4) as pool:
        together = list(pool.map(lambda q: knn(q, base, 6), queries * 3))
    for (D, I), (D0, I0) in zip(together, alone * 3):
        np.testing.assert_array_equal(I, I0)
        np.testing.assert_array_equal(D, D0)
    cpu = torch.device("cpu")
    a, b = scratch(100, cpu), scratch(50, cpu)
    assert a.data_ptr() == b.data_ptr()  # kept, not made afresh
    cap = SCRATCH_MIB * 2**20 // 4
    assert scratch(cap + 1, cpu).data_ptr() != a.data_ptr()  # past SCRATCH_MIB: fresh
    with ThreadPoolExecutor(1) as pool:  # a thread of its own, with no buffer yet
        first, second = pool.submit(lambda: [scratch(n, cpu).data_ptr() for n in (100, cap)]).result()
    assert first == second  # made at its full size at once: a larger block later is no new buffer


@pytest.fixture
def narrow_every_window(monkeypatch):
    """Every int8 window of more than k rows narrowed by each pair's own bound (`_narrow`),
    not only the wide ones the engine narrows by default."""
    from lookalike.knn import engine

    monkeypatch.setattr(engine, "NARROW_FACTOR", 0)
    monkeypatch.setattr(engine, "NARROW_MIN", 0)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                  HealthCheck.function_scoped_fixture])
@given(problems())
def test_int8_windows_narrowed_pair_by_pair_stay_exact(narrow_every_window, problem):
    """Each pair's own bound (`Screen.pair_bound`) in place of the row's largest: the same
    exact answer on every kind of hard input (ties, duplicates, offsets, zero rows), every
    metric, with and without the own rows (exclude_self)."""
    xq, xb, k, metric = problem
    assert_exact(xq, xb, k, metric, screen_dtype=torch.int8)
    if k < len(xb):
        D, I = knn(xb, xb, k, metric, screen_dtype=torch.int8, exclude_self=True)
        D32, I32 = knn(xb, xb, k, metric, screen_dtype=torch.float32, exclude_self=True)  # no narrowing
        np.testing.assert_array_equal(I, I32)
        np.testing.assert_array_equal(D, D32)


def test_a_pair_by_pair_window_holds_fewer_rows_and_the_same_neighbours(monkeypatch):
    """Rows of very different norms (as CNN features have): the window by each pair's bound
    holds far fewer rows than by the largest row's, with the same exact result; the pair
    bound at the base's largest norm and error is `bound` itself, and no pair's exceeds it."""
    from lookalike.knn import engine

    rng = np.random.default_rng(12)
    xb = np.abs(rng.normal(size=(3000, 64))).astype(np.float32) * rng.uniform(0.05, 1, (3000, 1)).astype(np.float32)
    xq = xb[rng.integers(0, 3000, 200)] + rng.normal(size=(200, 64)).astype(np.float32) * 0.02
    base = PreparedBase(xb, "euclidean", screen_dtype=torch.int8)
    q = prepare_rows(base.screen, xq, base.device)
    a, b, c, g = base.screen.pair_bound(q)
    y, e = base.rows.l2.numpy(), base.rows.qerr.numpy()
    whole = base.screen.bound(q, base.extent).numpy()
    np.testing.assert_allclose(a * base.extent.l2 + b * base.extent.qerr + c + g * base.extent.l2**2, whole,
                               rtol=1e-12)
    assert (a[:, None] * y + b[:, None] * e + c[:, None] + g * y * y <= whole[:, None] * (1 + 1e-12)).all()
    counts = {}
    for factor in (0, 10**9):  # every window narrowed; none
        monkeypatch.setattr(engine, "NARROW_FACTOR", factor)
        monkeypatch.setattr(engine, "NARROW_MIN", 0 if factor == 0 else 10**9)
        stats = SearchStats()
        D, I = knn(xq, base, 5, stats=stats)
        D_ref, I_ref = reference_knn(xq, xb, 5, "euclidean")
        np.testing.assert_array_equal(I, I_ref)
        np.testing.assert_allclose(D, D_ref, rtol=1e-5)
        counts[factor] = stats.candidates
    assert counts[0] < 0.7 * counts[10**9]


def test_narrowed_windows_searched_from_several_threads_at_once(narrow_every_window):
    """The service searches from several threads: each narrowing call keeps its buffer of rows
    for itself, so searches at once give what each gives alone."""
    from concurrent.futures import ThreadPoolExecutor

    rng = np.random.default_rng(21)
    xb = np.abs(rng.normal(size=(2000, 48))).astype(np.float32) * rng.uniform(0.05, 1, (2000, 1)).astype(np.float32)
    base = PreparedBase(xb, "euclidean", screen_dtype=torch.int8)
    queries = [xb[rng.integers(0, 2000, 150)] + rng.normal(size=(150, 48)).astype(np.float32) * 0.02
               for _ in range(6)]
    alone = [knn(q, base, 5) for q in queries]
    with ThreadPoolExecutor(3) as pool:
        together = list(pool.map(lambda q: knn(q, base, 5), queries))
    for (D0, I0), (D1, I1) in zip(alone, together):
        np.testing.assert_array_equal(I1, I0)
        np.testing.assert_array_equal(D1, D0)
    np.testing.assert_array_equal(alone[0][1], reference_knn(queries[0], xb, 5, "euclidean")[1])


@pytest.mark.parametrize("metric", ["euclidean", "inner_product"])
def test_an_fp16_screen_keeps_values_beyond_its_range_exact(metric):
    """fp16 holds values up to 65,504: a query that the base's scale would carry past
    `SAFE_HALF` is screened in float64 (never an infinite fp16 score), one just within it
    stays on the fp16 screen; values in fp16's subnormal range are within the bound."""
    from lookalike.knn.screen import SAFE_HALF

    rng = np.random.default_rng(12)
    xb = rng.normal(size=(400, 10)).astype(np.float32)
    xb[:, 0] = np.abs(xb[:, 0]) + 1  # a positive mean there: centring carries a negative query further out
    xq = rng.normal(size=(7, 10)).astype(np.float32)
    base = PreparedBase(xb, metric, screen_dtype=torch.float16)
    edge = SAFE_HALF / base.scale  # the largest query value the fp16 screen takes (a power of two)
    xq[0] *= 1e6  # scaled far past 2^14: float64
    xq[1, 0] = -edge  # at the limit: fp16, its centred value past 2^14 and still finite
    xq[3, 0] = -np.nextafter(np.float32(edge), np.float32(np.inf))  # just past it: float64
    xq[2] *= 1e-9  # subnormal in fp16 (scaled), as are parts of the base below
    xb[100:200] *= 10.0 ** rng.uniform(-12, -4, (100, 10))
    base = PreparedBase(xb, metric, screen_dtype=torch.float16)
    assert SAFE_HALF / base.scale == edge
    wide, _ = base.query_scales(xq)
    assert wide.tolist() == [True, False, False, True, False, False, False]
    stats = SearchStats()
    D, I = knn(xq, base, 5, metric, stats=stats)
    D_ref, I_ref = reference_knn(xq, xb, 5, metric)
    np.testing.assert_array_equal(I, I_ref)
    np.testing.assert_allclose(D, D_ref, rtol=1e-4, atol=1e-5)
    assert stats.screen_dtype == "float16" and stats.fallbacks == 2
