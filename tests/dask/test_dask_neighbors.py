"""lookalike.dask.NearestNeighbors against the single-machine estimator: the same sets, the
same distances, the same order of ties, for every metric, on a real 2-worker cluster."""

from __future__ import annotations

import dask
import dask.array as da
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lookalike import NearestNeighbors as Local
from lookalike.dask import NearestNeighbors, merge_results
from lookalike.dask.cluster import connect
from lookalike.errors import ClusterError, InvalidParameter
from lookalike.knn import METRICS

pytestmark = pytest.mark.slow


def _both(nn, X=None, k=None):
    return dask.compute(*nn.kneighbors(X, k))


@st.composite
def problems(draw):
    nb = draw(st.integers(2, 30))
    d = draw(st.integers(1, 4))
    values = st.integers(-2, 2)  # few distinct values: duplicate rows and ties everywhere
    X = np.array(draw(st.lists(st.lists(values, min_size=d, max_size=d), min_size=nb, max_size=nb)), np.float32)
    itself = draw(st.booleans())
    nq = draw(st.integers(1, 7))
    Q = None if itself else np.array(draw(st.lists(st.lists(values, min_size=d, max_size=d), min_size=nq,
                                                   max_size=nq)), np.float32)
    k = draw(st.integers(1, nb - 1 if itself else nb))
    shards = draw(st.integers(1, 5))
    return X, Q, k, -(-nb // shards), draw(st.sampled_from(sorted(METRICS))), draw(st.integers(1, 4))


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(problems())
def test_exact_like_the_single_machine_estimator(client, problem):
    X, Q, k, shard_rows, metric, batch = problem
    nn = NearestNeighbors(k, metric=metric, client=client, shard_rows=shard_rows, batch_size=batch).fit(X)
    D, I = _both(nn, Q)
    Dr, Ir = Local(n_neighbors=k, metric=metric).fit(X).kneighbors(Q)
    np.testing.assert_array_equal(I, Ir)
    np.testing.assert_array_equal(D, Dr)
    assert D.dtype == np.float32 and I.dtype == np.int64


@pytest.mark.parametrize("metric, D_expected, I_expected", [
    ("manhattan", [0, 0, 1, 1], [1, 2, 0, 3]),
    ("chebyshev", [0, 0, 1, 1], [1, 2, 0, 3]),
    ("inner_product", [2, 1, 1, 0], [3, 1, 2, 0]),  # largest first
])
def test_ties_across_shard_borders_go_to_the_lower_index(client, metric, D_expected, I_expected):
    X = np.array([[0], [1], [1], [2]], np.float32)  # rows 1 and 2 are equal, each in its own shard
    nn = NearestNeighbors(4, metric=metric, client=client, shard_rows=1).fit(X)
    D, I = _both(nn, np.array([[1]], np.float32))
    assert I.tolist() == [I_expected] and D.tolist() == [D_expected]


def test_merge_keeps_the_float64_order_below_float32_precision():
    # two distances that round to the same float32: the float64 value decides, then the index
    D, I = merge_results([(np.array([[1.0 + 2**-40]]), np.array([[0]])), (np.array([[1.0]]), np.array([[5]]))],
                         2, "euclidean")
    assert I.tolist() == [[5, 0]] and D.tolist() == [[1.0, 1.0]]


def test_dask_array_in_dask_arrays_out_k_up_to_the_total(client):
    rng = np.random.default_rng(0)
    X = rng.standard_normal((50, 8)).astype(np.float32)
    Q = rng.standard_normal((9, 8)).astype(np.float32)
    nn = NearestNeighbors(metric="cosine", client=client).fit(da.from_array(X, chunks=(7, 4)))
    assert len(nn.shards_) == 8 and nn.n_samples_fit_ == 50 and nn.storage_.is_dir()
    D, I = nn.kneighbors(da.from_array(Q, chunks=(4, 8)), n_neighbors=50)
    assert isinstance(D, da.Array) and D.shape == (9, 50)
    D, I = dask.compute(D, I)
    Dr, Ir = Local(n_neighbors=50, metric="cosine").fit(X).kneighbors(Q)
    np.testing.assert_array_equal(I, Ir)
    np.testing.assert_array_equal(D, Dr)
    only = nn.kneighbors(Q, 3, return_distance=False).compute()
    np.testing.assert_array_equal(only, Ir[:, :3])


def test_shard_files_and_their_dimensions(client, tmp_path):
    a, b = np.ones((3, 4), np.float32), np.zeros((2, 4), np.float32)
    np.save(tmp_path / "a.npy", a)
    np.save(tmp_path / "b.npy", b)
    np.save(tmp_path / "c.npy", np.zeros((2, 5), np.float32))
    nn = NearestNeighbors(2, client=client).fit([tmp_path / "a.npy", tmp_path / "b.npy"])
    D, I = _both(nn, np.zeros((1, 4), np.float32))
    assert I.tolist() == [[3, 4]] and D.tolist() == [[0, 0]]
    with pytest.raises(InvalidParameter, match=r"c\.npy: shard of 5 dimensions, but .*a\.npy has 4"):
        NearestNeighbors(client=client).fit([tmp_path / "a.npy", tmp_path / "c.npy"])


def test_bad_input_is_one_line(client):
    X = np.zeros((6, 3), np.float32)
    nn = NearestNeighbors(client=client, shard_rows=2).fit(X)
    with pytest.raises(InvalidParameter, match="n_neighbors <= n_samples_fit, but n_neighbors = 7"):
        nn.kneighbors(X, 7)
    with pytest.raises(InvalidParameter, match=r"n_neighbors = 6, n_samples_fit = 6"):
        nn.kneighbors(None, 6)  # X=None leaves 5 others
    with pytest.raises(InvalidParameter, match="X has 2 features, but NearestNeighbors is expecting 3"):
        nn.kneighbors(np.zeros((1, 2), np.float32))
    with pytest.raises(InvalidParameter, match="X has 2 features"):
        nn.kneighbors(da.zeros((4, 2), chunks=2))
    with pytest.raises(InvalidParameter, match="'metric' parameter"):
        NearestNeighbors(metric="hamming", client=client).fit(X)


def test_unreachable_scheduler_names_the_address(closed_port_url):
    address = "tcp://" + closed_port_url.split("//")[1].split("/")[0]
    with pytest.raises(ClusterError, match=f"cannot reach the Dask scheduler at {address} within 1 s"):
        with connect(address, timeout=1):
            pass
    with pytest.raises(ClusterError, match="expected local:N"):
        with connect("spark://x"):
            pass


def test_worker_killed_during_kneighbors_search_completes_exactly(client, kill_once):
    rng = np.random.default_rng(1)
    X = rng.integers(0, 4, (300, 6)).astype(np.float32)
    nn = NearestNeighbors(7, metric="manhattan", client=client, shard_rows=40, batch_size=60).fit(X)
    marker = kill_once("search_shard")
    D, I = _both(nn)
    assert marker.exists()  # a worker did die in the middle
    Dr, Ir = Local(n_neighbors=7, metric="manhattan").fit(X).kneighbors()
    np.testing.assert_array_equal(I, Ir)
    np.testing.assert_array_equal(D, Dr)


def test_workers_read_a_shard_again_once_its_file_changed(client, tmp_path):
    path = tmp_path / "a.npy"
    np.save(path, np.arange(6, dtype=np.float32).reshape(6, 1))
    nn = NearestNeighbors(1, client=client).fit([path])
    q = np.array([[0.2]], np.float32)
    assert nn.kneighbors(q, return_distance=False).compute().tolist() == [[0]]
    assert nn.kneighbors(q, return_distance=False).compute().tolist() == [[0]]  # kept by the worker
    np.save(tmp_path / "b.npy", np.arange(6, dtype=np.float32)[::-1].reshape(6, 1).copy())
    (tmp_path / "b.npy").replace(path)  # same size, another file
    assert nn.kneighbors(q, return_distance=False).compute().tolist() == [[5]]
