"""`lookalike bench`: the tutorial's backend comparison, reproducible, in one run.

Each backend runs in its own worker process on the same arrays (`process.py`), so that its
peak memory is its own and each library is configured at its best: FAISS's OpenBLAS core
type set before it loads, its BLAS threshold timed both ways in its worker and the better
kept (`process.faiss_setting`); every library imported before its timed fit. Repeats are interleaved
(A, B, C, A, B, C) because these machines drift; the best time of each variant is kept. fit,
search and their sum are reported apart, and every ratio says which it compares.

Every backend is verified against an independent float64 brute force in plain NumPy
(`lookalike.knn.verify`) on a sample of the queries, by distances and by neighbour sets,
under its documented tie rule: the exact engine must give the reference's very sets; a
float32 library may swap only points within its float32 error bound of the k-th distance.
"""

from __future__ import annotations

import json
import numbers
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

from ..atomic import atomic_write_text, is_own_folder
from ..errors import InvalidParameter, LookalikeError
from ..features.files import load_npy
from ..hardware import available_memory
from ..knn.backends import BACKENDS, available
from ..knn.metrics import get_metric
from ..knn.precision import PRECISIONS, SCREEN_PRECISIONS, screen_dtype
from ..knn.verify import check, reference_knn
from ..sources.files import EXTENSIONS as IMAGE_EXTENSIONS
from ..text import seconds
from .process import FAISS_SETTINGS, WORKER_USER_ERROR, gemm_floor, worker
from .provenance import finish, libraries, machine, provenance

__all__ = ["run", "measure", "table", "synthetic", "machine", "provenance", "libraries", "worker", "gemm_floor",
           "WORKER_USER_ERROR"]

PEERS = ("faiss", "sklearn")  # the ratios each result reports: time over these peers' times


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


# What `run` takes (README, "Limits"); a workload must also fit in the memory and disk free.
MAX_NB, MAX_NQ, MAX_D, MAX_REPEATS, MAX_VERIFY = 10**8, 10**7, 65_536, 100, 100_000


