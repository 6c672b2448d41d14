import pickle

import numpy as np
import pytest
import scipy.sparse as sp
from sklearn.base import clone
from sklearn.exceptions import NotFittedError as SkNotFittedError
from sklearn.neighbors import NearestNeighbors as SkNN

from lookalike import NearestNeighbors
from lookalike.errors import InvalidParameter
from lookalike.knn import PreparedBase, SearchStats, get_metric, reference_knn
from lookalike.knn.refine import pair_distances

rng = np.random.default_rng(0)
X = rng.normal(size=(80, 6)).astype(np.float32)
Q = rng.normal(size=(7, 6)).astype(np.float32)


def test_fit_returns_self_and_sets_attributes():
    nn = NearestNeighbors(3)
    assert nn.fit(X) is nn
    assert nn.n_samples_fit_ == 80 and nn.n_features_in_ == 6 and nn.backend_ == "lookalike"


def test_kneighbors_shapes_types_and_defaults():
    D, I = NearestNeighbors(3).fit(X).kneighbors(Q)
    assert D.shape == I.shape == (7, 3) and D.dtype == np.float32 and I.dtype == np.int64
    assert (np.diff(D, axis=1) >= 0).all()
    I5 = NearestNeighbors(3).fit(X).kneighbors(Q, n_neighbors=5, return_distance=False)
    assert I5.shape == (7, 5)
    np.testing.assert_array_equal(I5, reference_knn(Q, X, 5)[1])


def test_X_none_excludes_each_point_like_sklearn():
    D, I = NearestNeighbors(4).fit(X).kneighbors()
    D_sk, I_sk = SkNN(n_neighbors=4, algorithm="brute").fit(X).kneighbors()
    np.testing.assert_array_equal(I, I_sk)
    np.testing.assert_allclose(D, D_sk, rtol=1e-5)


def test_params_clone_pickle():
    nn = NearestNeighbors(2, metric="cosine", working_memory=64)
    assert nn.get_params()["metric"] == "cosine"
    nn.set_params(n_neighbors=4)
    assert nn.n_neighbors == 4
    twin = clone(nn)
    assert twin.get_params() == nn.get_params() and twin is not nn
    nn.fit(X)
    again = pickle.loads(pickle.dumps(nn))
    np.testing.assert_array_equal(again.kneighbors(Q)[1], nn.kneighbors(Q)[1])
    with pytest.raises(ValueError, match="Invalid parameter 'k'"):
        nn.set_params(k=3)
    assert repr(NearestNeighbors(2, metric="cosine")) == "NearestNeighbors(n_neighbors=2, metric='cosine')"


def test_kneighbors_graph_matches_sklearn():
    ours = NearestNeighbors(3).fit(X).kneighbors_graph(Q, mode="distance").toarray()
    theirs = SkNN(n_neighbors=3, algorithm="brute").fit(X).kneighbors_graph(Q, mode="distance").toarray()
    np.testing.assert_allclose(ours, theirs, rtol=1e-5)
    conn = NearestNeighbors(3).fit(X).kneighbors_graph(Q)
    assert conn.shape == (7, 80) and conn.sum() == 21


@pytest.mark.parametrize("metric", ["euclidean", "manhattan", "cosine", "chebyshev"])
def test_radius_neighbors_matches_sklearn(metric):
    radius = {"euclidean": 3.0, "manhattan": 6.0, "cosine": 0.5, "chebyshev": 1.5}[metric]
    D, I = NearestNeighbors(metric=metric).fit(X).radius_neighbors(Q, radius=radius, sort_results=True)
    D_sk, I_sk = SkNN(metric=metric, algorithm="brute").fit(X).radius_neighbors(Q, radius=radius, sort_results=True)
    for a, b, da, db in zip(I, I_sk, D, D_sk):
        assert set(a.tolist()) == set(b.tolist())
        np.testing.assert_allclose(np.sort(da), np.sort(db), rtol=1e-5, atol=1e-6)
    _, I_self = NearestNeighbors().fit(X).radius_neighbors(radius=2.5)
    assert all(i not in row for i, row in enumerate(I_self))


def test_not_fitted():
    with pytest.raises(RuntimeError, match="not fitted yet"):
        NearestNeighbors().kneighbors(Q)
    with pytest.raises(SkNotFittedError, match="not fitted yet"):  # scikit-learn's, too
        NearestNeighbors().radius_neighbors(Q, radius=1.0)
    assert not hasattr(NearestNeighbors(), "search_stats_")


