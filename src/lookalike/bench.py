"""`lookalike bench`: the tutorial's backend comparison, reproducible, in one run.

Each backend runs in its own worker process on the same arrays, so that its peak memory is
its own and each library is configured at its best (FAISS's OpenBLAS core type, say).
Repeats are interleaved (A, B, C, A, B, C) because these machines drift; the best time of
each backend is kept. Every backend is verified against an independent float64 reference on
a sample of the queries, by distances and by neighbour sets.
"""

from __future__ import annotations

import json
import numbers
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from .atomic import atomic_write_text
from .errors import InvalidParameter, LookalikeError
from .features.files import load_npy
from .hardware import available_memory
from .knn import NearestNeighbors
from .knn.backends import BACKENDS, available
from .knn.blocks import ranges
from .knn.metrics import get_metric
from .knn.precision import PRECISIONS, SCREEN_PRECISIONS, screen_dtype
from .knn.screen import PreparedBase, Screen, int8_dots, prepare_rows
from .knn.verify import compare, reference_knn


def synthetic(nb: int, nq: int, d: int, seed: int = 0, clusters: int = 1000) -> tuple[np.ndarray, np.ndarray]:
    """Feature-like data: non-negative (ReLU then max pooling), clustered, float32."""
    rng = np.random.default_rng(seed)
    centres = np.abs(rng.standard_normal((clusters, d), dtype=np.float32))

    def draw(n: int) -> np.ndarray:
        out = np.empty((n, d), dtype=np.float32)
        for lo in range(0, n, 8192):
            hi = min(lo + 8192, n)
            noise = rng.standard_normal((hi - lo, d), dtype=np.float32) * 0.5
            np.maximum(centres[rng.integers(0, clusters, hi - lo)] + noise, 0, out=out[lo:hi])
        return out

    return draw(nb), draw(nq)


def _status_mb(field: str) -> float:
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


def worker(backend: str, data: Path, k: int, metric: str, precision: str) -> dict:
    """Run one backend in this process and return its record (called in a child process)."""
    baseline = _status_mb("VmRSS")
    xb = np.load(data / "xb.npy")
    xq = np.load(data / "xq.npy")
    name, _, forced = backend.partition("@")  # "lookalike@fp32": the engine at a fixed precision
    nn = NearestNeighbors(k, metric=metric, backend=name, device="cpu", precision=forced or precision)
    t0 = time.perf_counter()
    nn.fit(xb)
    t1 = time.perf_counter()
    D, I = nn.kneighbors(xq)
    t2 = time.perf_counter()
    np.save(data / f"D_{backend}.npy", D)
    np.save(data / f"I_{backend}.npy", I)
    record = {"backend": backend, "config": nn.backend_config_, "fit_s": t1 - t0, "search_s": t2 - t1,
              "peak_rss_mb": _status_mb("VmHWM"),
              "baseline_rss_mb": baseline}
    if nn.search_stats_ is not None:
        record["stages"] = nn.search_stats_.as_dict()
    base = nn.prepared_base_
    if base is not None and base.metric.gemm:
        # the GEMMs alone, same blocks, same process: the floor of any brute force at that precision
        record["fp32_gemm_floor_s"] = gemm_floor(base, xq)
        record["vs_fp32_floor"] = record["search_s"] / record["fp32_gemm_floor_s"]
        if nn.screen_dtype_ == "int8":
            record["int8_gemm_floor_s"] = gemm_floor(base, xq, torch.int8)
    return record


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


# What `run` takes (README, "Limits"); a workload must also fit in the memory and disk free.
MAX_NB, MAX_NQ, MAX_D, MAX_REPEATS, MAX_VERIFY = 10**8, 10**7, 65_536, 100, 100_000


