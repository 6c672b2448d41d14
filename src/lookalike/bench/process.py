"""One backend measured in a process of its own (`python -m lookalike.bench.process`).

The parent writes xb.npy, xq.npy and options.json into a folder; the worker loads the
backend's library before the clock starts (its import is `import_s`, never part of `fit_s`;
for lookalike, with numba's once-a-process initialisation of its CPU target),
configures it as the variant says (FAISS's BLAS threshold, timed on probe searches), times fit
and search (lookalike's after a warm-up search of as many queries as FAISS's probe: both come to
the timed search warm), saves
D_<variant>.npy and I_<variant>.npy, and prints its record as one JSON line.
"""

from __future__ import annotations

import json
import resource
import sys
import time
from pathlib import Path

import numpy as np
import torch

from ..errors import LookalikeError
from ..knn import NearestNeighbors
from ..knn.backends import BACKENDS
from ..knn.metrics import METRICS, get_metric
from ..knn.blocks import ranges
from ..knn.screen import PreparedBase, Screen, int8_dots, prepare_rows

# FAISS's distance_compute_blas_threshold per setting: a batch of fewer queries than it runs
# FAISS's SIMD loop, a larger one a BLAS GEMM (the default differs by release: 20 in older ones,
# 128000 in faiss-cpu 1.15). 'faiss@blas' and 'faiss@simd' force one; plain 'faiss' measures
# both (`faiss_setting`) and takes the better.
FAISS_SETTINGS = {"blas": 0, "simd": 2**30}
PROBE_QUERIES = 256
GEMM_METRICS = {n for n, m in METRICS.items() if m.gemm}  # FAISS's threshold applies to these only
# with `steady`, the search is repeated after the first until this much time went on the repeats or
# this many were made (at least one), and the best kept: one timing of a search of a few
# milliseconds is at the mercy of the moment on a shared machine (nb = 1,000, 1,000 queries, three
# processes each: FAISS 4.3 to 7.4 ms, lookalike 5.6 to 7.4), the best of several is not
STEADY_S = 0.25
STEADY_MAX = 20
WORKER_USER_ERROR = 2  # a worker's exit status for a LookalikeError: its message is its last line


def status_mb(field: str) -> float:
    """A memory figure of this process from /proc/self/status, in MiB (VmRSS now, VmHWM peak).

    VmHWM is this address space's own high-water mark; getrusage's ru_maxrss is not used
    because Linux carries it over from the parent process across fork and exec.
    """
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 if field == "VmHWM" else float("nan")


def _calibrated(xb: np.ndarray, metric: str) -> float | None:
    """Seconds the calibration of `auto` took here, if the machine had none for this class:
    done before the timed fit, once per machine (the kernels' first compilation with it),
    it is no part of what a fit costs. None: kept from before."""
    from ..knn import calibrate

    m, cpu = get_metric(metric), torch.device("cpu")
    if not m.gemm or calibrate.cached(cpu, m, xb.shape[1]) is not None:
        return None
    t0 = time.perf_counter()
    calibrate.calibration(cpu, m, xb.shape[1], sample=xb)  # what the fit would measure, on the same rows
    return time.perf_counter() - t0


def worker(backend: str, data: Path, k: int, metric: str, precision: str) -> dict:
    """Run one backend variant in this process and return its record (called in a child
    process). `backend`: a name, 'lookalike@fp32' (the engine at a fixed precision) or
    'faiss@blas' / 'faiss@simd' (FAISS's BLAS threshold forced one way)."""
    options = json.loads((data / "options.json").read_text()) if (data / "options.json").exists() else {}
    baseline = status_mb("VmRSS")
    xb = np.load(data / "xb.npy")
    xq = np.load(data / "xq.npy")
    name, _, variant = backend.partition("@")
    t0 = time.perf_counter()
    BACKENDS[name].load()  # the library's import, outside the timed fit
    import_s = time.perf_counter() - t0
    settings = None
    if name == "faiss" and get_metric(metric).name in GEMM_METRICS:  # a choice made before the clocks start,
        probe = NearestNeighbors(k, metric=metric, backend=name, device="cpu").fit(xb)  # on an index of its own
        settings = faiss_setting(probe, xq, variant)
        del probe
    nn = NearestNeighbors(k, metric=metric, backend=name, device="cpu",
                          precision=variant if name == "lookalike" and variant else precision)
    calibration_s = _calibrated(xb, metric) if name == "lookalike" and nn.precision == "auto" else None
    t0 = time.perf_counter()
    nn.fit(xb)  # backend_config_ says the BLAS threshold set above
    fit_s = time.perf_counter() - t0
    warmup_s = None
    if name == "lookalike":  # FAISS's probe searches (above) warm its threads and kernels; this does
        t1 = time.perf_counter()  # the same for the engine, on as many queries, outside the clock
        nn.kneighbors(xq[:PROBE_QUERIES])
        warmup_s = time.perf_counter() - t1
    first_s = None
    steady = options.get("steady", False)
    if steady:  # the search run once first, timed apart: then what repeated searches take
        t1 = time.perf_counter()
        nn.kneighbors(xq)
        first_s = time.perf_counter() - t1
    times = []  # one timed search; with `steady`, repeats (STEADY_S, STEADY_MAX), the best kept
    while not times or (steady and sum(times) < STEADY_S and len(times) < STEADY_MAX):
        t1 = time.perf_counter()
        D, I = nn.kneighbors(xq)
        times.append(time.perf_counter() - t1)
    search_s = min(times)
    np.save(data / f"D_{backend}.npy", D)
    np.save(data / f"I_{backend}.npy", I)
    record = {"backend": backend, "config": nn.backend_config_, "exact": BACKENDS[name].exact,
              "fit_includes": BACKENDS[name].fit_includes, "import_s": import_s,
              "fit_s": fit_s, "search_s": search_s, "total_s": fit_s + search_s,
              "peak_rss_mb": status_mb("VmHWM"), "baseline_rss_mb": baseline}
    if calibration_s is not None:
        record["calibration_s"] = calibration_s  # measured before the timed fit: this machine's first time
    if warmup_s is not None:
        record["warmup_s"] = warmup_s  # a search of the first PROBE_QUERIES queries before the timed one
    if first_s is not None:  # with `steady`: the first search of all the queries (search_s: the best repeat)
        record["first_search_s"] = first_s
        record["steady_searches"] = len(times)
        record["steady_median_s"] = float(np.median(times))
    if settings is not None:
        record |= settings
    if nn.search_stats_ is not None:
        record["stages"] = nn.search_stats_.as_dict()
    base = nn.prepared_base_
    if options.get("floors", True) and base is not None and base.metric.gemm:
        # the GEMMs alone, same blocks, same process: the floor of any brute force at that precision
        record["fp32_gemm_floor_s"] = gemm_floor(base, xq)
        record["vs_fp32_floor"] = record["search_s"] / record["fp32_gemm_floor_s"]
        if nn.screen_dtype_ == "int8":
            record["int8_gemm_floor_s"] = gemm_floor(base, xq, torch.int8)
    return record


