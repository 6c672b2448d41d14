"""Keeping an index: `index remove`, `index compact`, `index verify`, `index duplicates`."""

from __future__ import annotations

import argparse
import json

from ..errors import BadIndex, InvalidParameter
from ..text import printable

ACTIONS = ("remove", "compact", "verify", "duplicates")
MAX_THRESHOLD = 1e15  # beyond any distance of float32 features that a search could hold pairs for


def register(actions, add_lock_timeout) -> None:
    """Add remove, compact, verify and duplicates to the `index` subcommands `actions`."""
    r = actions.add_parser("remove", help="mark images removed: search never returns them again",
                           description="Mark images removed, all in one transaction; an id, key or source that "
                                       "names no image is an error that changes nothing. Their vectors stay on "
                                       "disk until `lookalike index compact`. Ids of other images never change.")
    r.add_argument("index", metavar="INDEX")
    r.add_argument("--id", type=int, nargs="+", action="extend", default=[], metavar="N", dest="ids",
                   help="the images with these ids")
    r.add_argument("--key", nargs="+", action="extend", default=[], metavar="KEY", dest="keys",
                   help="the images with these keys (a file's path in its folder, sample/00007, ...)")
    r.add_argument("--source", nargs="+", action="extend", default=[], metavar="SPEC", dest="sources",
                   help="every image that came from this source (as given to index add, or its folder)")
    add_lock_timeout(r)
    r.set_defaults(run=remove)

    c = actions.add_parser("compact", help="rewrite the vectors without those of removed images",
                           description="Rewrite the vector files without the vectors of removed images, "
                                       "atomically (a crash at any moment leaves the old or the new index whole); "
                                       "no id changes.")
    c.add_argument("index", metavar="INDEX")
    add_lock_timeout(c)
    c.set_defaults(run=compact)

    v = actions.add_parser("verify", help="check everything; one line per problem, exit 2 on damage",
                           description="Check SQLite's integrity, every vector file's size, shape and checksum, "
                                       "the counts, manifest.json and the thumbnails. Prints one line per "
                                       "problem and exits with status 2 if there is any.")
    v.add_argument("index", metavar="INDEX")
    v.set_defaults(run=verify)

    d = actions.add_parser("duplicates", help="groups of near-duplicate images",
                           description="Every pair of images within distance T, by the exact engine's radius "
                                       "search (memory-bounded: never an N x N matrix), joined into groups "
                                       "(connected components), largest first.")
    d.add_argument("index", metavar="INDEX")
    d.add_argument("--threshold", type=threshold_arg, default=None, metavar="T",
                   help="the largest distance of a pair (default: 0.3 x the median distance between two "
                        "images of the index picked at random, estimated on 20,000 random pairs)")
    d.add_argument("--out", default=None, metavar="GROUPS.json", help="write the groups as JSON")
    d.add_argument("--picture", default=None, metavar="GROUPS.png", help="draw the largest groups")
    d.add_argument("--show", type=int, default=10, metavar="N", help="groups listed on the terminal (default 10)")
    d.set_defaults(run=duplicates)


def threshold_arg(text: str) -> float:
    from ..index.groups import check_threshold

    try:
        value = check_threshold(text)
    except InvalidParameter as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    if value > MAX_THRESHOLD:
        raise argparse.ArgumentTypeError(f"threshold {text[:40]!r} is out of range: 0 to {MAX_THRESHOLD:g}")
    return value


def remove(args: argparse.Namespace) -> int:
    from ..index import Index

    if not (args.ids or args.keys or args.sources):
        raise InvalidParameter("say what to remove: --id N, --key KEY or --source SPEC")
    index = Index(args.index, lock_timeout=args.lock_timeout)
    removed = index.remove(ids=args.ids, keys=args.keys, sources=args.sources)
    shown = ", ".join(map(str, removed[:20])) + (", ..." if len(removed) > 20 else "")
    print(f"removed {len(removed)} image(s) from {printable(index.path)} (ids {shown}); {index.count} remain")
    return 0


def compact(args: argparse.Namespace) -> int:
    from ..index import Index

    index = Index(args.index, lock_timeout=args.lock_timeout)
    before, after = index.compact()
    if before == after:
        print(f"{printable(index.path)}: nothing to compact ({after} vectors, none removed)")
    else:
        print(f"compacted {printable(index.path)}: {before} -> {after} vectors; ids unchanged")
    return 0


def verify(args: argparse.Namespace) -> int:
    from ..index import Index
    from ..index.store import IndexStore

    store = IndexStore(args.index)
    from ..index.verify import problems

    found = problems(store)
    for line in found:
        print(printable(line))
    if found:
        raise BadIndex(f"{args.index}: {len(found)} problem(s) found; the index is damaged")
    index = Index(args.index)
    info = index.info()
    print(f"{printable(index.path)}: whole ({index.count} images, {info['segments']} segment(s), "
          f"{info['vector_bytes']:,} bytes of vectors checked, {info['thumbnails']} thumbnail(s))")
    return 0


def duplicates(args: argparse.Namespace) -> int:
    from pathlib import Path

    from ..atomic import atomic_write_text, check_output_file
    from ..index import Index
    from ..index.groups import near_duplicates
    from ..report.figures import check_figure_out
    from ..report.grids import group_grid

    index = Index(args.index)
    if args.out:  # outputs checked before the work
        check_output_file(args.out, suffixes=(".json",), what="groups file")
    if args.picture:
        folders = [index.path, *(Path(s) for s in index.store.sources() if Path(s).is_dir())]
        check_figure_out(args.picture, inputs=folders)
    found = near_duplicates(index.vectors(), index.ids(), index.metric, args.threshold, progress=not args.quiet)
    how = "default: 0.3 x median random-pair distance" if found.default_threshold else "given"
    in_groups = sum(len(g) for g in found.groups)
    print(f"{len(found.groups)} group(s) of near-duplicates, {in_groups} of {found.images} images, "
          f"{found.pairs} pair(s) within distance {found.threshold:.4g} ({how})")
    metas = {m.id: m for m in index.images(sorted({i for g in found.groups[:args.show] for i in g}))}
    for n, group in enumerate(found.groups[:args.show], 1):
        names = ", ".join(f"{i} {printable(metas[i].key)}" for i in group[:6])
        print(f"  {n}. {len(group)} images: {names}" + (", ..." if len(group) > 6 else ""))
    if args.out:
        atomic_write_text(args.out, json.dumps(found.as_dict(), indent=1))
        print(f"wrote {printable(args.out)}")
    if args.picture:
        out = group_grid(index, found.groups, args.picture, threshold=found.threshold)
        print(f"wrote {printable(out)}")
    return 0