def run(*, nb: int = 90000, nq: int = 10000, d: int = 2048, k: int = 3, metric: str = "euclidean",
        backends: list[str] | None = None, features: str | None = None, repeats: int = 1,
        verify_queries: int = 1000, precision: str = "auto", out: str | os.PathLike = "bench-out",
        seed: int = 0, progress: bool = True) -> dict:
    """Compare backends on one workload; write bench.json and bench.png into `out`.

    Everything is checked before any data is made or any file written. Each result says
    whether the backend `agree`s with the float64 reference; `disagree` lists those that do not.
    """
    m = get_metric(metric)
    if precision not in SCREEN_PRECISIONS:
        raise InvalidParameter(f"unknown precision {precision!r}; choose {', '.join(SCREEN_PRECISIONS)}")
    for b in backends or []:  # before any data is made: a bad name fails at once
        _check_backend(b, m)
    for name, value, hi in (("k", k, None), ("repeats", repeats, MAX_REPEATS),
                            ("verify_queries", verify_queries, MAX_VERIFY)):
        _check_count(name, value, hi)
    out = _check_out(Path(out))
    if features:
        xb, xq = _features(features, seed)
        workload = {"source": str(features), "split": "9:1, seed %d" % seed}
    else:
        for name, value, hi in (("nb", nb, MAX_NB), ("nq", nq, MAX_NQ), ("d", d, MAX_D)):
            _check_count(name, value, hi)
        _check_room(nb, nq, d, min(verify_queries, nq))
        xb, xq = synthetic(nb, nq, d, seed)
        workload = {"source": "synthetic feature-like (clustered, ReLU), seed %d" % seed}
    if k > len(xb):
        raise InvalidParameter(f"k={k} is more than the {len(xb)} base vectors")
    if not backends:
        backends = [b for b in ("lookalike", "faiss", "torch", "sklearn")
                    if b in available("cpu") and BACKENDS[b].is_usable_for(m, torch.device("cpu"))]
        if precision == "auto" and _auto_is_not_fp32(m, xb.shape[1], len(xb)):
            backends.insert(1, "lookalike@fp32")  # the fp32 engine too, as the floor's reference
    workload |= {"nb": len(xb), "nq": len(xq), "d": xb.shape[1], "k": k, "metric": m.name,
                 "base_mb": xb.nbytes / 2**20, "repeats": repeats}
    records, sample = _measure(xb, xq, k, m.name, backends, precision, repeats, verify_queries, seed, progress)
    base = records.get("sklearn")
    for rec in records.values():
        rec["speedup_vs_sklearn"] = base["search_s"] / rec["search_s"] if base else None
    result = {"workload": workload | {"verified_queries": int(len(sample))}, "machine": machine(),
              "results": list(records.values()), "disagree": [b for b, r in records.items() if not r["agree"]]}
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "bench.json", json.dumps(result, indent=1))
    from .report.figures import bench_chart

    bench_chart(result, out / "bench.png")
    return result


def _measure(xb: np.ndarray, xq: np.ndarray, k: int, metric: str, backends: list[str], precision: str,
             repeats: int, verify_queries: int, seed: int, progress: bool) -> tuple[dict[str, dict], np.ndarray]:
    """Each backend in its own process, repeats interleaved, the best time kept; then each
    result against the float64 reference on a sample of `verify_queries` queries."""
    records: dict[str, dict] = {}
    with tempfile.TemporaryDirectory(prefix="lookalike-bench-") as tmp:
        data = Path(tmp)
        np.save(data / "xb.npy", xb)
        np.save(data / "xq.npy", xq)
        for rep in range(repeats):
            for b in backends:
                if progress:
                    print(f"[{rep + 1}/{repeats}] {b} ...", file=sys.stderr, flush=True)
                rec = _spawn(b, data, k, metric, precision)
                best = records.get(b)
                if best is None or rec["search_s"] < best["search_s"]:
                    records[b] = rec
                if progress:
                    print(f"    fit {rec['fit_s']:.2f} s, search {rec['search_s']:.2f} s, "
                          f"peak RSS {rec['peak_rss_mb']:.0f} MB", file=sys.stderr, flush=True)
        sample = np.sort(np.random.default_rng(seed).permutation(len(xq))[: min(verify_queries, len(xq))])
        if progress:
            print(f"float64 reference on {len(sample)} queries ...", file=sys.stderr, flush=True)
        D_ref, I_ref = reference_knn(xq[sample], xb, k, metric, method="gemm")  # dense for non-GEMM metrics
        for b, rec in records.items():
            D, I = np.load(data / f"D_{b}.npy"), np.load(data / f"I_{b}.npy")
            rec |= compare(D_ref, I_ref, D[sample], I[sample])
    return records, sample