def run(*, nb: int = 90000, nq: int = 10000, d: int = 2048, k: int = 3, metric: str = "euclidean",
        backends: list[str] | None = None, features: str | None = None, repeats: int = 1,
        verify_queries: int = 1000, precision: str = "auto", out: str | os.PathLike = "bench-out",
        seed: int = 0, progress: bool = True, command: list[str] | str | None = None, steady: bool = False) -> dict:
    """Compare backends on one workload; write bench.json and bench.png into `out`.

    `steady`: each backend searches all the queries in its process once, then again, repeated
    for a quarter of a second (at most 20 times), the best of those repeats timed (a repeated
    search, as a service repeats one; see `measure`), the first kept beside it.

    Everything is checked before any data is made or any file written. Each result says
    whether the backend `agree`s with the float64 reference; `disagree` lists those that do
    not. `command`: how the run was asked for, recorded in `provenance` (default: sys.argv).
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
    origin = provenance(command)
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
        if precision == "auto" and _auto_is_not_fp32(m, xb.shape[1], len(xb), len(xq)):
            backends.insert(1, "lookalike@fp32")  # the fp32 engine too, as the floor's reference
    workload |= {"nb": len(xb), "nq": len(xq), "d": xb.shape[1], "k": k, "metric": m.name,
                 "base_mb": xb.nbytes / 2**20, "repeats": repeats, "steady": bool(steady)}
    records, sample = measure(xb, xq, k, m.name, backends, precision=precision, repeats=repeats,
                              verify_queries=verify_queries, seed=seed, progress=progress, steady=steady)
    result = {"workload": workload | {"verified_queries": int(len(sample))}, "machine": machine(),
              "libraries": libraries(), "provenance": finish(origin),
              "results": list(records.values()), "disagree": [b for b, r in records.items() if not r["agree"]]}
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "bench.json", json.dumps(result, indent=1))
    from ..report.figures import bench_chart

    bench_chart(result, out / "bench.png")
    return result




def measure(xb: np.ndarray, xq: np.ndarray, k: int, metric: str, backends: list[str], *, precision: str = "auto",
            repeats: int = 1, verify_queries: int = 1000, seed: int = 0, progress: bool = True,
            floors: bool = True, steady: bool = False) -> tuple[dict[str, dict], np.ndarray]:
    """Each backend variant in its own process, repeats interleaved, the best search time of
    each kept; then each result checked against the float64 reference on a sample of
    `verify_queries` queries. Returns {backend: record} (with `search_vs_faiss`,
    `total_vs_sklearn`, ... : this time over the peer's, below 1 is faster) and the sample.
    `floors`: also time the engine's bare GEMMs (the bench's floor; costs a search's time).
    `steady`: every backend searches all the queries once, kept as `first_search_s` (best of
    the repeats in `first_search_best_s`), then repeats the search until a quarter of a second
    went on the repeats (`process.STEADY_S`; at least once, at most `STEADY_MAX` times), the
    best of them timed as `search_s` (what a search repeated in a process takes: buffers, pages
    and choices made; the best of several because one timing of a search of a few
    milliseconds is at the mercy of the moment), their count and median in `steady_searches`
    and `steady_median_s`."""
    runs = list(backends)
    best: dict[str, dict] = {}
    times: dict[str, list[float]] = {}  # every repeat's search time, in order
    firsts: dict[str, list[float]] = {}  # with `steady`: every repeat's first search, in order
    calibrated: dict[str, float] = {}  # seconds of a calibration a worker made before its timed fit
    with tempfile.TemporaryDirectory(prefix="lookalike-bench-") as tmp:
        data = Path(tmp)
        np.save(data / "xb.npy", xb)
        np.save(data / "xq.npy", xq)
        (data / "options.json").write_text(json.dumps({"floors": floors, "steady": steady}))
        for rep in range(repeats):
            for b in runs:
                if progress:
                    print(f"[{rep + 1}/{repeats}] {b} ...", file=sys.stderr, flush=True)
                rec = _spawn(b, data, k, metric, precision)
                rec.setdefault("total_s", rec["fit_s"] + rec["search_s"])
                times.setdefault(b, []).append(rec["search_s"])
                if "first_search_s" in rec:
                    firsts.setdefault(b, []).append(rec["first_search_s"])
                if "calibration_s" in rec:  # the machine's first for this class: kept on the backend's best
                    calibrated[b] = rec["calibration_s"]
                if b not in best or rec["search_s"] < best[b]["search_s"]:
                    best[b] = rec
                if progress:
                    print(f"    fit {seconds(rec['fit_s'])}, search {seconds(rec['search_s'])}, "
                          f"peak RSS {rec['peak_rss_mb']:.0f} MB", file=sys.stderr, flush=True)
        sample = np.sort(np.random.default_rng(seed).permutation(len(xq))[: min(verify_queries, len(xq))])
        if progress:
            print(f"float64 reference (plain NumPy) on {len(sample)} queries ...", file=sys.stderr, flush=True)
        D_ref, I_ref = reference_knn(xq[sample], xb, k, metric, method="gemm")  # dense for non-GEMM metrics
        for b, rec in best.items():
            if b in calibrated:
                rec["calibration_s"] = calibrated[b]
            rec["repeat_search_s"] = times[b]
            if b in firsts:
                rec["repeat_first_search_s"] = firsts[b]
                rec["first_search_best_s"] = min(firsts[b])
            D, I = np.load(data / f"D_{b}.npy"), np.load(data / f"I_{b}.npy")
            rec |= check(xq[sample], xb, metric, D_ref, I_ref, D[sample], I[sample], exact=rec.get("exact", False))
    records = {b: best[b] for b in backends}
    for rec in records.values():
        for peer in PEERS:
            p = records.get(peer)
            for what in ("search", "total"):
                rec[f"{what}_vs_{peer}"] = rec[f"{what}_s"] / p[f"{what}_s"] if p else None
        sk = records.get("sklearn")
        rec["speedup_vs_sklearn"] = sk["search_s"] / rec["search_s"] if sk else None  # search only
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
    names = {p.name for p in out.iterdir()} if out.is_dir() else set()
    if {"manifest.json", "meta.sqlite"} <= names:
        raise InvalidParameter(f"--out {out}: is an index; give another --out")
    images = sorted(n for n in names if Path(n).suffix.lower() in IMAGE_EXTENSIONS and n != "bench.png")
    # bench.png among photos would be indexed by the next `index add` of the folder; a folder of
    # lookalike's own (the demo's: its pictures, and its bench) holds no photos
    if images and not is_own_folder(out):
        raise InvalidParameter(f"--out {out}: holds images ({images[0]}{', ...' if len(images) > 1 else ''}), "
                               "among which bench.png would be indexed; give another --out")
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
    need = 4 * data + 2**30 + max(0, nb * d * 8 + 2 * min(verified, 1024) * nb * 8 - 3 * data)
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
    from ..knn.validation import check_array
    from ..sources.split import split_indices

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
    """A backend name for the bench: a known, usable backend, `lookalike` with an @precision
    or `faiss` with an @setting of its BLAS threshold, that serves metric `m`."""
    name, _, forced = b.partition("@")
    if name not in BACKENDS:
        raise InvalidParameter(f"unknown backend {name!r}; choose among {', '.join(BACKENDS)}")
    if name not in available("cpu"):
        raise InvalidParameter(f"backend {name!r} is not usable here (not installed, or needs a GPU)")
    ok = (name == "lookalike" and forced in PRECISIONS) or (name == "faiss" and forced in FAISS_SETTINGS)
    if forced and not ok:
        raise InvalidParameter(f"{b!r}: only lookalike takes a precision (@{', @'.join(PRECISIONS)}) and faiss a "
                               f"BLAS setting (@{', @'.join(FAISS_SETTINGS)})")
    if not BACKENDS[name].is_usable_for(m, torch.device("cpu")):
        raise InvalidParameter(f"backend {name!r} does not serve metric {m.name!r}")


def _auto_is_not_fp32(m, d: int, nb: int, nq: int) -> bool:
    return screen_dtype("auto", torch.device("cpu"), m, d, nb, nq=nq) != torch.float32


def _spawn(backend: str, data: Path, k: int, metric: str, precision: str) -> dict:
    """Run one backend's worker; its user error is one line, its crash a bug with its traceback."""
    cmd = [sys.executable, "-m", "lookalike.bench.process", backend, str(data), str(k), metric, precision]
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


def _ratio(x: float | None) -> str:
    return f"{x:.2f}x" if x else "-"


def settings_text(r: dict, number=lambda t: f"{t:.3g}") -> str:
    """How FAISS's BLAS setting was chosen, in words (from its record's `settings`); `number`
    writes each time in seconds (the docs round them their own way)."""
    t, n = r["settings"], r["probe_queries"]
    text = f"on the first {n} queries BLAS {number(t['blas_probe_s'])} s, SIMD loop {number(t['simd_probe_s'])} s"
    if "blas_batch_s" in t:
        text += f"; on all queries BLAS {number(t['blas_batch_s'])} s, SIMD loop {number(t['simd_batch_s'])} s"
    return text + f"; kept {r['setting']}"


def table(result: dict) -> str:
    """The comparison as an aligned text table: fit, search and their sum apart; time ratios
    over FAISS's and scikit-learn's search (below 1: faster)."""
    head = (f"{'backend':<15} {'fit':>9} {'search':>9} {'total':>9} {'search/faiss':>12} "
            f"{'search/sklearn':>14} {'peak MB':>8} {'max |dD|':>9} {'sets differ':>11}  config")
    lines = [head, "-" * len(head)]
    floors = [r for r in result["results"] if "fp32_gemm_floor_s" in r]
    for r in result["results"]:
        lines.append(f"{r['backend']:<15} {seconds(r['fit_s']):>9} {seconds(r['search_s']):>9} "
                     f"{seconds(r['total_s']):>9} "
                     f"{_ratio(r.get('search_vs_faiss')):>12} {_ratio(r.get('search_vs_sklearn')):>14} "
                     f"{r['peak_rss_mb']:>8.0f} {r['max_abs_dist_diff']:>9.2e} "
                     f"{r['frac_neighbor_sets_differ']:>11.2%}  {r['config']}")
    firsts = [r for r in result["results"] if "first_search_best_s" in r]
    if firsts:
        lines.append("search: the best of repeated searches of all the queries in each process (a quarter "
                     "of a second of them, at most 20, after the first); the first took "
                     + ", ".join(f"{r['backend']} {seconds(r['first_search_best_s'])}" for r in firsts))
    for r in result["results"]:
        if "calibration_s" in r:
            lines.append(f"{r['backend']}: this machine had no calibration of auto for this shape class: measured "
                         f"(and the CPU kernels compiled) in {seconds(r['calibration_s'])} before its timed fit, "
                         "once (kept for later runs)")
    for r in result["results"]:
        if "settings" in r:
            lines.append(f"{r['backend']}: BLAS threshold chosen by timing both settings: " + settings_text(r))
    for r in floors:
        st = r.get("stages", {})
        lines.append(f"{r['backend']}: {st.get('screen_dtype')} screen; stages "
                     f"prepare {seconds(st.get('prepare_s', 0))}, "
                     f"screen {seconds(st.get('screen_s', 0))}, refine {seconds(st.get('refine_s', 0))}, "
                     f"rerank {seconds(st.get('rerank_s', 0))}, fallback {seconds(st.get('fallback_s', 0))}; "
                     f"{st.get('candidates', 0)} candidates in windows, {st.get('reranked', 0)} reranked in float64, "
                     f"{st.get('fallbacks', 0)} fallbacks; fp32 GEMM floor {seconds(r['fp32_gemm_floor_s'])} "
                     f"(search at {r['vs_fp32_floor']:.2f}x of it)"
                     + (f", int8 GEMM floor {seconds(r['int8_gemm_floor_s'])}" if "int8_gemm_floor_s" in r else ""))
        if st.get("screen_choice"):
            lines.append(f"{r['backend']}: this search's screen: {st['screen_choice']}")
    return "\n".join(lines)