def test_public_fitted_attributes():
    nn = NearestNeighbors(3, metric="l2", precision="int8").fit(X)
    assert nn.effective_metric_ == "euclidean" and nn.effective_metric_params_ == {}
    assert nn.backend_ == "lookalike" and nn.radius_backend_ == "lookalike"
    assert nn.screen_dtype_ == "int8" and nn.backend_config_.startswith("lookalike engine, int8 screen")
    assert isinstance(nn.prepared_base_, PreparedBase) and nn.prepared_base_.nb == 80
    assert nn.search_stats_ is None
    nn.kneighbors(Q)
    assert isinstance(nn.search_stats_, SearchStats) and nn.search_stats_.screen_dtype == "int8"
    nn.radius_neighbors(Q, radius=2.0)
    assert nn.search_stats_ is None  # the last search recorded no stages
    sk = NearestNeighbors(3, backend="sklearn").fit(X)
    assert sk.screen_dtype_ is None and sk.prepared_base_ is None and sk.radius_backend_ == "sklearn"
    sk.kneighbors(Q)
    assert sk.search_stats_ is None and "scikit-learn" in sk.backend_config_
    again = pickle.loads(pickle.dumps(nn))  # rebuilt on loading, not carried in the pickle
    assert again.prepared_base_ is not nn.prepared_base_ and again.screen_dtype_ == "int8"
    np.testing.assert_array_equal(again.kneighbors(Q)[1], nn.kneighbors(Q)[1])


def test_sparse_input_is_searched_densely():
    sparse_X = sp.random(60, 6, density=0.4, format="csr", random_state=1, dtype=np.float32)
    dense = NearestNeighbors(3).fit(sparse_X.toarray())
    nn = NearestNeighbors(3).fit(sparse_X)
    for X_sp in (sparse_X, sp.csc_array(sparse_X)):
        np.testing.assert_array_equal(nn.kneighbors(X_sp[:7])[1], dense.kneighbors(sparse_X[:7].toarray())[1])
    huge = sp.csr_matrix((np.ones(1), (np.zeros(1), np.zeros(1))), shape=(10**7, 10**6))
    with pytest.raises(InvalidParameter, match="sparse X of shape .* GiB dense"):
        NearestNeighbors().fit(huge)


def test_numbers_held_as_objects_are_numbers():
    D, I = NearestNeighbors(2).fit(X.astype(object)).kneighbors(Q.astype(object))
    np.testing.assert_array_equal(I, NearestNeighbors(2).fit(X.astype(np.float64)).kneighbors(Q)[1])
    bad = X.astype(object)
    bad[3, 2] = {"a": 1}
    with pytest.raises(TypeError, match="dtype object .* argument must be .* string.* number"):
        NearestNeighbors().fit(bad)


@pytest.mark.parametrize("precision", ["fp32", "bf16", "fp16", "int8", "int16"])
@pytest.mark.parametrize("metric", ["euclidean", "sqeuclidean", "cosine", "inner_product", "manhattan"])
def test_radius_neighbors_reuse_the_fitted_base_at_its_precision(monkeypatch, metric, precision):
    rng = np.random.default_rng(3)
    base = np.maximum(rng.normal(size=(400, 20)), 0).astype(np.float32)
    queries = np.maximum(rng.normal(size=(9, 20)), 0).astype(np.float32)
    nn = NearestNeighbors(metric=metric, precision=precision).fit(base)
    built = []
    original = PreparedBase.__init__
    monkeypatch.setattr(PreparedBase, "__init__", lambda self, *a, **kw: built.append(1) or original(self, *a, **kw))
    full = nn.kneighbors(queries, n_neighbors=400)
    radius = float(np.median(full[0][:, 30]))  # about 30 neighbours a query
    D, I = nn.radius_neighbors(queries, radius=radius, sort_results=True)
    assert not built  # no base prepared again
    m = get_metric(metric)
    exact = reference_knn(queries, base, 400, metric)
    for q in range(len(queries)):
        inside = m.sort_key(exact[0][q]) <= m.sort_key(radius)
        assert I[q].tolist() == exact[1][q][inside].tolist()  # same points, same order
        np.testing.assert_allclose(D[q], exact[0][q][inside], rtol=1e-12)