def _check_count(name: str, value, hi: int | None) -> None:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1 or (hi and value > hi):
        raise InvalidParameter(f"{name} must be a whole number from 1{f' to {hi}' if hi else ''}, got {value!r}")


def _check_out(out: Path) -> Path:
    """`out` can be a folder of results: one already, or one that can be made where it would go."""
    if out.exists() and not out.is_dir():
        raise InvalidParameter(f"--out {out}: exists and is not a folder")
    parent = next(p for p in (out, *out.absolute().parents) if p.exists())
    if not parent.is_dir() or not os.access(parent, os.W_OK | os.X_OK):
        raise InvalidParameter(f"--out {out}: cannot write in {parent}")
    for name in ("bench.json", "bench.png"):
        if (out / name).is_dir():
            raise InvalidParameter(f"--out {out}: {name} there is a folder; give another --out")
    previous = out / "bench.json"
    if previous.is_file():  # replaced only when it is an earlier bench's result
        try:
            ours = {"workload", "results"} <= set(json.loads(previous.read_text()))
        except (OSError, ValueError, TypeError):
            ours = False
        if not ours:
            raise InvalidParameter(f"--out {out}: holds a bench.json lookalike did not write; give another --out")
    return out


def _check_room(nb: int, nq: int, d: int, verified: int) -> None:
    """Refuse, before making any data, a workload larger than the memory or the disk free:
    the arrays (held here while a worker holds them and its index: ~4 copies), the float64
    reference (a copy of the base, the scores of the verified queries), the temporary files."""
    data = (nb + nq) * d * 4
    need = 4 * data + 2**30 + max(0, nb * d * 8 + 2 * verified * nb * 8 - 3 * data)
    free = available_memory()
    if free is not None and need > free:
        raise InvalidParameter(f"a bench of {nb} x {nq} x {d}-d needs about {need / 2**30:.1f} GiB of memory, "
                               f"{free / 2**30:.1f} GiB are available: use smaller --nb, --nq or --d")
    disk = shutil.disk_usage(tempfile.gettempdir()).free
    if data * 1.1 > disk:
        raise InvalidParameter(f"a bench of {nb} x {nq} x {d}-d writes {data / 2**30:.1f} GiB of temporary files, "
                               f"{disk / 2**30:.1f} GiB are free in {tempfile.gettempdir()}")


