"""benchmarks/gpu.py runs the same code on the CPU that it runs on a GPU, and checks every
row against a float64 brute force."""

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

SCRIPT = Path(__file__).parents[1] / "benchmarks" / "gpu.py"


def test_gpu_benchmark_script_on_cpu(tmp_path):
    out = tmp_path / "gpu.json"
    proc = subprocess.run([sys.executable, str(SCRIPT), "--device", "cpu", "--nb", "3000", "--nq", "200",
                           "--d", "64", "--repeats", "1", "--embed-images", "8", "--embed-batches", "2,4,8",
                           "--out", str(out)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(out.read_text())
    names = [r["backend"] for r in result["results"]]
    assert names == ["torch", "lookalike@fp32", "lookalike@bf16", "lookalike@fp16", "lookalike@int8", "lookalike@auto"]
    assert result["workload"]["verified_queries"] == 200 and result["disagree"] == []
    for r in result["results"]:
        assert r["host_s"] > 0 and r["device_s"] > 0 and r["fit_s"] >= 0  # both conditions, every row
        assert r["agree"] and r["frac_neighbor_sets_differ_beyond_ties"] == 0.0, r
        if r["exact"]:  # against float64: the very neighbour sets
            assert r["backend"].startswith("lookalike") and r["frac_neighbor_sets_differ"] == 0.0
            assert "float64 rerank" in r["config"] and isinstance(r["screen_choice"], str)
    assert result["provenance"]["command"].startswith("python benchmarks/gpu.py")
    assert "host->host ms" in proc.stdout and "device ms" in proc.stdout
    floors = result["ceilings"]  # each GEMM alone, and a top-k of one block: what any search must do
    assert {"gemm_fp32_s", "gemm_bf16_s", "gemm_int8_s", "topk_block_s"} <= set(floors)
    assert all(v > 0 for v in floors.values()) and floors["topk_block_queries"] == 200
    # ResNet-50 features: the default, each variant (frozen bf16 at every batch size), an STL-10 file
    rows = {r["backend"]: r for r in result["embed"]}
    assert list(rows) == ["lookalike default", "eager-fp32 b4", "eager-bf16 b4", "frozen-fp32 b4", "frozen-bf16 b2",
                          "frozen-bf16 b4", "frozen-bf16 b8", "embed STL-10 file"]
    for name, r in rows.items():
        assert r["images"] == 8 and r["images_per_s"] > 0 and r["seconds"] > 0, r
        assert r["least_cosine"] >= 0.999, r  # every variant's features are the reference's
        assert name == "lookalike default" or name.startswith("embed") or r["variant"] == name.split()[0]
    assert rows["eager-fp32 b4"]["least_cosine"] == pytest.approx(1.0, abs=1e-12)  # the reference itself
    assert rows["lookalike default"]["config"].startswith("Embedder('resnet50') as a user makes it: ")
    assert "ResNet-50 features" in proc.stdout and "images/s" in proc.stdout


def test_a_wrong_row_fails_the_gpu_script(tmp_path, monkeypatch, capsys):
    spec = importlib.util.spec_from_file_location("gpu_script", SCRIPT)
    gpu = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gpu)
    real = gpu.torch_knn

    def off_by_one(*args, **kwargs):  # every query's last neighbour swapped for another point
        D, I = real(*args, **kwargs)
        I = I.copy()
        I[:, -1] = (I[:, -1] + 1) % 500
        return D, I

    monkeypatch.setattr(gpu, "torch_knn", off_by_one)
    code = gpu.main(["--device", "cpu", "--nb", "500", "--nq", "20", "--d", "16", "--repeats", "1",
                     "--embed-images", "0",
                     "--out", str(tmp_path / "g.json")])
    assert code == 1
    assert "disagree with the float64 reference: torch" in capsys.readouterr().err
    assert np.all([not r["agree"] for r in json.loads((tmp_path / "g.json").read_text())["results"][:1]])
