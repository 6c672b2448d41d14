"""CLI commands of the index and the demo: index (build, add, info), search, grid, demo."""

from __future__ import annotations

import json
import sys

from .errors import LookalikeError


def add_index_commands(sub) -> None:
    from .cli import _model_args, _positive_int

    p = sub.add_parser("index", help="build an index (index SOURCE --out INDEX), add to it, or show it",
                       usage="lookalike index SOURCE --out INDEX [options]\n"
                             "       lookalike index add INDEX SOURCE\n"
                             "       lookalike index info INDEX [--json]")
    p.add_argument("args", nargs="+", metavar="ARG", help="SOURCE | add INDEX SOURCE | info INDEX")
    p.add_argument("--out", help="the index folder to create")
    p.add_argument("--metric", default="euclidean", help="euclidean (default), cosine, inner_product, ...")
    p.add_argument("--json", action="store_true", help="info as JSON")
    _model_args(p)
    p.set_defaults(model=None)  # `index add` checks a --model against the index's only when given

    p = sub.add_parser("search", help="the k most similar indexed images of each query image")
    p.add_argument("index")
    p.add_argument("images", nargs="*", metavar="IMAGE")
    p.add_argument("-k", "--k", type=int, default=3)
    p.add_argument("--id", type=int, action="append", default=[], help="search by an indexed image (repeatable)")
    p.add_argument("--json", action="store_true")

    p = sub.add_parser("grid", help="the tutorial's figure: queries and their neighbours, titled with distances")
    p.add_argument("index")
    p.add_argument("--queries", type=_positive_int, default=5)
    p.add_argument("-k", "--k", type=int, default=3)
    p.add_argument("--query-ids", type=int, nargs="+", default=None)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True)

    p = sub.add_parser("demo", help="the whole tutorial, offline, in one command")
    p.add_argument("--out", default="demo-out")
    p.add_argument("--dataset", choices=("sample", "stl10"), default="sample")
    p.add_argument("--n", type=_positive_int, default=2000, help="images in the sample set (default 2000)")
    p.add_argument("-k", "--k", type=_positive_int, default=3)
    p.add_argument("--stl10-root", default=None, help="where STL-10 is (default: the lookalike cache)")


def cmd_index(args) -> int:
    from .cli import _report_skipped
    from .index import Index
    from .sources import open_source

    words = args.args
    if words[0] == "add":
        if len(words) != 3:
            raise LookalikeError("usage: lookalike index add INDEX SOURCE")
        index = Index(words[1])
        source = open_source(words[2], size=int(index.manifest["input_shape"][0]), progress=not args.quiet)
        before = index.count
        added = index.add(source, model=args.model, progress=not args.quiet)
        _report_skipped(source)
        print(f"added {added} image(s) to {index.path}: {before} -> {index.count}")
        return 0
    if words[0] == "info":
        if len(words) != 2:
            raise LookalikeError("usage: lookalike index info INDEX")
        info = Index(words[1]).info()
        if args.json:
            print(json.dumps(info, indent=1))
        else:
            for key in ("path", "count", "model", "weights", "pooling", "input_shape", "dim", "metric",
                        "precision", "format_version", "segments", "vector_bytes", "labels"):
                print(f"{key:<15} {info.get(key)}")
        return 0
    if len(words) != 1 or not args.out:
        raise LookalikeError("usage: lookalike index SOURCE --out INDEX")
    from .cli import _embedder

    embedder = _embedder(args)
    source = open_source(words[0], size=embedder.input_size, progress=not args.quiet)
    index = Index.build(source, args.out, metric=args.metric, embedder=embedder)
    _report_skipped(source)
    print(f"indexed {index.count} image(s) into {index.path} ({embedder.model}, {index.manifest['dim']}-d, "
          f"{index.metric})")
    return 0


def cmd_search(args) -> int:
    from .index import Index

    if not args.images and not args.id:
        raise LookalikeError("give query IMAGE files or --id N")
    index = Index(args.index)
    results = []
    if args.images:
        results += index.search_images(args.images, args.k)
    if args.id:
        results += index.search_ids(args.id, args.k)
    if args.json:
        print(json.dumps([r.as_dict() for r in results], indent=1))
    else:
        for r in results:
            print(f"query: {r.query}")
            if r.error:
                print(f"  error: {r.error}")
            for n in r.neighbours:
                print(f"  {n.rank}. distance {n.distance:.4f}  id {n.id}  {n.key}  "
                      f"label {n.label or '-'}  {n.location}")
    failed = [r for r in results if r.error]
    for r in failed:
        print(f"lookalike: error: {r.error}", file=sys.stderr)
    return 1 if failed else 0


def cmd_grid(args) -> int:
    from .index import Index
    from .report.grids import neighbour_grid, pick, result_arrays

    index = Index(args.index)
    index.check_k(args.k)
    ids = args.query_ids or pick(index.count, args.queries, args.seed).tolist()
    distances, neighbours = result_arrays(index.search_ids(ids, args.k))
    out = neighbour_grid(index, ids, index, distances, neighbours, args.out)
    print(f"wrote {out}")
    return 0


def cmd_demo(args) -> int:
    from .demo import run_demo

    report = run_demo(args.out, dataset=args.dataset, n=args.n, k=args.k, stl10_root=args.stl10_root,
                      progress=not args.quiet)
    print(f"wrote {report}")
    return 0


COMMANDS = {"index": cmd_index, "search": cmd_search, "grid": cmd_grid, "demo": cmd_demo}
