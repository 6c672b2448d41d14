import json

import pytest

from lookalike.bench import run, table
from lookalike.knn import available


def test_bench_compares_and_verifies_every_backend(tmp_path):
    backends = [b for b in ("lookalike", "sklearn", "faiss", "torch") if b in available()]
    result = run(nb=3000, nq=200, d=64, k=3, backends=backends, out=tmp_path, verify_queries=100, progress=False)
    on_disk = json.loads((tmp_path / "bench.json").read_text())
    assert on_disk["workload"]["nb"] == 3000 and on_disk["workload"]["verified_queries"] == 100
    assert (tmp_path / "bench.png").stat().st_size > 5000
    names = [r["backend"] for r in on_disk["results"]]
    assert names == backends and on_disk["disagree"] == []
    for rec in on_disk["results"]:
        for key in ("backend", "config", "fit_s", "search_s", "total_s", "import_s", "fit_includes", "peak_rss_mb",
                    "max_abs_dist_diff", "frac_neighbor_sets_differ", "speedup_vs_sklearn", "search_vs_sklearn",
                    "total_vs_sklearn", "tie_rule", "repeat_search_s"):
            assert key in rec, key
        assert rec["total_s"] == pytest.approx(rec["fit_s"] + rec["search_s"])
        # every backend within its own tie rule: the exact engine the reference's very sets
        assert rec["agree"] and rec["frac_neighbor_sets_differ_beyond_ties"] == 0.0, rec
        if rec["exact"]:
            assert rec["frac_neighbor_sets_differ"] == 0.0
    ours = on_disk["results"][0]
    assert ours["exact"] and not any(r["exact"] for r in on_disk["results"][1:])
    assert "candidates" in ours["stages"] and "fallbacks" in ours["stages"]
    assert ours["fp32_gemm_floor_s"] > 0 and ours["vs_fp32_floor"] > 0
    if "faiss" in backends:  # both BLAS settings measured, the better kept, said how
        faiss = next(r for r in on_disk["results"] if r["backend"] == "faiss")
        assert "OPENBLAS_CORETYPE=" in faiss["config"] and "distance_compute_blas_threshold=" in faiss["config"]
        t = faiss["settings"]
        assert faiss["setting"] == ("simd" if t.get("simd_batch_s", t["simd_probe_s"]) <
                                    t.get("blas_batch_s", t["blas_probe_s"]) else "blas")
        assert faiss["probe_queries"] == 200 and faiss["search_vs_faiss"] == 1.0
    for key in ("cpu_model", "cpu_flags", "cores"):
        assert on_disk["machine"][key], key
    assert on_disk["libraries"]["numpy"] and on_disk["provenance"]["command"] and on_disk["provenance"]["date"]
    assert "commit" in on_disk["provenance"]
    assert "lookalike" in table(result)


def test_bench_on_real_features(tmp_path):
    import numpy as np

    from lookalike.features.embed import write_features

    feats = np.abs(np.random.default_rng(0).normal(size=(400, 32))).astype(np.float32)
    write_features(tmp_path / "f.npy", feats, {"model": "test"})
    result = run(features=str(tmp_path / "f.npy"), backends=["lookalike", "sklearn"], out=tmp_path / "b",
                 progress=False)
    assert result["workload"]["nb"] == 360 and result["workload"]["nq"] == 40
    assert all(r["agree"] for r in result["results"])
    assert result["results"][0]["frac_neighbor_sets_differ"] == 0.0


def test_bench_rejects_unknown_backend(tmp_path):
    from lookalike.errors import LookalikeError

    with pytest.raises(LookalikeError, match="unknown backend 'annoy'"):
        run(nb=10, nq=2, d=4, backends=["annoy"], out=tmp_path, progress=False)


@pytest.mark.parametrize("kwargs, message", [
    ({"metric": "nonsense"}, "unknown metric 'nonsense'"),
    ({"precision": "fp8"}, "unknown precision 'fp8'"),
    ({"backends": ["sklearn"], "metric": "inner_product"}, "backend 'sklearn' does not serve metric 'inner_product'"),
    ({"k": 50}, "k=50 is more than the 40 base vectors"),
    ({"k": 0}, "k must be a whole number from 1"),
    ({"repeats": 10**6}, "repeats must be a whole number from 1 to 100"),
    ({"nb": 10**12}, "nb must be a whole number from 1 to 100000000"),
    ({"d": 1.5}, "d must be a whole number"),
])
def test_bench_checks_everything_before_writing_anything(tmp_path, kwargs, message):
    from lookalike.errors import InvalidParameter

    args = {"nb": 40, "nq": 5, "d": 4, "out": tmp_path / "out", "progress": False} | kwargs
    with pytest.raises(InvalidParameter, match=message):
        run(**args)
    assert not (tmp_path / "out").exists()


