"""`bench`: the tutorial's comparison of kNN backends, each verified against float64. Exit
status 1 when a backend's neighbours disagree with the reference, naming it."""

from __future__ import annotations

import argparse
import sys

from .common import BOUNDS, add_k


def register(sub) -> None:
    """Add bench to the subparsers `sub`."""
    from ..knn.precision import SCREEN_PRECISIONS

    p = sub.add_parser("bench", help="compare kNN backends on one workload, verified")
    p.add_argument("--nb", type=BOUNDS["bench", "--nb"], default=90000, help="base vectors (default 90000)")
    p.add_argument("--nq", type=BOUNDS["bench", "--nq"], default=10000, help="query vectors (default 10000)")
    p.add_argument("--d", type=BOUNDS["bench", "--d"], default=2048, help="dimensions (default 2048)")
    add_k(p)
    p.add_argument("--metric", default="euclidean")
    p.add_argument("--features", default=None, help="real features (.npy) instead of synthetic data, split 9:1")
    p.add_argument("--backends", default=None,
                   help="comma-separated, e.g. lookalike,faiss,sklearn (faiss: both BLAS settings, the better kept; "
                        "lookalike@fp32, faiss@blas, faiss@simd: one setting)")
    p.add_argument("--repeats", type=BOUNDS["bench", "--repeats"], default=1)
    p.add_argument("--verify-queries", type=BOUNDS["bench", "--verify-queries"], default=1000)
    p.add_argument("--precision", default="auto", choices=SCREEN_PRECISIONS,
                   help="screen precision of lookalike's engine (results are exact whatever it is)")
    p.add_argument("--steady", action="store_true",
                   help="time each backend's repeated searches of the queries, the best of those in a quarter "
                        "of a second (at most 20); the first search is reported beside it")
    p.add_argument("--out", default="bench-out")
    p.set_defaults(run=bench)


def bench(args: argparse.Namespace) -> int:
    from ..bench import run, table

    backends = args.backends.split(",") if args.backends else None
    result = run(nb=args.nb, nq=args.nq, d=args.d, k=args.k, metric=args.metric, backends=backends,
                 features=args.features, repeats=args.repeats, verify_queries=args.verify_queries,
                 precision=args.precision, out=args.out, progress=not args.quiet,
                 command=["lookalike", *sys.argv[1:]], steady=args.steady)
    w = result["workload"]
    print(f"workload: {w['nq']} queries x {w['nb']} base x {w['d']}-d, k={w['k']}, {w['metric']}, "
          f"verified on {w['verified_queries']} queries against a float64 NumPy brute force")
    print(table(result))
    print(f"wrote {args.out}/bench.json and {args.out}/bench.png")
    if result["disagree"]:  # a wrong answer, however fast, fails the bench
        worst = {r["backend"]: r for r in result["results"]}
        detail = ", ".join(f"{b} ({worst[b]['frac_neighbor_sets_differ_beyond_ties']:.2%} of neighbour sets differ "
                           f"beyond ties, max |dD| {worst[b]['max_abs_dist_diff']:.2g})" for b in result["disagree"])
        print(f"lookalike: error: disagree with the float64 reference: {detail}", file=sys.stderr)
        return 1
    return 0
