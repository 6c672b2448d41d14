"""Every backend against the same float64 reference, for every metric it serves."""

import numpy as np
import pytest

from lookalike import NearestNeighbors
from lookalike.knn import BACKENDS, METRICS, available, compare, get_metric, reference_knn
from lookalike.errors import InvalidParameter
from lookalike.knn.backends import select

rng = np.random.default_rng(0)
X = rng.normal(size=(500, 24)).astype(np.float32)
Q = rng.normal(size=(40, 24)).astype(np.float32)
CASES = [(b, m) for b in BACKENDS for m in sorted(METRICS)]


@pytest.mark.parametrize("backend, metric", CASES)
def test_backend_agrees_with_reference(backend, metric):
    b = BACKENDS[backend]()
    if not b.installed():
        pytest.skip(f"{backend} is not installed")
    if backend not in available():
        pytest.skip(f"{backend} needs a CUDA device")
    if metric not in b.metrics:
        with pytest.raises(ValueError, match=f"cannot serve metric '{metric}'"):
            NearestNeighbors(3, metric=metric, backend=backend).fit(X)
        return
    nn = NearestNeighbors(5, metric=metric, backend=backend).fit(X)
    D, I = nn.kneighbors(Q)
    D_ref, I_ref = reference_knn(Q, X, 5, metric)
    result = compare(D_ref, I_ref, D, I)
    assert result["agree"], result
    D_self, I_self = nn.kneighbors()
    assert not (I_self == np.arange(len(X))[:, None]).any()
    D_ref_self, I_ref_self = reference_knn(X, X, 6, metric)
    expected = np.array([[i for i in row if i != r][:5] for r, row in enumerate(I_ref_self)])
    assert (I_self == expected).mean() > 0.99


def test_auto_picks_the_exact_engine():
    assert NearestNeighbors().fit(X).backend_ == "lookalike"
    assert select("auto", get_metric("cosine"), "cpu").name == "lookalike"


def test_gpu_only_backend_on_cpu_is_a_clear_error():
    b = BACKENDS["cuml"]()
    if b.installed():
        pytest.skip("cuml is installed")
    with pytest.raises(ValueError, match="backend 'cuml' is not installed"):
        NearestNeighbors(backend="cuml", device="cpu").fit(X)


def test_compare_counts_wrong_neighbours_that_distances_miss():
    D_ref = np.array([[1.0, 2.0, 3.0]])
    I_ref = np.array([[0, 1, 2]])
    wrong = compare(D_ref, I_ref, np.array([[1.0, 2.0, 3.05]]), np.array([[0, 1, 7]]))
    assert wrong["max_abs_dist_diff"] < 0.1 and wrong["frac_neighbor_sets_differ"] == 1.0
    assert not wrong["agree"]
    tie = compare(D_ref, I_ref, np.array([[1.0, 2.0, 3.0]]), np.array([[0, 1, 9]]))
    assert tie["frac_neighbor_sets_differ"] == 1.0 and tie["frac_neighbor_sets_differ_beyond_ties"] == 0.0


@pytest.mark.parametrize("metric", ["euclidean", "sqeuclidean", "cosine", "inner_product"])
def test_gemm_reference_equals_dense_reference(metric):
    D1, I1 = reference_knn(Q, X, 5, metric)
    D2, I2 = reference_knn(Q, X, 5, metric, method="gemm")
    np.testing.assert_array_equal(I1, I2)
    np.testing.assert_allclose(D1, D2, rtol=1e-12, atol=1e-12)


def test_the_metric_table_names_what_each_library_calls_the_metric():
    from sklearn.neighbors import VALID_METRICS

    for m in METRICS.values():
        assert m.sort_key(2.0) == (-2.0 if m.largest_first else 2.0)
        assert m.sklearn is None or m.sklearn in VALID_METRICS["brute"]
        assert (m.p is None) == (m.faiss == "INNER_PRODUCT")
    faiss = pytest.importorskip("faiss")
    assert all(hasattr(faiss, f"METRIC_{m.faiss}") for m in METRICS.values())


def test_backends_are_built_with_their_options():
    b = select("lookalike", "cosine", "cpu", working_memory=8, precision="int8")
    assert b.precision == "int8" and b.working_memory == 8 and b.screen_dtype_ is None  # not fitted yet
    b.fit(X)
    assert str(b.screen_dtype_) == "torch.int8" and b.prepared_base_.working_memory == 8
    assert b.config == "lookalike engine, int8 screen + fp32 refine + float64 rerank"
    with pytest.raises(InvalidParameter, match="unknown backend 'annoy'"):
        select("annoy", "cosine", "cpu")


@pytest.mark.parametrize("backend", [b for b in ("sklearn", "faiss", "torch") if b in available()])
@pytest.mark.parametrize("scale, dtype", [(1e20, np.float32), (1e30, np.float64), (1e-25, np.float32),
                                          (1e-40, np.float32)])
def test_float32_libraries_scale_extreme_values_or_refuse_them(backend, scale, dtype):
    """Libraries computing in float32 overflowed (inf distances, FAISS's index -1) or
    underflowed (every distance 0, neighbours in index order) at these magnitudes. Rows are
    now scaled by a power of two first; what float32 still cannot hold is refused."""
    r = np.random.default_rng(1)
    xb = (r.standard_normal((60, 4)) * scale).astype(dtype)
    for metric in BACKENDS[backend].metrics:
        nn = NearestNeighbors(3, metric=metric, backend=backend).fit(xb)
        try:
            D, I = nn.kneighbors(xb[:8])
        except InvalidParameter as exc:
            assert "float32" in str(exc)
            continue
        D_ref, I_ref = reference_knn(xb[:8], xb, 3, metric)
        assert np.isfinite(D).all() and ((I >= 0) & (I < 60)).all()
        assert (I == I_ref).mean() > 0.9, (metric, I, I_ref)