def test_bench_refuses_a_workload_larger_than_memory(tmp_path, monkeypatch):
    from lookalike import bench
    from lookalike.errors import InvalidParameter

    monkeypatch.setattr(bench, "available_memory", lambda: 2**30)
    with pytest.raises(InvalidParameter, match=r"needs about .* GiB of memory, 1.0 GiB are available"):
        run(nb=10**6, nq=10**5, d=2048, out=tmp_path / "out", progress=False)
    assert not (tmp_path / "out").exists()


def test_bench_features_files_are_checked_in_one_line(tmp_path):
    import numpy as np

    from lookalike.errors import InvalidParameter

    np.save(tmp_path / "one_d.npy", np.ones(10, np.float32))
    np.save(tmp_path / "three_d.npy", np.ones((20, 3, 2), np.float32))
    np.save(tmp_path / "huge.npy", np.full((20, 4), 1e200))
    (tmp_path / "text.npy").write_text("1,2,3\n")
    cases = {"one_d.npy": r"expected a 2-D array \(vectors, dimensions\), got shape \(10,\)",
             "three_d.npy": r"got shape \(20, 3, 2\)",
             "huge.npy": r"values up to 1e\+200 in magnitude",  # not "contains infinity"
             "text.npy": "not a .npy file",  # not "pickled data"
             "missing.npy": "no such .npy file"}
    for name, message in cases.items():
        with pytest.raises(InvalidParameter, match=message) as caught:
            run(features=str(tmp_path / name), out=tmp_path / "out", progress=False)
        assert "\n" not in str(caught.value)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("metric", ["manhattan", "chebyshev"])
def test_bench_verifies_metrics_without_a_gemm_densely(tmp_path, metric):
    result = run(nb=300, nq=20, d=8, metric=metric, backends=["lookalike", "sklearn"], out=tmp_path,
                 verify_queries=20, progress=False)
    assert [r["backend"] for r in result["results"]] == ["lookalike", "sklearn"]
    assert all(r["agree"] for r in result["results"]) and result["disagree"] == []
    assert result["results"][0]["frac_neighbor_sets_differ"] == 0.0


def test_bench_default_backends_are_those_serving_the_metric(tmp_path):
    result = run(nb=300, nq=20, d=8, metric="inner_product", out=tmp_path, verify_queries=20, progress=False)
    assert "sklearn" not in [r["backend"] for r in result["results"]]  # scikit-learn has no inner product


def test_a_worker_error_is_its_last_line(tmp_path, monkeypatch):
    from lookalike import bench
    from lookalike.errors import LookalikeError

    def fake_run(cmd, **kwargs):
        return subprocess.CompletedProcess(cmd, bench.WORKER_USER_ERROR, "",
                                           "lookalike: error: Input X contains NaN (first at row 3).\n")

    import subprocess

    monkeypatch.setattr(bench.subprocess, "run", fake_run)
    with pytest.raises(LookalikeError, match=r"^bench worker for lookalike failed: Input X contains NaN "
                                             r"\(first at row 3\)\.$"):
        run(nb=40, nq=5, d=4, backends=["lookalike"], out=tmp_path, progress=False)
    monkeypatch.setattr(bench.subprocess, "run", lambda cmd, **kw: subprocess.CompletedProcess(cmd, -9, "", ""))
    with pytest.raises(LookalikeError, match="was killed by signal 9"):
        run(nb=40, nq=5, d=4, backends=["lookalike"], out=tmp_path, progress=False)