def _features(path: str, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Real features as (base, queries), split 9:1: a 2-D .npy of numbers, float32 from here on."""
    from .knn.validation import check_array
    from .sources.split import split_indices

    X = load_npy(path)
    if X.ndim != 2:
        raise InvalidParameter(f"--features {path}: expected a 2-D array (vectors, dimensions), got shape {X.shape}")
    if len(X) < 10:
        raise InvalidParameter(f"--features {path}: {len(X)} vectors are too few to split 9:1 (10 or more)")
    _check_room(len(X), 0, X.shape[1], 0)
    X = check_array(X, name=f"--features {path}", estimator="bench")
    index_idx, query_idx = split_indices(len(X), 0.1, seed)
    return np.ascontiguousarray(X[index_idx], np.float32), np.ascontiguousarray(X[query_idx], np.float32)


def _check_backend(b: str, m) -> None:
    """A backend name for the bench: a known, usable backend, `lookalike` with an @precision,
    that serves metric `m`."""
    name, _, forced = b.partition("@")
    if name not in BACKENDS:
        raise InvalidParameter(f"unknown backend {name!r}; choose among {', '.join(BACKENDS)}")
    if name not in available("cpu"):
        raise InvalidParameter(f"backend {name!r} is not usable here (not installed, or needs a GPU)")
    if forced and (name != "lookalike" or forced not in PRECISIONS):
        raise InvalidParameter(f"{b!r}: only lookalike takes a precision (@{', @'.join(PRECISIONS)})")
    if not BACKENDS[name].is_usable_for(m, torch.device("cpu")):
        raise InvalidParameter(f"backend {name!r} does not serve metric {m.name!r}")


def _auto_is_not_fp32(m, d: int, nb: int) -> bool:
    return screen_dtype("auto", torch.device("cpu"), m, d, nb) != torch.float32


def _spawn(backend: str, data: Path, k: int, metric: str, precision: str) -> dict:
    """Run one backend's worker; its user error is one line, its crash a bug with its traceback."""
    cmd = [sys.executable, "-m", "lookalike.bench", backend, str(data), str(k), metric, precision]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode == 0:
        return json.loads(proc.stdout.strip().splitlines()[-1])
    last = (proc.stderr.strip().splitlines() or [""])[-1].removeprefix("lookalike: error: ")
    if proc.returncode == WORKER_USER_ERROR:
        raise LookalikeError(f"bench worker for {backend} failed: {last}")
    if proc.returncode < 0 or last.startswith("MemoryError"):
        how = f"was killed by signal {-proc.returncode}" if proc.returncode < 0 else "ran out of memory"
        raise LookalikeError(f"bench worker for {backend} {how}: use smaller --nb, --nq or --d")
    raise RuntimeError(f"bench worker for {backend} crashed (exit status {proc.returncode}):\n{proc.stderr}")


def machine() -> dict:
    from .hardware import cpu_flags

    flags = cpu_flags()
    return {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
            "torch_threads": torch.get_num_threads(), "python": platform.python_version(),
            "torch": torch.__version__, "amx_bf16": "amx_bf16" in flags, "avx512_bf16": "avx512_bf16" in flags,
            "avx512f": "avx512f" in flags, "date": time.strftime("%Y-%m-%d %H:%M")}


def table(result: dict) -> str:
    """The comparison as an aligned text table."""
    head = f"{'backend':<10} {'fit s':>7} {'search s':>9} {'vs sklearn':>10} {'peak MB':>8} " \
           f"{'max |dD|':>9} {'sets differ':>11}  config"
    lines = [head, "-" * len(head)]
    floors = [r for r in result["results"] if "fp32_gemm_floor_s" in r]
    for r in result["results"]:
        sp = f"{r['speedup_vs_sklearn']:.1f}x" if r.get("speedup_vs_sklearn") else "-"
        lines.append(f"{r['backend']:<10} {r['fit_s']:>7.2f} {r['search_s']:>9.2f} {sp:>10} "
                     f"{r['peak_rss_mb']:>8.0f} {r['max_abs_dist_diff']:>9.2e} "
                     f"{r['frac_neighbor_sets_differ']:>11.2%}  {r['config']}")
    for r in floors:
        st = r.get("stages", {})
        lines.append(f"{r['backend']}: {st.get('screen_dtype')} screen; stages prepare {st.get('prepare_s', 0):.2f} s, "
                     f"screen {st.get('screen_s', 0):.2f} s, refine {st.get('refine_s', 0):.2f} s, "
                     f"rerank {st.get('rerank_s', 0):.2f} s, fallback {st.get('fallback_s', 0):.2f} s; "
                     f"{st.get('candidates', 0)} candidates in windows, {st.get('reranked', 0)} reranked in float64, "
                     f"{st.get('fallbacks', 0)} fallbacks; fp32 GEMM floor {r['fp32_gemm_floor_s']:.2f} s "
                     f"(search at {r['vs_fp32_floor']:.2f}x of it)"
                     + (f", int8 GEMM floor {r['int8_gemm_floor_s']:.2f} s" if "int8_gemm_floor_s" in r else ""))
    return "\n".join(lines)


WORKER_USER_ERROR = 2  # a worker's exit status for a LookalikeError: its message is its last line


if __name__ == "__main__":  # worker entry: python -m lookalike.bench BACKEND DATA K METRIC PRECISION
    b, data_dir, k_, metric_, precision_ = sys.argv[1:6]
    try:
        print(json.dumps(worker(b, Path(data_dir), int(k_), metric_, precision_)))
    except LookalikeError as exc:
        print(f"lookalike: error: {exc}", file=sys.stderr)
        sys.exit(WORKER_USER_ERROR)
