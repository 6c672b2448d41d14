"""Scaling curves of lookalike's exact engine, with FAISS's IndexFlat as the peer in the same
run: search time against nb (10^3 to 10^6 base vectors), nq, d and k, one parameter at a time.
lookalike runs at its `auto` precision (each point records the screen it took).

    python benchmarks/scaling.py --out docs/bench/scaling.json    # also writes scaling.png

Data: the feature-like synthetic set of `lookalike bench`. Each point is the best of
`--repeats` runs, lookalike and FAISS interleaved. Times are seconds of kneighbors only
(fit excluded); FAISS is given OPENBLAS_CORETYPE=SkylakeX on AVX-512 CPUs, as in the bench.
"""

from __future__ import annotations

import argparse
import json
import time

from lookalike.bench import machine, synthetic
from lookalike.knn import NearestNeighbors, available
from lookalike.knn.backends import FaissBackend

BASE = {"nb": 100_000, "nq": 1000, "d": 256, "k": 10}
SWEEPS = {
    "nb": [1_000, 10_000, 100_000, 1_000_000],
    "nq": [10, 100, 1_000, 10_000],
    "d": [64, 256, 1024, 2048],
    "k": [1, 10, 100, 1000],
}


def best_time(backend: str, xb, xq, k: int, repeats: int) -> tuple[float, object]:
    nn = NearestNeighbors(k, backend=backend, device="cpu").fit(xb)
    best, stats = float("inf"), None
    for _ in range(repeats):
        t0 = time.perf_counter()
        nn.kneighbors(xq)
        best = min(best, time.perf_counter() - t0)
        stats = nn.search_stats_  # None for FAISS
    return best, stats


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--out", default="docs/bench/scaling.json")
    args = ap.parse_args()
    FaissBackend.configure_blas()
    backends = ["lookalike"] + (["faiss"] if "faiss" in available() else [])
    points = []
    for param, values in SWEEPS.items():
        for v in values:
            w = {**BASE, param: v}
            xb, xq = synthetic(w["nb"], w["nq"], w["d"], clusters=min(1000, w["nb"] // 10))
            row = {"param": param, **w}
            for b in backends:
                t, stats = best_time(b, xb, xq, w["k"], args.repeats)
                row[f"{b}_s"] = t
                if stats is not None:  # of the last repeat
                    row["lookalike_screen"] = stats.screen_dtype
                    row["lookalike_candidates_per_query"] = stats.candidates / w["nq"]
                    row["lookalike_reranked_per_query"] = stats.reranked / w["nq"]
                    row["lookalike_fallbacks"] = stats.fallbacks
            points.append(row)
            print(json.dumps(row), flush=True)
    result = {"machine": machine(), "base": BASE, "repeats": args.repeats, "points": points}
    with open(args.out, "w") as f:
        json.dump(result, f, indent=1)
    plot(result, args.out.replace(".json", ".png"))


def plot(result: dict, out: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 4, figsize=(16, 3.8))
    for ax, param in zip(axes, SWEEPS):
        pts = [p for p in result["points"] if p["param"] == param]
        xs = [p[param] for p in pts]
        for key, label, style in (("lookalike_s", "lookalike (exact, auto precision)", "o-"),
                                  ("faiss_s", "FAISS IndexFlat", "s--")):
            if all(key in p for p in pts):
                ax.plot(xs, [p[key] for p in pts], style, label=label)
        ax.set_xscale("log")
        ax.set_yscale("log")
        fixed = ", ".join(f"{k}={v:,}" for k, v in result["base"].items() if k != param)
        ax.set_title(f"time vs {param}\n({fixed})", fontsize=9)
        ax.set_xlabel(param)
        ax.set_ylabel("search seconds")
        ax.grid(True, which="both", alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out, dpi=100)


if __name__ == "__main__":
    main()
