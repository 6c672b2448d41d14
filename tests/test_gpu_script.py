"""benchmarks/gpu.py runs the same code on the CPU that it runs on a GPU."""

import json
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).parents[1] / "benchmarks" / "gpu.py"


def test_gpu_benchmark_script_on_cpu(tmp_path):
    out = tmp_path / "gpu.json"
    proc = subprocess.run([sys.executable, str(SCRIPT), "--device", "cpu", "--nb", "3000", "--nq", "200",
                           "--d", "64", "--repeats", "1", "--out", str(out)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(out.read_text())
    names = [r["backend"] for r in result["results"]]
    assert names[0] == "torch fp32 cdist+topk" and any(n.startswith("lookalike") for n in names)
    for r in result["results"]:
        if r["backend"].startswith("lookalike"):
            assert r["frac_beyond_ties"] == 0.0 and r["max_abs_dist_diff"] < 1e-3
    assert "search ms" in proc.stdout
