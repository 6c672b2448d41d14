"""Every backend against the same float64 reference, for every metric it serves."""

import numpy as np
import pytest

from lookalike import NearestNeighbors
from lookalike.knn import BACKENDS, METRICS, available, compare, get_metric, jit, reference_knn
from lookalike.errors import InvalidParameter
from lookalike.knn.backends import select
from lookalike.knn.verify import check

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
    exact = BACKENDS[backend].exact
    nn = NearestNeighbors(5, metric=metric, backend=backend).fit(X)
    D, I = nn.kneighbors(Q)
    D_ref, I_ref = reference_knn(Q, X, 5, metric)
    result = check(Q, X, metric, D_ref, I_ref, D, I, exact=exact)
    assert result["agree"] and result["frac_neighbor_sets_differ_beyond_ties"] == 0.0, result
    if exact:  # the reference's very neighbours, in its order (ties to the lower index)
        np.testing.assert_array_equal(I, I_ref)
    D_self, I_self = nn.kneighbors()
    assert not (I_self == np.arange(len(X))[:, None]).any()
    D_ref_self, I_ref_self = reference_knn(X, X, 6, metric)
    keep = I_ref_self != np.arange(len(X))[:, None]
    keep[keep.all(1), -1] = False
    I_exp, D_exp = I_ref_self[keep].reshape(len(X), 5), D_ref_self[keep].reshape(len(X), 5)
    result = check(X, X, metric, D_exp, I_exp, D_self, I_self, exact=exact)
    assert result["agree"] and result["frac_neighbor_sets_differ_beyond_ties"] == 0.0, result
    if exact:
        np.testing.assert_array_equal(I_self, I_exp)


def test_auto_picks_the_exact_engine():
    assert NearestNeighbors().fit(X).backend_ == "lookalike"
    assert select("auto", get_metric("cosine"), "cpu").name == "lookalike"


def test_a_backend_not_installed_is_a_clear_error():
    b = BACKENDS["cuml"]()
    if b.installed():
        pytest.skip("cuml is installed")
    with pytest.raises(ValueError, match="backend 'cuml' is not installed"):
        NearestNeighbors(backend="cuml", device="cpu").fit(X)


def test_a_gpu_only_backend_on_the_cpu_is_refused(monkeypatch):
    monkeypatch.setattr(BACKENDS["cuvs"], "installed", classmethod(lambda cls: True))
    with pytest.raises(InvalidParameter, match=r"^backend 'cuvs' cannot run on cpu: it runs on a CUDA device$"):
        select("cuvs", "euclidean", "cpu")
    assert "cuvs" not in available("cpu")


@pytest.mark.parametrize("backend", ["sklearn", "faiss"])
def test_a_cpu_library_asked_for_a_gpu_is_refused_not_run_on_the_cpu(backend, monkeypatch):
    """scikit-learn and faiss-cpu used to accept device='cuda' and run on the CPU silently."""
    import torch

    if not BACKENDS[backend].installed():  # (a GPU machine's image may lack faiss-cpu)
        pytest.skip(f"{backend} is not installed")

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # a machine with a GPU, as far as select sees
    with pytest.raises(InvalidParameter, match=rf"^backend '{backend}' cannot run on cuda: it runs on the CPU: "
                                               r"use device='cpu'$"):
        select(backend, "euclidean", "cuda")
    assert backend not in available("cuda") and backend in available("cpu")
    # 'auto' (NearestNeighbors' default) is the CPU for a library that runs only there, not a refusal
    assert select(backend, "euclidean", "auto").device.type == "cpu"
    assert select("torch", "euclidean", "cuda").device.type == "cuda"  # torch runs on the GPU for real
    assert select("auto", "euclidean", "cuda").name == "lookalike"  # exactness first (documented in AUTO_ORDER)


def test_radius_neighbors_says_which_engine_answers():
    for backend, engine in (("lookalike", "lookalike"), ("sklearn", "sklearn"), ("faiss", "lookalike"),
                            ("torch", "lookalike")):
        if backend not in available():
            continue
        nn = NearestNeighbors(backend=backend).fit(X)
        assert nn.radius_backend_ == engine
        D, I = nn.radius_neighbors(Q[:3], radius=6.0, sort_results=True)
        D_ref, I_ref = reference_knn(Q[:3], X, len(X), "euclidean")
        for r in range(3):
            np.testing.assert_array_equal(I[r], I_ref[r][D_ref[r] <= 6.0])


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


