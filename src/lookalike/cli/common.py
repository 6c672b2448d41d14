"""What several command modules share: argument types, the model options, skipped files.

Argument types raise `argparse.ArgumentTypeError`, which the parser turns into one line
naming the option and the value (`lookalike search: error: argument -k/--k: k=0 is out of
range ...`), exit status 2. Every number a user can type has a bound here: `BOUNDS` names
the bound of each numeric option of each command, and `bound_options` gives it to options
declared with a plain `int`, `float` or `positive_int` (README, "Limits").
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Callable

DEFAULT_K = 3
MAX_K = 100_000
MAX_SEED = 2**32 - 1
MAX_ID = 2**63 - 1  # ids are SQLite integers


def whole_number(lo: int, hi: int) -> Callable[[str], int]:
    """The type of an option that must be a whole number in [lo, hi]."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text[:40]!r} is not an integer") from None
        if not lo <= value <= hi:
            shown = str(value) if len(str(value)) <= 20 else f"{str(value)[:12]}... ({len(str(value))} digits)"
            raise argparse.ArgumentTypeError(f"{shown} is out of range: {lo} to {hi}")
        return value

    parse.__name__ = f"integer from {lo} to {hi}"
    parse.bounds = (lo, hi)  # type: ignore[attr-defined]
    return parse


def positive_int(text: str) -> int:
    """An option's value that must be a whole number of at least 1 (counts, sizes); options
    that take it get their upper bound from `BOUNDS`."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text[:40]!r} is not an integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} must be at least 1")
    return value


def seed_value(text: str) -> int:
    """A random seed: a whole number from 0 to 2**32 - 1."""
    return whole_number(0, MAX_SEED)(text)


def image_id(text: str) -> int:
    """An indexed image's id: a whole number from 0 (the index says which ids it holds)."""
    return whole_number(0, MAX_ID)(text)


def mib(text: str) -> float:
    """A memory budget in MiB: a finite number from 1 to 2**24 (16 TiB)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text[:40]!r} is not a number of MiB") from None
    if not (math.isfinite(value) and 1 <= value <= 2**24):
        raise argparse.ArgumentTypeError(f"{value:g} MiB is out of range: a finite number from 1 to {2**24}")
    return value


def k_value(text: str) -> int:
    """`-k`, the number of neighbours: an integer from 1 to MAX_K. Every command that takes
    `-k` checks it here, so the message is the same everywhere; the upper bound of a search
    (the size of the index) is the index's to check."""
    try:
        k = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"k={text[:40]!r} is not an integer; k is how many neighbours, 1 or more") \
            from None
    if k < 1:
        raise argparse.ArgumentTypeError(f"k={k} is out of range: k is how many neighbours, 1 or more")
    if k > MAX_K:
        raise argparse.ArgumentTypeError(f"k={k if k < 10**20 else '1e20+'} is out of range: at most {MAX_K} "
                                         "neighbours")
    return k


def mid_value(text: str) -> str:
    """Mid-level features, BLOCK:POOLING:WEIGHT joined by + or none (see `lookalike.features.mid`)."""
    from ..errors import InvalidParameter
    from ..features.mid import mid_text, parse_mid

    try:
        return mid_text(parse_mid(text))
    except InvalidParameter as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def add_mid(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--mid", type=mid_value, default=None, metavar="BLOCK:POOLING:WEIGHT",
                        help="mid-level features appended to the final vector: a block's output (0-based), "
                             "pooled (max, avg, gem), weighted, e.g. 10:max:0.5; several joined by +; none "
                             "(default: the model's own; docs/quality.md)")


def views_value(text: str) -> str:
    """Views joined by + (see `lookalike.features.views.parse_views`)."""
    from ..errors import InvalidParameter
    from ..features.views import parse_views

    try:
        return parse_views(text)
    except InvalidParameter as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def input_size(text: str) -> int:
    """The network's input side in pixels (see `lookalike.features.models.check_input_size`)."""
    from ..features.models import MAX_INPUT_SIZE, MIN_INPUT_SIZE

    return whole_number(MIN_INPUT_SIZE, MAX_INPUT_SIZE)(text)


# (command, option) -> the type of a numeric option: what `bound_options` gives options
# declared as plain numbers. Image grids are pictures: a hundred tiles is a big one.
BOUNDS: dict[tuple[str, str], Callable[[str], object]] = {
    ("show", "--n"): whole_number(1, 100),
    ("show", "--seed"): seed_value,
    ("grid", "--seed"): seed_value,
    ("grid", "--queries"): whole_number(1, 100),
    ("grid", "--query-ids"): image_id,
    ("search", "--id"): image_id,
    ("index remove", "--id"): image_id,
    ("index duplicates", "--show"): whole_number(0, 10**6),
    ("demo", "--n"): whole_number(10, 100_000),
    ("bench", "--nb"): whole_number(1, 10**8),
    ("bench", "--nq"): whole_number(1, 10**7),
    ("bench", "--d"): whole_number(1, 65_536),
    ("bench", "--repeats"): whole_number(1, 100),
    ("bench", "--verify-queries"): whole_number(1, 100_000),
    ("calibrate", "--d"): whole_number(1, 65_536),
}
UNBOUNDED = (int, float, positive_int)