@pytest.mark.parametrize("precision", ["fp32", "bf16", "fp16", "int8", "int16"])
@pytest.mark.parametrize("metric", ["euclidean", "sqeuclidean", "inner_product"])
def test_a_point_exactly_at_the_radius_is_found_from_far_away(metric, precision):
    """Queries far from a tight base: the score at the radius, r^2 - |x - m|^2, carries the
    rounding of |x - m|^2, which the screen's bound (scaled by the base's norms) does not
    cover. Every point at exactly the radius (its own float64 distance) is inside; so is
    every point for a query beyond the base's scale (screened in float64)."""
    rng = np.random.default_rng(0)
    base = (rng.standard_normal((50, 8)) * 0.01).astype(np.float32)
    for spread in (100.0, 1e15):
        queries = (rng.standard_normal((10, 8)) * spread).astype(np.float32)
        nn = NearestNeighbors(metric=metric, precision=precision).fit(base)
        for r in range(len(queries)):
            dist = pair_distances(get_metric(metric), queries, base, np.full(50, r), np.arange(50))
            for j in range(0, 50, 7):
                _, ind = nn.radius_neighbors(queries[r : r + 1], radius=float(dist[j]))
                assert j in ind[0].tolist(), (spread, r, j)


def test_radius_neighbors_say_which_backend_ran_them():
    faiss = pytest.importorskip("faiss")  # noqa: F841
    nn = NearestNeighbors(metric="cosine", backend="faiss").fit(X)
    assert nn.radius_backend_ == "lookalike"  # FAISS's range search is strict and approximate: the engine runs it
    D, I = nn.radius_neighbors(Q, radius=0.5, sort_results=True)
    D_ref, I_ref = NearestNeighbors(metric="cosine", backend="lookalike").fit(X).radius_neighbors(
        Q, radius=0.5, sort_results=True)
    assert all(a.tolist() == b.tolist() for a, b in zip(I, I_ref))
    sk = NearestNeighbors(metric="cosine", backend="sklearn").fit(X)
    D_sk, I_sk = sk.radius_neighbors(Q, radius=0.5, sort_results=True)
    assert all(set(a.tolist()) == set(b.tolist()) for a, b in zip(I_sk, I_ref))


def test_user_mistakes_are_invalid_parameters():
    nn = NearestNeighbors(3).fit(X)
    for call in (lambda: nn.kneighbors(Q[:, :5]), lambda: nn.kneighbors(Q, n_neighbors=0),
                 lambda: nn.kneighbors_graph(Q, mode="weights"), lambda: nn.radius_neighbors(Q, radius=None),
                 lambda: NearestNeighbors(metric="hamming").fit(X), lambda: NearestNeighbors().fit(np.zeros((0, 3))),
                 lambda: nn.set_params(k=3), lambda: NearestNeighbors(backend="annoy").fit(X)):
        with pytest.raises(InvalidParameter):
            call()


@pytest.mark.parametrize("bad, message", [
    (np.where(np.arange(24).reshape(4, 6) == 13, np.nan, 1.0), r"contains NaN \(first at row 2\)"),
    (np.where(np.arange(24).reshape(4, 6) == 0, np.inf, 1.0), r"contains infinity \(first at row 0\)"),
    (np.zeros((0, 6)), "0 sample"),
    (np.zeros(6), "Expected 2D array, got 1D|Expected 2D array for X, got 1D"),
    (np.zeros((3, 6), dtype=complex), "Complex data not supported"),
    (np.array([[object()] * 6]), "dtype object"),
])
def test_bad_arrays(bad, message):
    with pytest.raises(ValueError, match=message):
        NearestNeighbors(1).fit(bad)


def test_a_result_larger_than_memory_is_refused_before_any_work(monkeypatch):
    from lookalike.knn import validation

    nn = NearestNeighbors(3).fit(X)
    monkeypatch.setattr(validation, "free_memory", lambda: 1000)
    with pytest.raises(InvalidParameter, match=r"7 queries x 3 neighbours would take .* memory free"):
        nn.kneighbors(Q)


@pytest.mark.parametrize("bad, message", [
    (np.array([[10**400, 1]], dtype=object), "cannot be converted to numbers: int too large"),
    ([[10**400, 1]], "cannot be converted to numbers"),
    (np.full((2, 2), 1e200), r"X \(first at row 0\) holds values up to 1e\+200 .*float32's range"),
    (np.ma.array([[1.0, 2.0]], mask=[[0, 1]]), "masked array"),
    (np.full((2, 2), np.longdouble(10) ** 400), "values up to 1e\\+400"),
])
def test_arrays_beyond_what_can_be_searched_are_refused_in_one_line(bad, message):
    with pytest.raises(InvalidParameter, match=message):
        NearestNeighbors(1).fit(bad)


def test_arrays_are_converted_exactly():
    from lookalike.knn.validation import check_array

    assert check_array(np.array([[2**24, -(2**24)]], dtype=np.int64)).dtype == np.float32
    big = check_array(np.array([[2**62 + 1, 0]], dtype=np.int64))  # float32 would round it to 2**62
    assert big.dtype == np.float64 and big[0, 0] == float(2**62 + 1)
    assert check_array(np.ones((2, 2), dtype=">f4")).dtype == np.float32  # native byte order for torch
    assert check_array(np.ones((2, 2), dtype=np.longdouble)).dtype == np.float64
    assert type(check_array(np.matrix([[1.0, 2.0]]))) is np.ndarray