def test_backends_are_built_with_their_options(monkeypatch):
    b = select("lookalike", "cosine", "cpu", working_memory=8, precision="int8")
    assert b.precision == "int8" and b.working_memory == 8 and b.screen_dtype_ is None  # not fitted yet
    b.fit(X)
    assert str(b.screen_dtype_) == "torch.int8" and b.prepared_base_.working_memory == 8
    if jit.enabled():
        assert b.config == "lookalike engine, int8 screen + float64 rerank"  # compiled: the rerank takes the window
    monkeypatch.setenv("LOOKALIKE_JIT", "0")
    assert b.config == "lookalike engine, int8 screen + fp32 refine + float64 rerank"  # torch's rerank
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
        result = check(xb[:8], xb, metric, D_ref, I_ref, D, I, exact=False)  # within float32's error bound
        assert result["frac_neighbor_sets_differ_beyond_ties"] == 0.0, (metric, result, I, I_ref)


def test_check_holds_each_backend_to_its_own_tie_rule():
    """An exact backend must give the reference's sets (ties to the lower index); a float32
    library may swap only points within its float32 error bound of the k-th distance."""
    xb = np.array([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [3.0, 0.0], [1.0 + 1e-3, 0.0]], np.float32)
    xq = np.zeros((1, 2), np.float32)
    D_ref, I_ref = reference_knn(xq, xb, 2, "euclidean")
    assert I_ref.tolist() == [[0, 1]]  # 1 and 2 tie at distance 1: the lower index
    tie = (np.array([[0.0, 1.0]]), np.array([[0, 2]]))
    assert check(xq, xb, "euclidean", D_ref, I_ref, *tie, exact=False)["agree"]
    assert not check(xq, xb, "euclidean", D_ref, I_ref, *tie, exact=True)["agree"]
    near = (np.array([[0.0, 1.0]]), np.array([[0, 4]]))  # 1e-3 farther: far beyond float32's error at d=2
    assert not check(xq, xb, "euclidean", D_ref, I_ref, *near, exact=False)["agree"]
    off = (np.array([[0.0, 1.001]]), np.array([[0, 1]]))  # the right neighbour, a distance 1e-3 off
    assert not check(xq, xb, "euclidean", D_ref, I_ref, *off, exact=False)["agree"]
    assert check(xq, xb, "euclidean", D_ref, I_ref, D_ref.astype(np.float32), I_ref, exact=True)["agree"]


def test_the_gemm_reference_keeps_the_tie_rule_among_many_duplicates():
    xb = np.repeat(np.eye(3, dtype=np.float32), 40, axis=0)[::-1].copy()  # 40 copies of each row
    D1, I1 = reference_knn(xb[:5], xb, 30, "euclidean")
    D2, I2 = reference_knn(xb[:5], xb, 30, "euclidean", method="gemm", extra=4)
    np.testing.assert_array_equal(I1, I2)
    assert I1[0].tolist() == list(range(30))


def _printed_in_a_fresh_process(code: str) -> str:
    """What Python `code` prints, run in a process of its own (state no test has touched)."""
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


def test_the_engines_load_initialises_numba_before_a_timed_fit():
    """`lookalike bench` loads each backend's library before its clock starts: for the engine
    that includes numba's once-a-process initialisation of its CPU target (~0.26 s, the imports
    of its implementations), which the first fit took before. In a fresh process."""
    code = ("import sys\n"
            "from lookalike.knn.backends import LookalikeBackend\n"
            "impl = ('numba.np.npyimpl', 'numba.np.arraymath', 'numba.cpython.mathimpl')\n"
            "before = [m for m in impl if m in sys.modules]\n"
            "LookalikeBackend.load()\n"
            "print(before, [m for m in impl if m in sys.modules])\n")
    loaded = "['numba.np.npyimpl', 'numba.np.arraymath', 'numba.cpython.mathimpl']"
    assert _printed_in_a_fresh_process(code) == f"[] {loaded}"


def test_numba_leaves_torchs_thread_count_as_it_was():
    """numba's first call launches its OpenMP threads, which set the OpenMP count torch reads
    (the same libgomp) to every core: a server's one-thread stages then ran torch on all cores
    and calibrated as another machine. In a fresh process, a search keeps torch at 1 thread."""
    code = ("import threading, numpy as np, torch\n"
            "torch.set_num_threads(1)\n"
            "from lookalike import NearestNeighbors\n"
            "x = np.random.default_rng(0).random((300, 16), dtype=np.float32)\n"
            "nn = NearestNeighbors(3, precision='int8').fit(x)\n"
            "nn.kneighbors(x)\n"
            "seen = [torch.get_num_threads()]\n"
            "def other():\n"
            "    torch.set_num_threads(1); nn.kneighbors(x[:64]); seen.append(torch.get_num_threads())\n"
            "t = threading.Thread(target=other); t.start(); t.join()\n"
            "print(seen)\n")
    assert _printed_in_a_fresh_process(code) == "[1, 1]"
