"""The index and what is searched in it: `index build|add|info`, `search`, `grid`.

`lookalike index SOURCE --out INDEX` is short for `lookalike index build SOURCE --out INDEX`
(`expand_shorthand`): the word after `index` is taken as a SOURCE when it is not one of the
actions and not an option, so a source literally named `build`, `add` or `info` must be
given with `index build`.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence

from ..errors import InvalidParameter
from ..text import distance, printable
from .upkeep import ACTIONS as UPKEEP
from .upkeep import register as register_upkeep
from .common import add_k, add_model_args, add_runtime, embedder_from_args, positive_int, report_skipped
from .scheduler import add_scheduler, on_scheduler

ACTIONS = ("build", "add", "info", *UPKEEP)
# lookalike's other commands: a word after `index` that names one is a mistake, not a source
COMMANDS = ("fetch", "show", "embed", "model", "search", "grid", "bench", "calibrate", "eval", "demo", "serve")
INFO_KEYS = ("path", "count", "removed", "model", "weights", "pooling", "views", "mid", "input_shape", "dim", "metric",
             "precision", "embedded_with", "format_version", "segments", "vector_bytes", "labels", "thumbnails",
             "thumbnail_bytes", "screen", "screen_batch")


def expand_shorthand(argv: Sequence[str]) -> list[str]:
    """`index SOURCE ...` -> `index build SOURCE ...`; any other command line is returned as it is.

    The options before the command (`-q`, `--version`, `-h`) take no value, so the command is
    the first word that does not start with '-'.
    """
    argv = list(argv)
    at = next((i for i, a in enumerate(argv) if not a.startswith("-")), None)
    if at is None or argv[at] != "index" or at + 1 >= len(argv):
        return argv
    word = argv[at + 1]
    if word in ACTIONS or word.startswith("-"):
        return argv
    if word in COMMANDS and not os.path.lexists(word):  # `index search IX Q` for `search IX Q`
        raise InvalidParameter(f"index {word}: {word} is not an action of index but a command of its own: "
                               f"lookalike {word} ... (see 'lookalike {word} --help')")
    return [*argv[:at + 1], "build", *argv[at + 1:]]


def register(sub) -> None:
    """Add index (build, add, info), search and grid to the subparsers `sub`."""
    p = sub.add_parser("index", help="build an index, add, remove, verify, compact, find near-duplicates",
                       description="An index folder: vectors, per-image metadata and a manifest. "
                                   "`lookalike index SOURCE --out INDEX` is short for `index build` (a source "
                                   "named build, add or info must be given as `index build NAME --out INDEX`).")
    actions = p.add_subparsers(dest="index_command", required=True, metavar="ACTION")

    b = actions.add_parser("build", help="embed every image of SOURCE into a new index folder")
    b.add_argument("source", metavar="SOURCE", help="sample[:N[:SEED]], stl10[:PATH], FILE.npy or a folder")
    b.add_argument("--out", required=True, metavar="INDEX", help="the index folder to create")
    b.add_argument("--metric", default=None,
                   help="euclidean, cosine, inner_product, ... (default: the model's own; docs/quality.md)")
    add_thumbnail_arg(b)
    add_model_args(b)
    add_scheduler(b)
    b.set_defaults(run=build)

    a = actions.add_parser("add", help="embed the images of SOURCE with the index's own model and append them",
                           description="Embed the images of SOURCE with INDEX's own model, weights and "
                                       "preprocessing, and append them in one commit. (To build an index from "
                                       "a source named add: lookalike index build add --out INDEX.)")
    a.add_argument("index", metavar="INDEX")
    a.add_argument("source", metavar="SOURCE")
    a.add_argument("--model", default=None, help="fail unless the index was built with this model")
    a.add_argument("--keep-duplicates", action="store_true",
                   help="add images the index holds already (same file or position, same pixels) again")
    add_thumbnail_arg(a)
    add_lock_timeout(a)
    a.set_defaults(run=add)

    i = actions.add_parser("info", help="what the index holds and how it was made; exit 2 if it is damaged")
    i.add_argument("index", metavar="INDEX")
    i.add_argument("--json", action="store_true", help="as JSON")
    i.add_argument("--quick", action="store_true",
                   help="check the vector files' sizes only, not their checksums (for very large indexes)")
    i.set_defaults(run=info)
    register_upkeep(actions, add_lock_timeout)

    s = sub.add_parser("search", help="the k most similar indexed images of each query image")
    s.add_argument("index", metavar="INDEX")
    s.add_argument("images", nargs="*", metavar="IMAGE")
    add_k(s)
    s.add_argument("--id", type=int, action="append", default=[], help="search by an indexed image (repeatable)")
    s.add_argument("--json", action="store_true")
    add_runtime(s)
    s.set_defaults(run=search)

    g = sub.add_parser("grid", help="the tutorial's figure: queries and their neighbours, titled with distances")
    g.add_argument("index", metavar="INDEX")
    g.add_argument("--queries", type=positive_int, default=5, help="random indexed images as queries (default 5)")
    add_k(g)
    g.add_argument("--query-ids", type=int, nargs="+", default=None, help="these indexed images as queries")
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--out", required=True, help="picture to write: .png, .jpg, .webp, .tif, .pdf or .svg")
    g.set_defaults(run=grid)


def add_thumbnail_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--no-thumbnails", dest="thumbnails", action="store_false",
                   help="store no thumbnails (a JPEG of about 1-5 KB per image, kept in the index so that "
                        "pictures and results can show an image whose file has moved)")


def add_lock_timeout(p: argparse.ArgumentParser) -> None:
    p.add_argument("--lock-timeout", type=non_negative_float, default=None, metavar="SECONDS",
                   help="how long to wait for another writer's commit (default: $LOOKALIKE_LOCK_TIMEOUT, else 120)")


MAX_LOCK_TIMEOUT = 86_400  # a day


def non_negative_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not 0 <= value <= MAX_LOCK_TIMEOUT:
        raise argparse.ArgumentTypeError(f"{text[:40]!r} is out of range: 0 to {MAX_LOCK_TIMEOUT} seconds")
    return value


def build(args: argparse.Namespace) -> int:
    from ..index import Index
    from ..index.index import check_new_index
    from ..sources import open_source

    check_new_index(args.out)  # before the model is loaded and the images read
    embedder = embedder_from_args(args)
    source = open_source(args.source, size=embedder.input_size, progress=not args.quiet)
    try:
        with on_scheduler(args.scheduler, embedder, args.device) as embedder:
            index = Index.build(source, args.out, metric=args.metric, embedder=embedder,
                                thumbnails=args.thumbnails)
    finally:  # the files left out are listed whatever happens next
        report_skipped(source)
    print(f"indexed {index.count} image(s) into {printable(index.path)} ({embedder.model}, "
          f"{index.manifest['dim']}-d, {index.metric})")
    return 0


def add(args: argparse.Namespace) -> int:
    from ..index import Index
    from ..sources import open_source

    index = Index(args.index, lock_timeout=args.lock_timeout)
    source = open_source(args.source, size=int(index.manifest["input_shape"][0]), progress=not args.quiet)
    before = index.count
    try:
        done = index.add_images(source, model=args.model, progress=not args.quiet,
                                keep_duplicates=args.keep_duplicates, thumbnails=args.thumbnails)
    finally:  # the files left out are listed whatever happens next
        report_skipped(source)
    skipped = (f"; skipped {done.duplicates} already in the index (--keep-duplicates adds them again)"
               if done.duplicates else "")
    print(f"added {done.added} image(s) to {printable(index.path)}: {before} -> {index.count}{skipped}")
    return 0


def info(args: argparse.Namespace) -> int:
    """Print what the index holds; exit 2 with one line if its files are damaged (after the
    description, which helps to tell what it was)."""
    from ..index import Index

    index = Index(args.index)
    about = index.info() | _screens(index)
    try:
        index.check(checksums=not args.quick)
    finally:
        if args.json:
            print(json.dumps(about, indent=1))
        else:
            for key in INFO_KEYS:
                print(f"{key:<15} {about.get(key)}")
    return 0


def _screens(index) -> dict:
    """The screen a search of this index takes, and why: the calibration's prediction for one
    query and for a batch, where this machine has measured the index's shape class (its first
    search measures it; info itself measures nothing)."""
    from ..knn.calibrate import PLAN_QUERIES, cached
    from ..knn.metrics import get_metric

    dim, count = index.manifest.get("dim"), index.count
    if not dim or not count:
        return {}
    m = get_metric(index.metric)
    if not m.gemm:
        return {"screen": f"{m.name} is screened by cdist in float64 (no GEMM screen)"}
    cal = cached(torch_device("cpu"), m, int(dim))
    if cal is None:
        return {"screen": "auto, not calibrated on this machine yet (the first search measures it, in a second or "
                          "a few)"}
    return {"screen": cal.explain(count, 1), "screen_batch": cal.explain(count, PLAN_QUERIES)}


def torch_device(name: str):
    import torch

    return torch.device(name)


def search(args: argparse.Namespace) -> int:
    """Print each query's neighbours; exit status 1 when some query images could not be read
    (the others are answered)."""
    from ..index import Index

    if not args.images and not args.id:
        raise InvalidParameter("give query IMAGE files or --id N")
    index = Index(args.index)
    results = []
    if args.images:
        embedder = None if args.runtime == "auto" else index.embedder(progress=False, runtime=args.runtime)
        results += index.search_images(args.images, args.k, embedder=embedder)
    if args.id:
        results += index.search_ids(args.id, args.k)
    if args.json:
        print(json.dumps([r.as_dict() for r in results], indent=1))
    else:
        for r in results:
            print(f"query: {printable(r.query)}")
            if r.error:
                print(f"  error: {printable(r.error)}")
            for n in r.neighbours:
                print(f"  {n.rank}. distance {distance(n.distance)}  id {n.id}  {printable(n.key)}  "
                      f"label {printable(n.label or '-')}  {printable(n.location)}")
    failed = [r for r in results if r.error]
    for r in failed:
        print(f"lookalike: error: {printable(r.error)}", file=sys.stderr)
    return 1 if failed else 0


def grid(args: argparse.Namespace) -> int:
    from pathlib import Path

    from ..index import Index
    from ..report.figures import check_figure_out
    from ..report.grids import neighbour_grid, pick, result_arrays

    index = Index(args.index)
    folders = [index.path, *(Path(s) for s in index.store.sources() if Path(s).is_dir())]
    out = check_figure_out(args.out, inputs=folders)
    index.check_k(args.k, by_id=True)
    live = index.ids()  # ids of removed images are never drawn
    ids = args.query_ids or [live[j] for j in pick(len(live), args.queries, args.seed)]
    distances, neighbours = result_arrays(index.search_ids(ids, args.k))
    out = neighbour_grid(index, ids, index, distances, neighbours, out)
    fewer = "" if args.query_ids or len(ids) == args.queries else \
        f" ({len(ids)} queries: the index holds {len(live)} image(s), fewer than --queries {args.queries})"
    print(f"wrote {printable(out)}{fewer}")
    return 0