def test_a_wrong_neighbour_fails_the_bench(tmp_path, monkeypatch):
    """A backend whose answer is wrong, however slightly, is named in `disagree`."""
    import numpy as np

    from lookalike import bench

    def spawn(backend, data, k, metric, precision):  # the worker in this process: quicker
        rec = bench.worker(backend, data, k, metric, precision)
        if backend == "sklearn":  # one query's second neighbour swapped for a farther point
            I = np.load(data / f"I_{backend}.npy")
            I[0, 1] = I[0, -1] + 1 if I[0, -1] + 1 < 300 else 0
            np.save(data / f"I_{backend}.npy", I)
        return rec

    monkeypatch.setattr(bench, "_spawn", spawn)
    result = run(nb=300, nq=20, d=8, backends=["lookalike", "sklearn"], out=tmp_path, verify_queries=20,
                 progress=False)
    assert result["disagree"] == ["sklearn"]


def test_a_steady_bench_times_repeated_searches_and_keeps_the_first(tmp_path):
    """`steady`: every backend searches the queries once in its process, then repeats the
    search (a quarter of a second of repeats, at most 20, at least one); the best repeat is
    the search timed, the first is recorded beside it, said in the table and on the chart."""
    result = run(nb=400, nq=30, d=8, backends=["lookalike", "sklearn"], out=tmp_path, verify_queries=30,
                 progress=False, steady=True)
    assert result["workload"]["steady"] is True and not result["disagree"]
    for r in result["results"]:
        assert r["first_search_s"] > 0 and r["first_search_best_s"] == min(r["repeat_first_search_s"])
        assert len(r["repeat_first_search_s"]) == len(r["repeat_search_s"]) == 1
        assert 1 <= r["steady_searches"] <= 20 and r["search_s"] <= r["steady_median_s"]
    assert "the best of repeated searches of all the queries in each process" in table(result)
    plain = run(nb=400, nq=30, d=8, backends=["sklearn"], out=tmp_path / "plain", verify_queries=30,
                progress=False)
    assert plain["workload"]["steady"] is False and "first_search_s" not in plain["results"][0]
    assert "repeated searches" not in table(plain) and "steady_searches" not in plain["results"][0]


def test_a_first_calibration_is_made_before_the_timed_fit_and_said(tmp_path, monkeypatch):
    """On a machine with no calibration for the class, `auto`'s measurement (and the kernels'
    compilation) happened inside lookalike's timed fit: a new user's first bench showed a
    fit of seconds against FAISS's milliseconds. It is made before the clock starts, and
    said, and kept for later runs."""
    from lookalike.bench import table
    from lookalike.knn import calibrate

    monkeypatch.setenv("LOOKALIKE_CACHE", str(tmp_path / "cache"))
    calibrate.forget()
    try:
        first = run(nb=3000, nq=50, d=48, k=3, backends=["lookalike", "lookalike@fp32"], out=tmp_path / "a",
                    verify_queries=20, progress=False)
        rec = {r["backend"]: r for r in first["results"]}
        assert rec["lookalike"]["calibration_s"] > 0 and "calibration_s" not in rec["lookalike@fp32"]
        assert "measured (and the CPU kernels compiled) in" in table(first)
        kept = json.loads((tmp_path / "cache" / calibrate.FILE).read_text())["classes"]
        assert "cpu/euclidean/d64" in kept  # for later runs (d = 48: class 64)
    finally:
        calibrate.forget()


def test_bench_does_not_write_into_an_image_folder_or_an_index(tmp_path):
    """bench.png in a folder of photos would be indexed with them by the next `index add`;
    an index folder holds the index alone. Both refused in one line, nothing written; a
    folder of other results (docs/bench) is written into as before."""
    from PIL import Image

    from lookalike.errors import InvalidParameter

    photos, index, results = tmp_path / "photos", tmp_path / "ix", tmp_path / "results"
    for folder in (photos, index, results):
        folder.mkdir()
    Image.new("RGB", (8, 8)).save(photos / "a.jpg")
    (index / "manifest.json").write_text("{}")
    (index / "meta.sqlite").write_bytes(b"")
    (results / "other.json").write_text("{}")
    for out, message in ((photos, r"holds images \(a.jpg\), among which bench.png would be indexed"),
                         (index, "is an index")):
        with pytest.raises(InvalidParameter, match=message):
            run(nb=40, nq=5, d=4, out=out, progress=False)
        assert not (out / "bench.json").exists() and not (out / "bench.png").exists()
    run(nb=40, nq=5, d=4, backends=["lookalike"], out=results, verify_queries=5, progress=False)
    assert (results / "bench.json").is_file() and (results / "other.json").is_file()
