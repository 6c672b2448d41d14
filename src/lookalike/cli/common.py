"""What several command modules share: argument types, the model options, skipped files.

Argument types raise `argparse.ArgumentTypeError`, which the parser turns into one line
naming the option and the value (`lookalike search: error: argument -k/--k: k=0 is out of
range ...`), exit status 2.
"""

from __future__ import annotations

import argparse
import sys

DEFAULT_K = 3


def positive_int(text: str) -> int:
    """An option's value that must be a whole number of at least 1 (counts, sizes)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} must be at least 1")
    return value


def k_value(text: str) -> int:
    """`-k`, the number of neighbours: an integer of at least 1. Every command that takes
    `-k` checks it here, so the message is the same everywhere; the upper bound (the size of
    the index) is the index's to check."""
    try:
        k = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"k={text!r} is not an integer; k is how many neighbours, 1 or more") \
            from None
    if k < 1:
        raise argparse.ArgumentTypeError(f"k={k} is out of range: k is how many neighbours, 1 or more")
    return k


def add_k(parser: argparse.ArgumentParser, default: int = DEFAULT_K) -> None:
    """The `-k/--k` option, the same for search, grid, demo and bench."""
    parser.add_argument("-k", "--k", type=k_value, default=default, metavar="K",
                        help=f"neighbours per query, 1 or more (default {default})")


def add_model_args(parser: argparse.ArgumentParser) -> None:
    """The options that choose and run the CNN (embed, index build)."""
    from ..features.models import DEFAULT_MODEL, POOLINGS
    from ..features.precision import PRECISIONS

    p = parser
    p.add_argument("--model", default=DEFAULT_MODEL, help=f"CNN for features (default {DEFAULT_MODEL}; or resnet50)")
    p.add_argument("--weights", default="imagenet", help="imagenet (default), none (random) or a weights file")
    p.add_argument("--pooling", default="max", choices=POOLINGS, help="pooling of the last feature map (default max)")
    p.add_argument("--input-size", type=positive_int, default=None, help="network input side (default 96)")
    p.add_argument("--device", default="auto", help="auto (CUDA when present), cpu or cuda[:N]")
    p.add_argument("--precision", default="auto", choices=PRECISIONS,
                   help="auto: bf16 where the hardware runs it fast and features stay within cosine 0.999")
    p.add_argument("--batch-size", type=positive_int, default=None)
    p.add_argument("--gpu-memory", type=float, default=None, metavar="MIB",
                   help="GPU memory budget for the CNN, so a kNN library can share the card")
    p.add_argument("--compile", action="store_const", const=True, default="auto",
                   help="torch.compile the model (slow start, faster run; by default on the CPU from 20,000 images)")
    p.add_argument("--no-fast", dest="fast", action="store_false", help="plain eager PyTorch, no graph freezing")


def embedder_from_args(args: argparse.Namespace):
    """The `Embedder` that the options of `add_model_args` (and `-q`) describe."""
    from ..features import Embedder

    return Embedder(args.model, weights=args.weights, pooling=args.pooling, input_size=args.input_size,
                    device=args.device, precision=args.precision, fast=args.fast, compile=args.compile,
                    batch_size=args.batch_size, gpu_memory=args.gpu_memory, progress=not args.quiet)


def report_skipped(source) -> None:
    """List on stderr the files of `source` that were not used, and why: one line each, with
    control characters in names and reasons escaped, so a crafted file name cannot fake a
    line of output."""
    from ..text import printable

    if source.skipped:
        print(f"skipped {len(source.skipped)} file(s):", file=sys.stderr)
        for s in source.skipped:
            print(f"  {printable(s.path)}: {printable(s.reason)}", file=sys.stderr)
