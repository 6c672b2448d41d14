"""Stage 3 compiled: `selection.window_pairs` gives the pairs of `window.one_block` on the same
scores, and an int8 screen's scores computed in place as `Screen.bound` counts them."""

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from lookalike.knn import PreparedBase, SearchStats, jit, knn, reference_knn, selection
from lookalike.knn.screen import int8_dots, prepare_rows
from lookalike.knn.window import one_block

pytestmark = pytest.mark.skipif(not jit.enabled(), reason="the compiled kernels are off (LOOKALIKE_JIT=0 or no numba)")


def ordered(r: torch.Tensor, c: torch.Tensor, nb: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Pairs sorted by row, then column (`one_block` orders a row's columns by group)."""
    o = torch.argsort(r * nb + c)
    return r[o], c[o]


def assert_same_pairs(s: torch.Tensor, k: int, width: torch.Tensor, self_offset: int = -1) -> torch.Tensor:
    """window_pairs against one_block on the same scores; returns the pairs per row."""
    ref = s.clone()
    if self_offset >= 0:
        n = len(ref)
        ref[torch.arange(n), torch.arange(self_offset, self_offset + n)] = float("inf")
    r0, c0 = ordered(*one_block(ref, k, width), s.shape[1])
    r1, c1, count = selection.window_pairs(s.clone(), k, width, self_offset=self_offset)
    assert torch.equal(r1, r0) and torch.equal(c1, c0)
    assert torch.equal(count, torch.bincount(r1, minlength=len(s)))
    return count


@pytest.mark.parametrize("kind", ["normal", "ties", "falling", "constant", "one lane", "wide"])
@pytest.mark.parametrize("k", [1, 3, 8, 10, 16, 32, 40, 333, 700, 1499])
def test_window_pairs_equal_one_block(kind, k):
    """Up to `MAX_K` by insertion top-k (from `LANES_FROM_K` by lane minima, `_window_lanes`:
    with the row's smallest scores all in one lane, and more scores under the lanes' bound than
    their buffer holds), past it by a sample's threshold (`_window_large`, its sample every 8th,
    16th (k = 333) or 32nd (k = 700) score: with ties around it, rows whose scores fall, and
    k = nb - 1, where the sample cannot tell)."""
    g = torch.Generator().manual_seed(k)
    nq, nb = 23, 1500
    if kind == "ties":
        s = torch.randint(0, 30, (nq, nb), generator=g).float()
    elif kind == "constant":  # every score a tie: whole rows in the window, past the rows' own slots
        s = torch.zeros(nq, nb)
    else:
        s = torch.randn(nq, nb, generator=g)
    if kind == "falling":  # each score better than the last: every one enters the top-k
        s = s.sort(1, descending=True).values
    if kind == "one lane":  # the smallest scores in every 64th column, one lane of `_window_lanes`:
        s[:, ::64] -= 10    # the k-th of the lane minima is far above the row's k-th
    if kind == "wide":  # a width that puts more scores under the lanes' bound than their buffer holds
        s = s * 0.01
    width = torch.rand(nq, generator=g, dtype=torch.float64) * 0.3
    width[0] = 0.0
    count = assert_same_pairs(s, k, width)
    if kind == "constant":
        assert (count == nb).all()
    for offset in (0, 7):  # exclude_self, the block's first query being query `offset`
        if k < nb - 7:
            assert_same_pairs(s, k, width, self_offset=offset)


def test_a_sample_holding_the_smallest_scores_raises_its_threshold_until_k_fit():
    """k = 100: the row's sampled scores (every 8th) are its smallest, so the first thresholds
    hold fewer than k scores; the sample's rank doubles, past `MAX_K` by partition."""
    nq, nb, k = 3, 1500, 100
    s = torch.rand(nq, nb) + 1000
    s[:, ::8] = torch.arange(len(range(0, nb, 8)), dtype=torch.float32)
    width = torch.zeros(nq, dtype=torch.float64)
    count = assert_same_pairs(s, k, width)
    assert (count == k).all()


@settings(max_examples=150, deadline=None)
@given(st.integers(1, 40), st.integers(1, 150), st.integers(0, 2**32 - 1), st.data())
def test_window_pairs_equal_one_block_on_any_small_block(nq, nb, seed, data):
    """Short rows (fewer scores than a chunk), k up to nb, few distinct values, any width."""
    k = data.draw(st.integers(1, nb))
    rng = np.random.default_rng(seed)
    s = torch.from_numpy(rng.integers(-3, 4, (nq, nb)).astype(np.float32) * np.float32(0.25))
    width = torch.from_numpy(rng.choice([0.0, 1e-9, 0.25, 0.3, 2.0], nq))
    assert_same_pairs(s, k, width)
    if k < nb and nb >= nq:
        assert_same_pairs(s, k, width, self_offset=data.draw(st.integers(0, nb - nq)))


def test_the_threshold_is_rounded_up_to_float32():
    """k-th + width lies between two float32 numbers: a score on the upper one is inside."""
    kth = np.float32(1.0)
    up = np.nextafter(kth, np.float32(2.0))
    s = torch.tensor([[kth, up, np.nextafter(up, np.float32(2.0)), 5.0]])
    width = torch.tensor([(float(up) - 1.0) / 3])  # 1 + width rounds to nearest: down, to 1.0
    r, c, _ = selection.window_pairs(s.clone(), 1, width)
    assert c.tolist() == [0, 1]
    assert_same_pairs(s, 1, width)


@pytest.mark.parametrize("k", [5, 10])
@pytest.mark.parametrize("centred", [True, False])
@pytest.mark.parametrize("d", [1, 5, 300])
def test_int8_scores_in_place_round_as_the_bound_counts(centred, d, k):
    """The scores written over the int32 sums are those of separate float32 products and
    sums (`Screen.bound`'s roundings), and the pairs are one_block's on them (k = 10: by lane
    minima, `_window_lanes`)."""
    g = torch.Generator().manual_seed(d)
    nq, nb = 40, 700
    a = torch.randint(-127, 128, (nq, d), generator=g).to(torch.int8)
    b = torch.randint(-127, 128, (nb, d), generator=g).to(torch.int8)
    sx, sb = torch.rand(nq, generator=g) / 127, torch.rand(nb, generator=g) / 127
    sq = torch.rand(nb, generator=g) * d if centred else None
    dots = int8_dots(a, b).float() * sb
    expected = sq + (-2 * sx)[:, None] * dots if centred else -(dots * sx[:, None])
    width = torch.full((nq,), 1e-3, dtype=torch.float64)
    for offset in (-1, 3):
        buf = int8_dots(a, b)
        r, c, _ = selection.window_pairs(buf, k, width, self_offset=offset, int8=(sx, sb, sq))
        scores = buf.view(torch.float32)
        if offset >= 0:
            scores[torch.arange(nq), torch.arange(offset, offset + nq)] = float("inf")
            expected[torch.arange(nq), torch.arange(offset, offset + nq)] = float("inf")
        assert torch.equal(scores, expected)
        assert torch.equal(torch.stack([r, c]), torch.stack(ordered(*one_block(scores, k, width), nb)))


@pytest.mark.parametrize("metric", ["euclidean", "cosine", "inner_product"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.int8])
def test_the_engine_finds_the_same_window_with_the_kernels_on_and_off(metric, dtype, monkeypatch):
    """A whole search's candidates (their count) and result, compiled selection or torch's;
    duplicates and exclude_self included, k up to the largest the kernels take."""
    rng = np.random.default_rng(3)
    xb = rng.normal(size=(900, 48)).astype(np.float32)
    xb[100:140] = xb[5]  # forty copies of a row: ties across the k-th
    xq = np.concatenate([xb[:60], rng.normal(size=(40, 48)).astype(np.float32)])
    base = PreparedBase(xb, metric, screen_dtype=dtype)
    for k in (1, 4, selection.MAX_K, 150):
        for exclude_self in (False, True):
            q = xb if exclude_self else xq
            runs = []
            for flag in ("1", "0"):
                monkeypatch.setenv("LOOKALIKE_JIT", flag)
                stats = SearchStats()
                runs.append((knn(q, base, k, exclude_self=exclude_self, stats=stats), stats.candidates))
            (D1, I1), n1 = runs[0]
            (D0, I0), n0 = runs[1]
            np.testing.assert_array_equal(I1, I0)
            # the float64 rerank's kernel (`pairs`) sums in another order than torch's: distances
            # agree to float64 rounding (cosine: 0 against 1e-16 between equal rows)
            np.testing.assert_allclose(D1, D0, rtol=1e-6, atol=1e-12)
            if dtype != torch.int8 or metric != "euclidean":  # int8 centred: torch may fuse a rounding
                assert n1 == n0
            if not exclude_self:
                np.testing.assert_array_equal(I1, reference_knn(q, xb, k, metric)[1])


def test_prepared_queries_feed_the_kernel_from_a_query_block():
    """The engine's call: query rows lo.. of a larger set, exclude_self at offset lo."""
    rng = np.random.default_rng(8)
    xb = rng.normal(size=(500, 16)).astype(np.float32)
    base = PreparedBase(xb, "euclidean")
    rows = prepare_rows(base.screen, xb[100:164], base.device)
    width = 2 * base.screen.bound(rows, base.extent)
    s = base.screen.scores(rows, base.rows)
    r, c, _ = selection.window_pairs(s.clone(), 3, width, self_offset=100)
    assert not (c == r + 100).any()
    assert_same_pairs(s, 3, width, self_offset=100)


def test_the_kernels_serve_cpu_float32_and_int8_screens_at_any_k(monkeypatch):
    cpu = torch.device("cpu")
    for dtype in (torch.float32, torch.bfloat16, torch.float16, torch.int8):
        assert selection.usable(cpu, dtype, selection.MAX_K)
        assert selection.usable(cpu, dtype, 1000)
    assert not selection.usable(cpu, torch.float64, 3)  # a float64 screen's scores: torch's path
    assert not selection.usable(torch.device("cuda"), torch.float32, 3)
    monkeypatch.setenv("LOOKALIKE_JIT", "0")
    assert not selection.usable(cpu, torch.float32, 3)
    width = torch.zeros(4, dtype=torch.float64)
    for k, offset in ((0, -1), (11, -1), (3, 7), (10, 0)):  # the kernels index without bounds checks
        with pytest.raises(ValueError, match="internal"):
            selection.window_pairs(torch.zeros(4, 10), k, width, self_offset=offset)


@pytest.mark.parametrize("spread", [1.0, 16.0])
@pytest.mark.parametrize("k", [4, 10])
@pytest.mark.parametrize("centred", [True, False])
def test_a_window_narrowed_pair_by_pair_lies_within_the_rows_window(centred, k, spread):
    """`pair`: each pair's own bound, for rows holding more than k + excess columns: their
    pairs are a subset of those by the row's width (the largest bound), the rows below the
    excess keep theirs, and every column whose score plus its bound is among the k smallest
    stays in (the k-th of those is the threshold). spread = 16: bounds so wide that windows
    hold more columns than the rows' slots, before narrowing and after (`_narrow` reads them
    from the row, and leaves them there for `_gather`)."""
    g = torch.Generator().manual_seed(5)
    nq, nb, d = 30, 900, 40
    a8 = torch.randint(-127, 128, (nq, d), generator=g).to(torch.int8)
    b8 = torch.randint(-127, 128, (nb, d), generator=g).to(torch.int8)
    sx, sb = torch.rand(nq, generator=g) / 127, torch.rand(nb, generator=g) / 127
    sq = torch.rand(nb, generator=g) * d if centred else None
    y = (torch.rand(nb, generator=g) * 3).double().numpy()
    e = (torch.rand(nb, generator=g) * 0.1).double().numpy()
    scale = spread if centred else spread / 16  # products' scores spread less: as wide at a sixteenth
    a, b, c = (torch.rand(nq, generator=g).double().numpy() * s * scale for s in (0.5, 2.0, 1e-6))
    gy2 = 1e-4 * y * y
    width = torch.from_numpy(2 * (a * y.max() + b * e.max() + c + 1e-4 * y.max() ** 2))
    wide = selection.window_pairs(int8_dots(a8, b8), k, width, int8=(sx, sb, sq))
    cap = selection.slot_count(nq, nb, k)
    if spread > 1:
        assert (wide[2] > 3 * cap).any() and (wide[2] <= cap).any()
    for excess in (0, 10**9):
        buf = int8_dots(a8, b8)
        r, c_, count = selection.window_pairs(buf, k, width, int8=(sx, sb, sq),
                                              pair=lambda: (a, b, c, gy2, y, e), excess=excess)
        got, before = set(zip(r.tolist(), c_.tolist())), set(zip(wide[0].tolist(), wide[1].tolist()))
        assert got <= before
        if excess:
            assert got == before
        else:
            assert len(got) < len(before)
            if spread > 1:
                assert (count > cap).any() and ((count <= cap) & (wide[2] > cap)).any()
            scores = (sq + (-2 * sx)[:, None] * (int8_dots(a8, b8).float() * sb) if centred
                      else -((int8_dots(a8, b8).float() * sb) * sx[:, None])).double().numpy()
            bound = a[:, None] * y + b[:, None] * e + c[:, None] + gy2
            kth = np.sort(scores + bound, axis=1)[:, k - 1]
            for i in range(nq):
                need = np.flatnonzero(scores[i] - bound[i] <= kth[i] - 1e-6 * abs(kth[i]) - 1e-9)
                assert {(i, j) for j in need} <= got


def test_lanes_take_a_row_whose_smallest_scores_share_a_lane_and_hand_back_one_too_wide():
    """`_window_lanes` directly: a row whose 40 smallest scores all lie in one lane (its bound far
    above the k-th, still a bound) gives one_block's window; a window wider than its buffer is
    handed back (-1) to `_kth_small`."""
    k, nb = 10, 2048
    rng = np.random.default_rng(5)
    row = rng.standard_normal(nb).astype(np.float32)
    row[::64] -= 10
    width = 0.05
    out = np.empty(64, np.int64)
    t, n = selection._window_lanes(row.copy(), k, width, out)
    r0, c0 = one_block(torch.from_numpy(row)[None], k, torch.tensor([width], dtype=torch.float64))
    assert n == len(c0) and sorted(out[:n].tolist()) == out[:n].tolist() == sorted(c0.tolist())
    assert (c0 % 64 == 0).all()
    t, n = selection._window_lanes(row * np.float32(1e-3), k, width, out)
    assert n == -1
    assert_same_pairs(torch.from_numpy(row * np.float32(1e-3))[None], k, torch.tensor([width], dtype=torch.float64))


@pytest.mark.parametrize("k", [1, 7, 8, 10, 31, 32])
def test_the_kth_by_lanes_is_the_kth(k):
    """`_kth` (`_narrow`'s): the k-th smallest with repeats, by lanes from `LANES_FROM_K` (rows
    with ties, one lane holding the smallest, more under the lanes' bound than their buffer, and
    rows too short for lanes), else by insertion."""
    rng = np.random.default_rng(k)
    rows = [rng.standard_normal(1000), rng.integers(0, 5, 1000), rng.standard_normal(70), np.zeros(3000)]
    one_lane = rng.standard_normal(1000)
    one_lane[::64] -= 10
    rows.append(one_lane)
    for row in rows:
        row = np.asarray(row, np.float32)
        if k <= len(row):
            assert selection._kth(row.copy(), k) == np.sort(row)[k - 1]