def bound_options(parser: argparse.ArgumentParser, command: str = "") -> None:
    """Give each numeric option declared with an unbounded type its bound from `BOUNDS`,
    in every subcommand of `parser`; a numeric option without one is an error of ours."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                bound_options(sub, name if not command else f"{command} {name}")
        elif action.type in UNBOUNDED and action.option_strings:
            key = next(((command, o) for o in action.option_strings if (command, o) in BOUNDS), None)
            if key is None:
                raise RuntimeError(f"internal: {command} {action.option_strings[0]} has no bound in BOUNDS")
            action.type = BOUNDS[key]


def add_k(parser: argparse.ArgumentParser, default: int = DEFAULT_K) -> None:
    """The `-k/--k` option, the same for search, grid, demo and bench."""
    parser.add_argument("-k", "--k", type=k_value, default=default, metavar="K",
                        help=f"neighbours per query, 1 to {MAX_K} (default {default})")


def add_model_args(parser: argparse.ArgumentParser) -> None:
    """The options that choose and run the CNN (embed, index build)."""
    from ..features.models import DEFAULT_MODEL, MAX_BATCH, MAX_INPUT_SIZE, MIN_INPUT_SIZE, POOLINGS
    from ..features.precision import PRECISIONS

    p = parser
    p.add_argument("--model", default=DEFAULT_MODEL, help=f"CNN for features (default {DEFAULT_MODEL}; or resnet50)")
    p.add_argument("--weights", default="imagenet", help="imagenet (default), none (random) or a weights file")
    p.add_argument("--pooling", default=None, choices=POOLINGS,
                   help="pooling of the last feature map: max, avg, gem (generalised mean) or none "
                        "(default: the model's own, chosen by measurement; docs/quality.md)")
    p.add_argument("--input-size", type=input_size, default=None,
                   help=f"network input side, {MIN_INPUT_SIZE} to {MAX_INPUT_SIZE} pixels (default: the model's)")
    p.add_argument("--views", type=views_value, default=None,
                   help="views of each image whose descriptors are summed, joined by +: full, centre, mirror, "
                        "grey (default: the model's own; docs/quality.md)")
    add_mid(p)
    p.add_argument("--device", default="auto", help="auto (CUDA when present), cpu or cuda[:N]")
    p.add_argument("--precision", default="auto", choices=PRECISIONS,
                   help="auto: bf16 where the hardware runs it fast and features stay within cosine 0.999")
    p.add_argument("--batch-size", type=whole_number(1, MAX_BATCH), default=None,
                   help=f"images per forward pass, 1 to {MAX_BATCH} (default: 64, on a GPU 256, or what memory allows)")
    p.add_argument("--gpu-memory", type=mib, default=None, metavar="MIB",
                   help="GPU memory budget for the CNN, so a kNN library can share the card")
    p.add_argument("--compile", action="store_const", const=True, default="auto",
                   help="torch.compile the model (slow start, faster run; by default on the CPU from 20,000 images)")
    p.add_argument("--no-fast", dest="fast", action="store_false", help="plain eager PyTorch, no graph freezing")
    add_runtime(p)


def add_runtime(parser: argparse.ArgumentParser) -> None:
    """`--runtime`: what runs the CNN (every command that embeds images)."""
    from ..features.runtimes import RUNTIMES

    parser.add_argument("--runtime", default="auto", choices=RUNTIMES,
                        help="what runs the CNN: auto (default: the fastest here, measured once, among those "
                             "installed), torch, onnxruntime or openvino (CPU; the network exported once to "
                             "ONNX; pip install 'lookalike[onnx]' or 'lookalike[openvino]'); the vectors stay "
                             "comparable")


def embedder_from_args(args: argparse.Namespace):
    """The `Embedder` that the options of `add_model_args` (and `-q`) describe, with a batch
    size that fits in memory (refused up front, in one line, when even one image would not)."""
    from ..features import Embedder
    from ..features.models import fit_batch
    from ..hardware import resolve_device

    batch = fit_batch(args.model, args.input_size, args.batch_size, resolve_device(args.device))
    return Embedder(args.model, weights=args.weights, pooling=args.pooling, input_size=args.input_size,
                    views=args.views, mid=args.mid, device=args.device, precision=args.precision, fast=args.fast,
                    compile=args.compile, batch_size=batch, gpu_memory=args.gpu_memory, runtime=args.runtime,
                    progress=not args.quiet)


def report_skipped(source) -> None:
    """List on stderr the files of `source` that were not used, and why: one line each, with
    control characters in names and reasons escaped, so a crafted file name cannot fake a
    line of output."""
    from ..text import printable

    if source.skipped:
        print(f"skipped {len(source.skipped)} file(s):", file=sys.stderr)
        for s in source.skipped:
            print(f"  {printable(s.path)}: {printable(s.reason)}", file=sys.stderr)