def test_dimension_mismatch_and_k():
    nn = NearestNeighbors(3).fit(X)
    with pytest.raises(ValueError, match="X has 5 features, but NearestNeighbors is expecting 6"):
        nn.kneighbors(Q[:, :5])
    with pytest.raises(ValueError, match="n_neighbors <= n_samples_fit, but n_neighbors = 81"):
        nn.kneighbors(Q, n_neighbors=81)
    with pytest.raises(ValueError, match="n_samples_fit - 1"):
        nn.kneighbors(n_neighbors=80)
    with pytest.raises(ValueError, match="Expected n_neighbors > 0. Got 0"):
        nn.kneighbors(Q, n_neighbors=0)


@pytest.mark.parametrize("params, message", [
    ({"metric": "hamming"}, "'metric' parameter of NearestNeighbors must be one of"),
    ({"backend": "annoy"}, "'backend' parameter of NearestNeighbors must be one of"),
    ({"n_neighbors": 0}, "'n_neighbors' parameter of NearestNeighbors must be an int >= 1. Got 0"),
    ({"working_memory": -1}, "'working_memory' parameter"),
    ({"working_memory": float("inf")}, "'working_memory' parameter .* finite number of MiB >= 1"),
    ({"working_memory": float("nan")}, "'working_memory' parameter"),
    ({"working_memory": 1e-9}, "'working_memory' parameter"),  # one-row blocks: a loop over every pair
])
def test_bad_parameters_are_named(params, message):
    with pytest.raises(ValueError, match=message):
        NearestNeighbors(**params).fit(X)


def test_explicit_precisions_are_taken_as_given_and_cdist_metrics_screen_in_float64():
    import torch

    from lookalike.knn.metrics import get_metric
    from lookalike.knn.precision import screen_choice, screen_dtype

    cpu, l2 = torch.device("cpu"), get_metric("euclidean")
    for name, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16), ("fp16", torch.float16),
                        ("int8", torch.int8)):
        assert screen_dtype(name, cpu, l2, 2048, 90_000) == dtype
    dtype, why = screen_choice("auto", cpu, get_metric("manhattan"), 2048, 90_000)
    assert dtype == torch.float32 and "cdist" in why
    assert "no faster than fp32" in screen_choice("fp16", cpu, l2, 64, 10)[1]  # a GPU's screen, said so on the CPU
    assert screen_choice("fp16", torch.device("cuda"), l2, 64, 10)[1] == "fp16 screen as asked"
    with pytest.raises(InvalidParameter, match="unknown precision 'fp8'"):
        screen_dtype("fp8", cpu, l2, 64, 10)


def test_auto_int8_estimator_matches_sklearn(monkeypatch):
    """When the calibration says int8 is fastest, `auto` screens in int8, and says why."""
    from sklearn.neighbors import NearestNeighbors as SkNN

    from lookalike.knn import calibrate

    rng = np.random.default_rng(11)
    X = np.maximum(rng.normal(size=(3000, 600)), 0).astype(np.float32)  # ReLU-like features
    Q = np.maximum(rng.normal(size=(50, 600)), 0).astype(np.float32)
    fake = calibrate.Calibration("cpu/euclidean/d1024", 4000, {
        name: {"fixed_s": fixed, "per_query_s": 0.0, "per_row_s": 0.0, "per_pair_s": per_pair}
        for name, fixed, per_pair in (("fp32", 0.0, 3e-8), ("bf16", 0.001, 2e-8), ("int8", 0.001, 1e-8))})
    monkeypatch.setattr(calibrate, "calibration", lambda *a, **kw: fake)
    nn = NearestNeighbors(n_neighbors=5, device="cpu").fit(X)
    assert "int8 screen + " in nn.backend_config_ and nn.screen_dtype_ == "int8"
    assert nn.screen_choice_.startswith("int8 screen by calibration (cpu/euclidean/d1024")
    D, I = nn.kneighbors(Q)
    D_sk, I_sk = SkNN(n_neighbors=5, algorithm="brute").fit(X).kneighbors(Q)
    np.testing.assert_array_equal(I, I_sk)
    np.testing.assert_allclose(D, D_sk, rtol=1e-5)
    stats = nn.search_stats_
    assert stats.screen_dtype == "int8" and stats.reranked <= stats.candidates
