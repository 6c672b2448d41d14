"""Stages 1-2: rows prepared and screened, and the error bound that makes the search exact."""

import numpy as np
import pytest
import torch

from lookalike.knn import METRICS, PreparedBase, get_metric
from lookalike.knn import screen as screen_mod
from lookalike.knn.screen import int8_dots, prepare_rows

GEMM = sorted(m for m in METRICS if METRICS[m].gemm)
CDIST = sorted(m for m in METRICS if not METRICS[m].gemm)
DTYPES = [torch.float32, torch.bfloat16, torch.float16, torch.int8, torch.int16]


def data(kind: str, seed: int = 0, nb: int = 300, nq: int = 20, d: int = 48):
    rng = np.random.default_rng(seed)
    xb, xq = rng.normal(size=(nb, d)), rng.normal(size=(nq, d))
    if kind == "relu":  # feature-like: non-negative, clustered
        xb, xq = np.maximum(xb + 1, 0), np.maximum(xq + 1, 0)
    elif kind == "offset":  # far from the origin: centring matters
        xb, xq = xb + 300, xq + 300
    elif kind == "scales":  # rows of very different norms, a zero row
        xb *= rng.uniform(1e-3, 1e3, (nb, 1))
        xb[0] = 0
    elif kind == "decades":  # elements over twelve decades: fp16's subnormals (below 2^-14) and zeros
        xb *= 10.0 ** rng.uniform(-12, 0, xb.shape)
        xq *= 10.0 ** rng.uniform(-12, 0, xq.shape)
        xq[: nq // 2] = rng.normal(size=(nq // 2, d)) * 10.0 ** rng.uniform(-10, -5, (nq // 2, 1))  # whole rows
    elif kind == "halfsteps":  # just under half an int8 step above a step: an int16 screen's second
        # levels all +127, whose product (left out of its GEMMs) its bound must count; the
        # base's rows and their negatives, so that its mean (the centre) is exactly zero
        half = rng.integers(-126, 126, (nb // 2, d)) + 0.496
        xq = rng.integers(-126, 126, (nq, d)) + 0.496
        xb = np.concatenate([half, -half])
        xb[:, 0], xq[:, 0] = 127.0, 127.0  # each row's step 1/127 exactly of its largest
        xb, xq = xb / 127, xq / 127
    return xq.astype(np.float32), xb.astype(np.float32)


def exact_scores(metric, xq, xb, mean, scale=1.0):
    """The screen score of every pair, in float64 from the raw rows (times the screen's
    power-of-two `scale`, exact)."""
    q, b = xq.astype(np.float64) * scale, xb.astype(np.float64) * scale
    m = get_metric(metric)
    if m.centred:
        c = mean.double().numpy()
        return ((b - c) ** 2).sum(1)[None, :] - 2 * (q - c) @ (b - c).T
    if m.normalised:
        qn, bn = np.linalg.norm(q, axis=1), np.linalg.norm(b, axis=1)
        return -(q / np.where(qn > 0, qn, 1)[:, None]) @ (b / np.where(bn > 0, bn, 1)[:, None]).T
    return -q @ b.T


@pytest.mark.parametrize("kind", ["normal", "relu", "offset", "scales", "decades", "halfsteps"])
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("metric", GEMM)
def test_bound_really_bounds_the_screen_error(metric, dtype, kind):
    xq, xb = data(kind, seed=len(kind))
    base = PreparedBase(xb, metric, screen_dtype=dtype)
    screen = base.screen
    q = prepare_rows(screen, xq, base.device)
    s = screen.scores(q, base.rows).double().numpy()
    bound = screen.bound(q, base.extent).numpy()
    err = np.abs(s - exact_scores(metric, xq, xb, screen.mean, screen.scale))
    assert (err <= bound[:, None]).all(), (err / bound[:, None]).max()
    assert (err.max(1) > bound / 1e4).any() or dtype == torch.float32  # a bound, yet not a vacuous one


@pytest.mark.parametrize("metric", CDIST)
def test_cdist_screens_are_float64_within_their_bound(metric):
    from scipy.spatial.distance import cdist

    xq, xb = data("scales")
    base = PreparedBase(xb, metric, screen_dtype=torch.int8)  # asked for int8: a cdist screen is float64
    assert base.screen.dtype == torch.float64
    q = prepare_rows(base.screen, xq, base.device)
    s = base.screen.scores(q, base.rows).numpy()
    exact = cdist(xq.astype(np.float64), xb.astype(np.float64), {"manhattan": "cityblock"}.get(metric, metric))
    assert (np.abs(s - exact) <= base.screen.bound(q, base.extent).numpy()[:, None]).all()


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("metric", sorted(METRICS))
def test_limit_is_the_score_at_the_radius(metric, dtype):
    """A base row at distance r from a query scores limit(r), within the screen's bound."""
    xq, xb = data("relu", d=16)
    base = PreparedBase(xb, metric, screen_dtype=dtype)
    q = prepare_rows(base.screen, xq, base.device)
    s = base.screen.scores(q, base.rows).double().numpy()
    bound = base.screen.bound(q, base.extent).numpy()
    from lookalike.knn.refine import pair_distances

    for j in (0, 7, 123):
        rows, cols = np.arange(len(xq)), np.full(len(xq), j)
        dist = pair_distances(base.metric, xq, xb, rows, cols)
        for i, r in enumerate(dist):
            limit = base.screen.limit(float(r), q[i : i + 1]).numpy()[0]
            assert abs(limit - s[i, j]) <= 2 * bound[i] + 1e-9 * max(1.0, abs(limit))


@pytest.mark.parametrize("dtype", [torch.int8, torch.int16], ids=str)
def test_prepare_in_pieces_equals_prepare_at_once(monkeypatch, dtype):
    xq, xb = data("offset", nb=500)
    whole = PreparedBase(xb, "euclidean", screen_dtype=dtype).rows
    monkeypatch.setattr(screen_mod, "PREPARE_BYTES", 4 * 48 * 7)  # seven rows at a time
    pieces = PreparedBase(xb, "euclidean", screen_dtype=dtype).rows
    for name in ("data", "l2", "sq", "qerr", "scale", "rerr"):
        a, b = getattr(whole, name), getattr(pieces, name)
        assert (a is None) == (dtype == torch.int8 and name == "rerr") and (a is None or torch.equal(a, b)), name


def test_a_gpu_prepares_larger_parts_within_the_working_memory():
    """Each part costs kernel launches on a GPU whatever its size; the CPU's stay cache-sized."""
    cpu = screen_mod.PREPARE_BYTES // (4 * 2048)
    assert screen_mod.part_rows(2048, "cpu", 4096) == cpu
    assert screen_mod.part_rows(2048, "cuda", 4096) == screen_mod.GPU_PREPARE_BYTES // (4 * 2048)
    assert screen_mod.part_rows(2048, "cuda") == 2**30 // 8 // (4 * 2048)  # an eighth of the default 1 GiB
    assert screen_mod.part_rows(2048, "cuda", 1.0) == cpu  # never smaller than the CPU's


def test_streamed_base_prepares_the_same_rows(tmp_path):
    xq, xb = data("relu", nb=700)
    np.save(tmp_path / "xb.npy", xb)
    mm = np.load(tmp_path / "xb.npy", mmap_mode="r")
    streamed = PreparedBase(mm, "cosine", screen_dtype=torch.bfloat16, working_memory=0.05)
    assert streamed.rows is None
    kept = PreparedBase(xb, "cosine", screen_dtype=torch.bfloat16, working_memory=0.05)
    _, bb = kept.block_sizes(len(xq))
    for (lo, hi, a), (_, _, b) in zip(streamed.blocks(bb), kept.blocks(bb)):
        assert torch.equal(a.data, b.data) and torch.equal(a.l2, b.l2)
    assert streamed.extent.l2 == pytest.approx(kept.extent.l2)


def test_int8_dots_are_exact_for_every_shape():
    g = torch.Generator().manual_seed(1)
    for m, d, n in [(1, 1, 2), (3, 1, 9), (1, 2, 1), (5, 7, 3), (64, 300, 130), (2, 2048, 17)]:
        a = torch.randint(-127, 128, (m, d), dtype=torch.int8, generator=g)
        b = torch.randint(-127, 128, (n, d), dtype=torch.int8, generator=g)
        for _ in range(3):
            assert torch.equal(int8_dots(a, b), a.int() @ b.int().T), (m, d, n)
        # padded as on a GPU (cuBLASLt: m > 16, d and n multiples of 8): the same sums, into `out` too
        assert torch.equal(int8_dots(a, b, pad=True), a.int() @ b.int().T), (m, d, n)
        out = torch.full((m, n), -1, dtype=torch.int32)
        assert int8_dots(a, b, out=out, pad=True) is out and torch.equal(out, a.int() @ b.int().T)
        if torch.cuda.is_available():
            assert torch.equal(int8_dots(a.cuda(), b.cuda()).cpu(), a.int() @ b.int().T), (m, d, n)
        # column views of wider rows, as an int16 screen's GEMMs read them
        wa, wb = torch.cat([a, a, a], 1), torch.cat([b, b, b], 1)
        for pad in (False, True):
            assert torch.equal(int8_dots(wa[:, d:], wb[:, :2 * d], pad=pad), 2 * (a.int() @ b.int().T)), (m, d, n)


@pytest.mark.parametrize("metric", GEMM)
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.int8, torch.int16])
def test_a_recast_base_holds_the_rows_a_fresh_one_would(metric, dtype):
    """Another screen's rows cast from the fp32 rows (what `auto` does per search) are those
    a base prepared at that precision holds; a head shares the rows of the first n."""
    _, xb = data("scales", nb=5000, d=40)  # more rows than one part of PREPARE_BYTES
    fp32 = PreparedBase(xb, metric)
    fresh, cast = PreparedBase(xb, metric, screen_dtype=dtype), fp32.recast(dtype)
    assert cast.screen.dtype == dtype and cast.xb is fp32.xb
    for name in ("data", "l2", "sq", "qerr", "scale", "rerr"):
        a, b = getattr(fresh.rows, name), getattr(cast.rows, name)
        assert (a is None) == (b is None)
        if a is not None and a.dtype == torch.float64 and dtype in (torch.int8, torch.int16):
            # a fresh int8 base is prepared by the compiled pass, whose float64 norms sum in
            # another order than torch's (`quantise`): equal up to their last bits
            torch.testing.assert_close(a, b, rtol=1e-14, atol=0)
        elif a is not None:
            assert torch.equal(a, b), name
    assert cast.extent.l2 == pytest.approx(fresh.extent.l2, rel=1e-14)
    assert cast.extent.qerr == pytest.approx(fresh.extent.qerr, rel=1e-14)
    head = cast.head(1000)
    assert head.nb == 1000 and torch.equal(head.rows.data, cast.rows.data[:1000])
    assert head.extent.l2 == float(cast.rows.l2[:1000].max())
    with pytest.raises(ValueError):
        cast.recast(torch.bfloat16)  # only an fp32 base is recast


def test_the_power_of_two_of_one_value_is_the_tensor_ones():
    """`scaling.pow2_of` (Python floats, for one value) gives `pow2_scale`'s power of two:
    zero, subnormals, the limits' clamps."""
    from lookalike.knn.scaling import pow2_of, pow2_scale

    values = [0.0, 5e-324, 1e-320, 1e-300, 2.0**-1074, 0.3, 0.5, 1.0, 1.5, 7.0, 3e38, 2.0**1000, 1e308]
    for limit in (1022, 500, 125):
        for v in values:
            assert pow2_of(v, limit) == float(pow2_scale(torch.tensor(v, dtype=torch.float64), limit)), (v, limit)


@pytest.mark.parametrize("metric", GEMM)
@pytest.mark.parametrize("kind", ["normal", "relu", "offset", "scales"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("screen", [torch.int8, torch.int16], ids=str)
def test_the_compiled_int8_rows_are_the_torch_ones(metric, kind, dtype, screen, monkeypatch):
    """`quantise.int8_rows` (one compiled pass a row) makes the rows of `Screen.prepare`'s
    torch operations: the same int8 values, steps and squared norms, float64 norms equal up
    to the order of their sums; zero rows, one dimension, and queries far smaller than the
    base included. Cosine rows, whose norm is summed in float64 there and in float32 by
    torch, may differ by one step in a few values; every row's figures stay within the
    bound (`test_bound_really_bounds_the_screen_error` runs on these rows)."""
    from lookalike.knn import quantise

    cosine = METRICS[metric].normalised
    for d in (1, 48):
        xq, xb = data(kind, seed=3, d=d)
        xq = np.concatenate([xq, np.zeros((1, d), np.float32), xq[:2] * np.float32(1e-30)]).astype(dtype)
        base = PreparedBase(xb, metric, screen_dtype=screen)
        x = torch.from_numpy(xq)
        assert quantise.usable(x)
        compiled = base.screen.prepare(x)
        monkeypatch.setenv("LOOKALIKE_JIT", "0")
        assert not quantise.usable(x)
        plain = base.screen.prepare(x)
        monkeypatch.delenv("LOOKALIKE_JIT")
        if cosine:
            assert (compiled.data.int() - plain.data.int()).abs().max() <= 1
            assert (compiled.data != plain.data).float().mean() < 0.01
            torch.testing.assert_close(compiled.scale, plain.scale, rtol=1e-6, atol=0)
            torch.testing.assert_close(compiled.l2, plain.l2, rtol=1e-6, atol=0)
            torch.testing.assert_close(compiled.qerr, plain.qerr, rtol=0.05, atol=1e-9)
            if screen == torch.int16:
                torch.testing.assert_close(compiled.rerr, plain.rerr, rtol=0.05, atol=1e-9)
            continue
        for name in ("data", "scale", "sq"):
            a, b = getattr(compiled, name), getattr(plain, name)
            assert (a is None) == (b is None) and (a is None or torch.equal(a, b)), name
        for name in ("l2", "qerr", "rerr"):
            a, b = getattr(compiled, name), getattr(plain, name)
            assert (a is None) == (b is None) == (name == "rerr" and screen == torch.int8), name
            if a is not None:
                torch.testing.assert_close(a, b, rtol=1e-14, atol=0)


def test_half_dots_sum_exact_products_in_float32():
    """An fp16 screen's GEMM: each product of two fp16 values exact, summed in float32 and
    written as float32 (no rounding to fp16 on the way out), within fp32's accumulation bound."""
    rng = np.random.default_rng(3)
    for dev in ["cpu"] + (["cuda"] if torch.cuda.is_available() else []):  # a GPU's tensor cores where there is one
        a = torch.from_numpy(rng.normal(size=(7, 300)).astype(np.float16)).to(dev)
        b = torch.from_numpy(rng.normal(size=(11, 300)).astype(np.float16)).to(dev)
        got = screen_mod.half_dots(a, b)
        assert got.dtype == torch.float32 and got.shape == (7, 11)
        exact = a.double() @ b.double().T
        u32 = screen_mod.UNIT_ROUNDOFF[torch.float32]
        bound = 2 * 300 * u32 * (a.double().abs() @ b.double().abs().T)  # as `Screen`'s gamma for fp16
        assert (torch.abs(got.double() - exact) <= bound).all()
        out = torch.empty(7, 11, device=dev)
        assert screen_mod.half_dots(a, b, out=out).data_ptr() == out.data_ptr() and torch.equal(out, got)
        if dev == "cuda":  # the tensor cores' form itself, not the widened one
            assert torch.equal(torch.mm(a, b.T, out_dtype=torch.float32), got)


@pytest.mark.parametrize("metric", GEMM)
def test_an_fp32_bound_widens_where_torch_may_round_gemm_inputs(metric):
    """`torch.set_float32_matmul_precision('high')` lets CUDA run fp32 GEMMs in TF32 and
    'medium' in bf16: the fp32 screen's bound (and the refinement's) counts that rounding."""
    xq, xb = data("relu")
    bounds = {}
    try:
        for p in ("highest", "high", "medium"):
            torch.set_float32_matmul_precision(p)
            base = PreparedBase(xb, metric)
            bounds[p] = float(base.screen.bound(prepare_rows(base.screen, xq, base.device), base.extent).max())
            # the bound holds whatever torch did
            q = prepare_rows(base.screen, xq, base.device)
            err = np.abs(base.screen.scores(q, base.rows).double().numpy()
                         - exact_scores(metric, xq, xb, base.screen.mean, base.screen.scale))
            assert (err <= base.screen.bound(q, base.extent).numpy()[:, None]).all()
    finally:
        torch.set_float32_matmul_precision("highest")
    assert bounds["highest"] < bounds["high"] < bounds["medium"]
    assert screen_mod.fp32_gemm_roundoff() == 0.0


def test_integer_screens_refuse_dimensions_their_int32_sums_cannot_hold():
    """int8: d products of at most 127^2 in an int32 sum; int16: twice as many terms."""
    from lookalike.errors import SearchError
    from lookalike.knn.screen import Screen, int_sum_limit

    m = get_metric("euclidean")
    for dtype, most in ((torch.int8, 133_144), (torch.int16, 66_572)):
        assert int_sum_limit(dtype) == most and most * 127**2 * (2 if dtype == torch.int16 else 1) < 2**31
        Screen(m, most, dtype, None)
        with pytest.raises(SearchError, match=f"needs d <= {most} \\(int32 sums\\); d is {most + 1}"):
            Screen(m, most + 1, dtype, None)
    assert int_sum_limit(torch.float32) is None and int_sum_limit(torch.bfloat16) is None
