"""The distributed search and embedding against the single-machine run, on this machine.

Same data, same run: the single-machine `lookalike.NearestNeighbors` (the exact engine) and
`Embedder`, then `lookalike.dask` on a LocalCluster of 1 and of 2 worker processes (each
worker gets cores // workers threads). Every distributed result is checked to be identical
(search) or within 1e-4 (embedding) to the single-machine one. Times are the best of
`--repeats`; the cluster's first search and first embedding (workers import torch and build
the model) are reported apart as `cold_s`. What the ratio measures on one machine is the
overhead of the cluster (tasks, shard files read back, the merge, pickling results), not a
speed-up: two workers share the same two cores the single run uses.

    python benchmarks/dask_scale.py --out docs/bench/dask_scale.json

Also records the engine's per-shard rate (query x base pairs per second, and GFLOP/s for
GEMM metrics) that docs/scaling.md scales up.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time
from pathlib import Path


def best(fn, repeats: int) -> tuple[float, object]:
    times, out = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return min(times), out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--nb", type=int, default=100_000)
    ap.add_argument("--nq", type=int, default=1_000)
    ap.add_argument("--d", type=int, default=128)
    ap.add_argument("--precision", default="fp32", help="the engine's screen, the same in both runs")
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--images", type=int, default=256)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--shard-rows", type=int, default=20_000, help="per-shard rate: rows of the shard")
    ap.add_argument("--shard-d", type=int, default=2048, help="per-shard rate: its dimension")
    ap.add_argument("--out", default="docs/bench/dask_scale.json")
    args = ap.parse_args()

    import dask
    import numpy as np

    from lookalike import Embedder, NearestNeighbors
    from lookalike.bench.provenance import finish, libraries, machine, provenance
    from lookalike.dask import ClusterEmbedder
    from lookalike.dask import NearestNeighbors as ClusterNeighbors
    from lookalike.dask.cluster import connect
    from lookalike.sources import open_source

    rng = np.random.default_rng(0)
    X = rng.standard_normal((args.nb, args.d), dtype=np.float32)
    Q = rng.standard_normal((args.nq, args.d), dtype=np.float32)
    record = provenance()
    result = {"machine": machine(), "libraries": libraries(), "load_average": os.getloadavg(),
              "nb": args.nb, "nq": args.nq, "d": args.d,
              "k": args.k, "precision": args.precision, "images": args.images, "repeats": args.repeats,
              "search": {}, "embed": {}}

    result["per_shard"] = per_shard(args)
    nn = NearestNeighbors(n_neighbors=args.k, backend="lookalike", precision=args.precision).fit(X)
    single_s, (D0, I0) = best(lambda: nn.kneighbors(Q), args.repeats)
    result["search"]["single"] = {"s": single_s, "pairs_per_s": args.nb * args.nq / single_s,
                                  "gflops": 2 * args.nb * args.nq * args.d / single_s / 1e9,
                                  "screen": nn.screen_dtype_}
    # the images as a .npy source: a task reopens its piece of it in microseconds (a sample:N
    # spec would rebuild the whole sample set in every task: 1.7 s for 256 images here)
    images_npy = Path(tempfile.mkdtemp(prefix="dask-scale-")) / "images.npy"
    sample = open_source(f"sample:{args.images}")
    np.save(images_npy, sample.read(np.arange(len(sample))))
    source = open_source(images_npy)
    embedder = Embedder(progress=False)
    embedder.embed_array(source.read(np.arange(min(64, args.images))))  # traced once, as each worker does
    single_embed_s, F0 = best(lambda: embedder.embed(source), args.repeats)
    result["embed"]["single"] = {"s": single_embed_s, "images_per_s": args.images / single_embed_s}
    print(json.dumps(result, indent=1), flush=True)

    for w in args.workers:
        with connect(f"local:{w}") as client:
            t0 = time.perf_counter()
            dnn = ClusterNeighbors(args.k, client=client, precision=args.precision).fit(X)
            fit_s = time.perf_counter() - t0
            t0 = time.perf_counter()
            dask.compute(*dnn.kneighbors(Q))
            cold = time.perf_counter() - t0
            s, (D, I) = best(lambda: dask.compute(*dnn.kneighbors(Q)), args.repeats)
            assert np.array_equal(I, I0) and np.array_equal(D, D0), "distributed search differs"
            result["search"][f"{w}_workers"] = {"s": s, "cold_s": cold, "fit_s": fit_s, "shards": len(dnn.shards_),
                                                "vs_single": s / single_s}
            ce = ClusterEmbedder(Embedder(progress=False), client)
            t0 = time.perf_counter()
            ce.embed(source)
            cold = time.perf_counter() - t0
            s, F = best(lambda: ce.embed(source), args.repeats)
            assert np.abs(F - F0).max() < 1e-4, "distributed embedding differs"
            result["embed"][f"{w}_workers"] = {"s": s, "cold_s": cold, "chunks": ce.last_run.chunks,
                                               "images_per_s": args.images / s, "vs_single": s / single_embed_s}
        print(json.dumps(result, indent=1), flush=True)
    result["provenance"] = finish(record)
    with open(args.out, "w") as f:
        json.dump(result, f, indent=1)
    shutil.rmtree(images_npy.parent)


def per_shard(args) -> dict:
    """One search task as a worker runs it (`search_shard`: the shard read from a .npy file and
    prepared, the engine, the float64 distances of its k best), at the plan's dimension."""
    import numpy as np

    from lookalike.dask.neighbors import search_shard
    from lookalike.dask.shards import Shard

    rng = np.random.default_rng(1)
    xb = rng.standard_normal((args.shard_rows, args.shard_d), dtype=np.float32)
    xq = rng.standard_normal((args.nq, args.shard_d), dtype=np.float32)
    out = {"rows": args.shard_rows, "d": args.shard_d, "nq": args.nq, "k": args.k}
    with tempfile.TemporaryDirectory() as folder:
        np.save(f"{folder}/shard.npy", xb)
        shard = Shard(f"{folder}/shard.npy", 0, args.shard_rows, 0)
        s, _ = best(lambda: search_shard(xq, shard, args.k, "euclidean", False, device="cpu",
                                         precision=args.precision), args.repeats)
    out |= {"precision": args.precision, "s": s, "pairs_per_s": args.shard_rows * args.nq / s,
            "gflops": 2 * args.shard_rows * args.nq * args.shard_d / s / 1e9}
    print(json.dumps(out), flush=True)
    return out


if __name__ == "__main__":
    main()
