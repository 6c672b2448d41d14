"""Scaling curves of lookalike's exact engine, with FAISS's IndexFlat as the peer in the same
run: search time against nb (10^3 to 10^6 base vectors), nq (1 to 10^4), d (64 to 4096) and k
(1 to 1000), one parameter at a time around a shared base configuration (which the sweeps
that hold its value measure again: a reading of the run's own noise), and the demo's own
search (200 queries x 2,000 images of EfficientNet-Lite0 shape, 1280-d, cosine, k = 3).

    python benchmarks/scaling.py                       # every sweep, ~5 minutes on 2 quiet cores
    python benchmarks/scaling.py --sweeps demo,nq      # some sweeps
    python benchmarks/scaling.py --values nb=1000:100000 --repeats 3
    python benchmarks/docs.py                          # then render docs/benchmarks.md from the JSON

The default base configuration (nb 20,000, nq 1,000, d 256, k 10) keeps every point within a
few seconds; the nb sweep's 10^6 rows stay at d = 256 (1 GiB of float32) and the d sweep's
4096 dimensions at nb = 20,000, so the whole run takes minutes and fits in 8 GiB.

How each point is measured (`lookalike.bench.measure`, as `lookalike bench` does):
- data: the feature-like synthetic set of `lookalike bench`, euclidean (the demo: cosine);
- every backend variant runs in a process of its own (no two OpenMP runtimes in one
  process), repeats interleaved (lookalike, faiss, lookalike, faiss, ...), the best
  search time of each kept; times are seconds of kneighbors only (fit reported apart);
- each process searches all the queries once, then repeats the search for a quarter of a
  second (at most 20 times) and times each: the best repeat is the search time (a search
  repeated in a process, as a service or a batch job repeats it: buffers grown, pages
  given, choices made; the best of several, because one timing of a search of a few
  milliseconds is at the mercy of the moment), the first is kept beside it (`*_first_s`,
  `first_vs_faiss`): it also pays what a process pays once for a search of that size
  (lookalike's buffer of nq x nb scores growing from the warm-up's into fresh pages, a
  probe; FAISS's first use of its blocks);
- lookalike runs at its `auto` precision (each point records the screen it took, why, and
  whether the search took the small-size path: every score in one block); FAISS with
  OPENBLAS_CORETYPE=SkylakeX on AVX-512 CPUs (set before it loads), as many threads as
  cores, and both settings of its distance_compute_blas_threshold (BLAS GEMM or its SIMD
  loop) timed in its worker, the better kept and named (`lookalike.bench.process.faiss_setting`);
- every result is verified against a float64 brute force in plain NumPy on `--verify`
  queries: lookalike must return the reference's very neighbour sets, FAISS its sets within
  its float32 error bound. A disagreement is written into the JSON and the script exits 1
  naming the backend and the point.
"""

from __future__ import annotations

import argparse
import json
import sys

from lookalike.bench import libraries, machine, measure, provenance, synthetic
from lookalike.bench.provenance import finish
from lookalike.knn import available

BASE = {"nb": 20_000, "nq": 1000, "d": 256, "k": 10}
SWEEPS = {
    "nb": [1_000, 10_000, 100_000, 1_000_000],
    "nq": [1, 10, 100, 1_000, 10_000],
    "d": [64, 256, 1024, 4096],
    "k": [1, 10, 100, 1000],
    "demo": [2_000],  # nb of the demo's search: 200 queries, 1280-d, cosine, k = 3
}
DEMO = {"nq": 200, "d": 1280, "k": 3}


