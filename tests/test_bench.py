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
    assert names == backends
    for rec in on_disk["results"]:
        for key in ("backend", "config", "fit_s", "search_s", "peak_rss_mb", "max_abs_dist_diff",
                    "frac_neighbor_sets_differ", "speedup_vs_sklearn"):
            assert key in rec, key
        assert rec["max_abs_dist_diff"] < 1e-2
    ours = on_disk["results"][0]
    assert ours["frac_neighbor_sets_differ"] == 0.0 and ours["agree"]
    assert "candidates" in ours["stages"] and "fallbacks" in ours["stages"]
    assert ours["fp32_gemm_floor_s"] > 0 and ours["vs_fp32_floor"] > 0
    if "faiss" in backends:
        faiss = next(r for r in on_disk["results"] if r["backend"] == "faiss")
        assert "OPENBLAS_CORETYPE=" in faiss["config"]
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


def test_bench_rejects_unknown_backend(tmp_path):
    from lookalike.errors import LookalikeError

    with pytest.raises(LookalikeError, match="unknown backend 'annoy'"):
        run(nb=10, nq=2, d=4, backends=["annoy"], out=tmp_path, progress=False)