def faiss_setting(nn: NearestNeighbors, xq: np.ndarray, forced: str) -> dict:
    """Set FAISS's BLAS threshold for this batch: `forced` ('blas', 'simd') or, for '', the
    faster of the two on a probe of the first PROBE_QUERIES queries, each timed after a
    warm-up. When the BLAS GEMM wins the probe it wins the whole batch too (its cost per
    query falls as batches grow; the SIMD loop's does not); when the SIMD loop wins and the
    batch is larger than the probe, both are timed on the whole batch. Returns the setting,
    the times that chose it and `probe_s`, the seconds the probe took."""
    import faiss

    t0 = time.perf_counter()
    if forced:
        faiss.cvar.distance_compute_blas_threshold = FAISS_SETTINGS[forced]
        return {"setting": forced, "probe_s": time.perf_counter() - t0}
    probe = xq[:PROBE_QUERIES]
    times = {}
    for what, queries in (("probe", probe), ("batch", xq)):
        for setting, threshold in FAISS_SETTINGS.items():
            faiss.cvar.distance_compute_blas_threshold = threshold
            nn.kneighbors(queries[:8])  # warm-up
            t = time.perf_counter()
            nn.kneighbors(queries)
            times[f"{setting}_{what}_s"] = time.perf_counter() - t
        simd_wins = times[f"simd_{what}_s"] < times[f"blas_{what}_s"]
        if not simd_wins or len(xq) <= len(probe):
            break
    setting = "simd" if simd_wins else "blas"
    faiss.cvar.distance_compute_blas_threshold = FAISS_SETTINGS[setting]
    return {"setting": setting, "settings": times, "probe_queries": len(probe),
            "probe_s": time.perf_counter() - t0}


def gemm_floor(base: PreparedBase, xq: np.ndarray, dtype: torch.dtype = torch.float32) -> float:
    """Seconds for the GEMMs alone of a search of `xq` against a prepared base (same blocks,
    one reused output buffer), at `dtype` (float32 or int8): the floor of any brute force at
    that precision. Operands are prepared before the clock starts."""
    qb, bb = base.block_sizes(len(xq))
    screen = Screen(base.metric, base.d, dtype, base.screen.mean)
    q = prepare_rows(screen, xq, base.device).data
    blocks = [prepare_rows(screen, base.xb[lo:hi], base.device).data for lo, hi in ranges(base.nb, bb)]
    buf = torch.empty(min(len(xq), qb) * min(base.nb, bb), device=base.device,
                      dtype=torch.int32 if screen.int8 else dtype)
    t0 = time.perf_counter()
    for (blo, bhi), b in zip(ranges(base.nb, bb), blocks):
        for qlo, qhi in ranges(len(xq), qb):
            out = buf[: (qhi - qlo) * (bhi - blo)].view(qhi - qlo, bhi - blo)
            if screen.int8:
                int8_dots(q[qlo:qhi], b, out=out)
            else:
                torch.mm(q[qlo:qhi], b.T, out=out)
    if base.device.type == "cuda":
        torch.cuda.synchronize(base.device)
    return time.perf_counter() - t0


def main(argv: list[str]) -> None:
    b, data_dir, k_, metric_, precision_ = argv[:5]
    try:
        print(json.dumps(worker(b, Path(data_dir), int(k_), metric_, precision_)))
    except LookalikeError as exc:
        print(f"lookalike: error: {exc}", file=sys.stderr)
        sys.exit(WORKER_USER_ERROR)


if __name__ == "__main__":  # python -m lookalike.bench.process BACKEND DATA K METRIC PRECISION
    main(sys.argv[1:])