def point(param: str, value: int, backends: list[str], repeats: int, verify: int) -> dict:
    """One point of a sweep: every backend measured and verified."""
    if param == "demo":
        w, metric = {"nb": value, **DEMO}, "cosine"
    else:
        w, metric = {**BASE, param: value}, "euclidean"
    xb, xq = synthetic(w["nb"], w["nq"], w["d"], clusters=min(1000, w["nb"] // 10))
    records, _ = measure(xb, xq, w["k"], metric, backends, repeats=repeats, verify_queries=verify,
                         progress=False, floors=False, steady=True)
    row = {"param": param, **w, "metric": metric}
    if param == "demo":
        row["demo"] = value
    for b, rec in records.items():
        row[f"{b}_s"] = rec["search_s"]
        row[f"{b}_fit_s"] = rec["fit_s"]
        row[f"{b}_repeats_s"] = rec["repeat_search_s"]
        row[f"{b}_first_s"] = rec["first_search_best_s"]  # the first search of the queries in its process
        row[f"{b}_first_repeats_s"] = rec["repeat_first_search_s"]
        row[f"{b}_agree"] = rec["agree"]
        row[f"{b}_sets_differ"] = rec["frac_neighbor_sets_differ"]
        row[f"{b}_config"] = rec["config"]
        if "setting" in rec:  # FAISS's BLAS threshold: both timed, the better kept
            row[f"{b}_setting"] = rec["setting"]
            row[f"{b}_settings"] = rec.get("settings")
        st = rec.get("stages")
        if st:
            row["lookalike_screen"] = st["screen_dtype"]
            row["lookalike_candidates_per_query"] = st["candidates"] / w["nq"]
            row["lookalike_reranked_per_query"] = st["reranked"] / w["nq"]
            row["lookalike_fallbacks"] = st["fallbacks"]
            row["lookalike_path"] = st.get("path", "")
            row["lookalike_choice"] = st.get("screen_choice", "")
    if "faiss_s" in row:
        row["search_vs_faiss"] = row["lookalike_s"] / row["faiss_s"]
        row["first_vs_faiss"] = row["lookalike_first_s"] / row["faiss_first_s"]
    return row


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--verify", type=int, default=200, help="queries verified against float64 at each point")
    ap.add_argument("--sweeps", default=",".join(SWEEPS), help="which sweeps (comma-separated: nb,nq,d,k,demo)")
    ap.add_argument("--values", default=None, help="PARAM=V1:V2,... to measure fewer points, e.g. nb=1000:100000")
    ap.add_argument("--out", default="docs/bench/scaling.json")
    args = ap.parse_args(argv)
    origin = provenance(["python", "benchmarks/scaling.py", *(argv if argv is not None else sys.argv[1:])])
    unknown = [p for p in args.sweeps.split(",") if p not in SWEEPS]
    if unknown:
        ap.error(f"unknown sweep {unknown[0]!r}; choose among {', '.join(SWEEPS)}")
    sweeps = {p: SWEEPS[p] for p in args.sweeps.split(",")}
    for spec in filter(None, (args.values or "").split(",")):
        p, _, vals = spec.partition("=")
        sweeps[p] = [int(v) for v in vals.split(":")]
    backends = ["lookalike"] + (["faiss"] if "faiss" in available() else [])
    points = []
    for param, values in sweeps.items():
        for v in values:
            row = point(param, v, backends, args.repeats, args.verify)
            points.append(row)
            print(json.dumps({k: row[k] for k in row if not k.endswith("_config")}), flush=True)
    disagree = [f"{b} at {p['param']}={p[p['param']]}" for p in points for b in backends if not p[f"{b}_agree"]]
    result = {"machine": machine(), "libraries": libraries(), "provenance": finish(origin), "base": BASE,
              "repeats": args.repeats, "verified_queries": args.verify, "points": points, "disagree": disagree}
    with open(args.out, "w") as f:
        json.dump(result, f, indent=1)
    plot(result, args.out.replace(".json", ".png"))
    if disagree:
        print(f"scaling: disagree with the float64 reference: {', '.join(disagree)}", file=sys.stderr)
        return 1
    return 0


def plot(result: dict, out: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    params = list(dict.fromkeys(p["param"] for p in result["points"]))
    fig, axes = plt.subplots(1, len(params), figsize=(4 * len(params), 3.8), squeeze=False)
    for ax, param in zip(axes[0], params):
        pts = [p for p in result["points"] if p["param"] == param]
        xs = [p[param] for p in pts]
        for key, label, style in (("lookalike_s", "lookalike (exact, auto precision)", "o-"),
                                  ("faiss_s", "FAISS IndexFlat (better BLAS setting)", "s--")):
            if all(key in p for p in pts):
                ax.plot(xs, [p[key] for p in pts], style, label=label)
        ax.set_xscale("log")
        ax.set_yscale("log")
        fixed = ", ".join(f"{k}={v:,}" for k, v in (DEMO if param == "demo" else result["base"]).items()
                          if k != param)
        ax.set_title(f"search time vs {param}\n({fixed})", fontsize=9)
        ax.set_xlabel(param)
        ax.set_ylabel("search seconds (best of repeats)")
        ax.grid(True, which="both", alpha=0.3)
    axes[0][0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out, dpi=100)


if __name__ == "__main__":
    sys.exit(main())
