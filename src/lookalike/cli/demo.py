"""`demo`: the whole tutorial, offline, in one command."""

from __future__ import annotations

import argparse

from ..text import printable
from .common import add_k, positive_int


def register(sub) -> None:
    """Add demo to the subparsers `sub`."""
    from ..demo import DATASETS

    p = sub.add_parser("demo", help="the whole tutorial, offline, in one command")
    p.add_argument("--out", default="demo-out", help="folder for report.md and its pictures (default demo-out)")
    p.add_argument("--dataset", choices=DATASETS, default="sample")
    p.add_argument("--n", type=positive_int, default=2000, help="images in the sample set (default 2000)")
    add_k(p)
    p.add_argument("--stl10-root", default=None, help="where STL-10 is (default: the lookalike cache)")
    p.add_argument("--force", action="store_true",
                   help="write into a folder that holds other files (only the demo's own file names are replaced)")
    p.set_defaults(run=demo)


def demo(args: argparse.Namespace) -> int:
    from ..demo import run_demo

    report = run_demo(args.out, dataset=args.dataset, n=args.n, k=args.k, stl10_root=args.stl10_root,
                      progress=not args.quiet, force=args.force)
    print(f"wrote {printable(report)}")
    return 0
