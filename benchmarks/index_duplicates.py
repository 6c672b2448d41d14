"""Near-duplicate groups at scale: time and peak memory of `lookalike index duplicates`' core
(`lookalike.index.groups.near_duplicates`) against FAISS's exact range search, in the same run.

Synthetic feature-like data (clustered, non-negative like max-pooled ReLU features), written
to a .npy file and memory-mapped as an index's vectors are, with planted duplicates: exact
copies and altered copies (small noise). Each engine runs in a process of its own on the same
file, with the same threshold; each child reports its own peak resident memory (VmHWM).

    python benchmarks/index_duplicates.py --n 100000 --d 1280 --out docs/bench/index-duplicates.json
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

SRC = str(Path(__file__).resolve().parents[1] / "src")


def make_data(path: Path, n: int, d: int, dups: int, seed: int = 0) -> list[tuple[int, int]]:
    """Write (n, d) float32 vectors to `path` in blocks; return the planted pairs (a, b), a < b."""
    rng = np.random.default_rng(seed)
    centres = rng.gamma(1.0, 1.0, (256, d)).astype(np.float32)
    out = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(n, d))
    for lo in range(0, n, 8192):
        hi = min(lo + 8192, n)
        c = centres[rng.integers(0, len(centres), hi - lo)]
        out[lo:hi] = np.maximum(c + rng.normal(0, 1.0, (hi - lo, d)).astype(np.float32), 0)
    originals = rng.choice(n - dups, dups, replace=False)
    copies = n - dups + np.arange(dups)  # the last rows become copies of earlier ones
    for j, (a, b) in enumerate(zip(originals, copies)):
        noise = 0 if j % 2 == 0 else rng.normal(0, 0.05, d).astype(np.float32)  # half exact, half altered
        out[b] = np.maximum(out[a] + noise, 0)
    out.flush()
    del out
    return sorted((int(a), int(b)) for a, b in zip(originals, copies))


def child(engine: str, path: str, threshold: float, queries: int, result: str) -> None:
    """Run one engine on the vectors at `path` (the first `queries` rows asking against all);
    write its pairs and time to `result`."""
    t0 = time.perf_counter()
    vectors = np.load(path, mmap_mode="r")
    if engine == "lookalike":
        from lookalike.index.groups import near_duplicates

        found = near_duplicates(vectors, np.arange(len(vectors)), "euclidean", threshold, progress=False,
                                queries=queries)
        pairs = sorted(found.distances)
        groups = len(found.groups)
    else:
        import faiss

        x = np.ascontiguousarray(vectors)  # FAISS needs the vectors in memory
        index = faiss.IndexFlatL2(x.shape[1])
        index.add(x)
        pairs = []
        for lo in range(0, queries, 4096):
            lims, _, ids = index.range_search(x[lo:min(lo + 4096, queries)], threshold**2)
            for q in range(len(lims) - 1):
                for j in ids[lims[q]:lims[q + 1]]:
                    if j > lo + q:
                        pairs.append((lo + q, int(j)))
        pairs.sort()
        groups = None
    seconds = time.perf_counter() - t0
    Path(result).write_text(json.dumps({"seconds": seconds, "pairs": pairs, "groups": groups,
                                        "peak_rss_mib": peak_rss_mib()}))


def peak_rss_mib() -> float:
    """This process's peak resident memory (VmHWM: of this program alone; `ru_maxrss` would
    also count the parent's memory that the child had before its exec)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


def run(engine: str, path: Path, threshold: float, queries: int, work: Path) -> dict:
    result = work / f"{engine}.json"
    env = {**os.environ, "PYTHONPATH": SRC}
    proc = subprocess.Popen([sys.executable, __file__, "--child", engine, str(path), repr(threshold), str(queries),
                             str(result)], env=env)
    if proc.wait() != 0:
        raise SystemExit(f"{engine} failed with status {proc.returncode}")
    return json.loads(result.read_text())


def cpu_name() -> str:
    from lookalike.hardware import cpu_model

    return cpu_model()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=100_000)
    p.add_argument("--d", type=int, default=1280)
    p.add_argument("--dups", type=int, default=500, help="planted duplicate pairs")
    p.add_argument("--peer", default="faiss", choices=["faiss", "none"])
    p.add_argument("--out", default=None, help="write the results as JSON here")
    p.add_argument("--queries", type=int, default=None,
                   help="only the first Q rows ask, against all N (same memory, time ~ Q/N of the whole; "
                        "planted copies sit in the last rows, so their pairs are counted only when Q = N)")
    p.add_argument("--child", nargs=5, metavar=("ENGINE", "PATH", "T", "Q", "RESULT"), help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        engine, path, t, q, result = args.child
        return child(engine, path, float(t), int(q), result)

    sys.path.insert(0, SRC)
    from lookalike.bench.provenance import finish, libraries, machine, provenance
    from lookalike.index.groups import FRACTION, default_threshold

    record = provenance()

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        path = work / "vectors.npy"
        planted = make_data(path, args.n, args.d, args.dups)
        threshold = default_threshold(np.load(path, mmap_mode="r"), "euclidean")
        print(f"{args.n} x {args.d}, {args.dups} planted pairs; threshold {threshold:.4g} "
              f"({FRACTION} x median random-pair distance)", flush=True)
        queries = args.n if args.queries is None else min(args.queries, args.n)
        results = {"lookalike": run("lookalike", path, threshold, queries, work)}
        if args.peer != "none":
            results[args.peer] = run(args.peer, path, threshold, queries, work)
    found = {tuple(x) for x in results["lookalike"]["pairs"]}
    report = {
        "n": args.n, "d": args.d, "queries": queries, "planted_pairs": args.dups, "threshold": threshold,
        "cpu": cpu_name(), "cores": os.cpu_count(), "date": time.strftime("%Y-%m-%d %H:%M"),
        "planted_found": sum(tuple(pr) in found for pr in planted),
        "engines": {k: {"seconds": round(v["seconds"], 2), "peak_rss_mib": round(v["peak_rss_mib"]),
                        "pairs": len(v["pairs"]), "groups": v["groups"]} for k, v in results.items()},
    }
    if args.peer != "none":
        report["same_pairs_as_peer"] = results["lookalike"]["pairs"] == results[args.peer]["pairs"]
        report["time_vs_peer"] = round(results["lookalike"]["seconds"] / results[args.peer]["seconds"], 2)
        report["rss_vs_peer"] = round(results["lookalike"]["peak_rss_mib"] / results[args.peer]["peak_rss_mib"], 2)
    report |= {"machine": machine(), "libraries": libraries(), "provenance": finish(record)}
    print(json.dumps(report, indent=1))
    if args.out:
        Path(args.out).write_text(json.dumps(report, indent=1) + "\n")


if __name__ == "__main__":
    main()
