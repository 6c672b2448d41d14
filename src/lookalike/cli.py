"""The `lookalike` command: a thin shell over the library.

Library errors become one-line messages here and nowhere else: `lookalike: error: ...` on
stderr, exit status 2, no traceback for a user mistake.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from . import __version__
from .errors import LookalikeError


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} must be at least 1")
    return value


def _model_args(p: argparse.ArgumentParser) -> None:
    from .features.models import DEFAULT_MODEL, POOLINGS

    p.add_argument("--model", default=DEFAULT_MODEL, help=f"CNN for features (default {DEFAULT_MODEL}; or resnet50)")
    p.add_argument("--weights", default="imagenet", help="imagenet (default), none (random) or a weights file")
    p.add_argument("--pooling", default="max", choices=POOLINGS, help="pooling of the last feature map (default max)")
    p.add_argument("--input-size", type=_positive_int, default=None, help="network input side (default 96)")
    p.add_argument("--device", default="auto", help="auto (CUDA when present), cpu or cuda[:N]")
    p.add_argument("--precision", default="auto", choices=("auto", "fp32", "bf16"),
                   help="auto: bf16 where the hardware runs it fast and features stay within cosine 0.999")
    p.add_argument("--batch-size", type=_positive_int, default=None)
    p.add_argument("--gpu-memory", type=float, default=None, metavar="MIB",
                   help="GPU memory budget for the CNN, so a kNN library can share the card")
    p.add_argument("--compile", action="store_const", const=True, default="auto",
                   help="torch.compile the model (slow start, faster run; by default on the CPU from 20,000 images)")
    p.add_argument("--no-fast", dest="fast", action="store_false", help="plain eager PyTorch, no graph freezing")


def _embedder(args):
    from .features import DEFAULT_MODEL, Embedder

    return Embedder(args.model or DEFAULT_MODEL, weights=args.weights, pooling=args.pooling, input_size=args.input_size,
                    device=args.device, precision=args.precision, fast=args.fast, compile=args.compile,
                    batch_size=args.batch_size, gpu_memory=args.gpu_memory, progress=not args.quiet)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="lookalike", description="Search by image: CNN features + exact kNN.")
    parser.add_argument("--version", action="version", version=f"lookalike {__version__}")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("fetch", help="download a dataset (stl10)")
    p.add_argument("dataset", choices=("stl10",))
    p.add_argument("--root", default=None, help="folder to put it in (default: the lookalike cache)")
    p.add_argument("--url", default=None, help="where to download the archive from")
    p.add_argument("--md5", default=None, help="expected MD5 of the archive (known for the official URL)")
    p.add_argument("--keep-archive", action="store_true")

    p = sub.add_parser("show", help="draw random images of a source, titled with their ids")
    p.add_argument("source", help="sample[:N[:SEED]], stl10[:PATH], FILE.bin, FILE.npy or a folder")
    p.add_argument("--n", type=_positive_int, default=8)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True, help="PNG file to write")

    p = sub.add_parser("embed", help="extract CNN features of every image of a source")
    p.add_argument("source")
    _model_args(p)
    p.add_argument("--out", required=True, help="FEATURES.npy (a FEATURES.json sidecar goes beside it)")

    p = sub.add_parser("model", help="about the models")
    msub = p.add_subparsers(dest="model_command", required=True, metavar="ACTION")
    s = msub.add_parser("summary", help="layers, output shapes and parameter count")
    s.add_argument("name")
    s.add_argument("--input-size", type=_positive_int, default=None)
    s.add_argument("--pooling", default="max")
    msub.add_parser("list", help="the models lookalike knows")

    p = sub.add_parser("bench", help="compare kNN backends on one workload, verified")
    p.add_argument("--nb", type=_positive_int, default=90000)
    p.add_argument("--nq", type=_positive_int, default=10000)
    p.add_argument("--d", type=_positive_int, default=2048)
    p.add_argument("-k", "--k", type=_positive_int, default=3)
    p.add_argument("--metric", default="euclidean")
    p.add_argument("--features", default=None, help="real features (.npy) instead of synthetic data, split 9:1")
    p.add_argument("--backends", default=None, help="comma-separated, e.g. lookalike,faiss,sklearn")
    p.add_argument("--repeats", type=_positive_int, default=1)
    p.add_argument("--verify-queries", type=_positive_int, default=1000)
    p.add_argument("--precision", default="auto", choices=("auto", "fp32", "bf16", "int8"),
                   help="screen precision of lookalike's engine (results are exact whatever it is)")
    p.add_argument("--out", default="bench-out")

    from .cli_index import add_index_commands

    add_index_commands(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return COMMANDS[args.command](args) or 0
    except LookalikeError as exc:
        print(f"lookalike: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except (ValueError, TypeError) as exc:
        if not _is_user_error(exc):
            raise
        print(f"lookalike: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("lookalike: interrupted; finished work is kept, run the same command again to resume", file=sys.stderr)
        return 130
    except OSError as exc:
        print(f"lookalike: error: {exc.filename or ''}: {exc.strerror or exc}", file=sys.stderr)
        return 1


def _is_user_error(exc: Exception) -> bool:
    """ValueErrors raised by our own input checks (estimator parameters, arrays)."""
    tb = exc.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    return tb is not None and "lookalike" in tb.tb_frame.f_code.co_filename


def cmd_fetch(args) -> int:
    from .sources.fetch import fetch_stl10

    folder = fetch_stl10(args.root, args.url, args.md5, progress=not args.quiet, keep_archive=args.keep_archive)
    print(f"STL-10 is in {folder}")
    return 0


def cmd_show(args) -> int:
    from .report.grids import sample_grid
    from .sources import open_source

    source = open_source(args.source, progress=not args.quiet)
    out = sample_grid(source, args.n, seed=args.seed, out=args.out)
    _report_skipped(source)
    print(f"wrote {out}")
    return 0


def _report_skipped(source) -> None:
    if source.skipped:
        print(f"skipped {len(source.skipped)} unreadable file(s):", file=sys.stderr)
        for s in source.skipped:
            print(f"  {s.path}: {s.reason}", file=sys.stderr)


def cmd_embed(args) -> int:
    from pathlib import Path

    from .sources import open_source

    out = Path(args.out)
    if out.suffix != ".npy":
        raise LookalikeError(f"--out {out}: features are written as .npy; give a path ending in .npy")
    embedder = _embedder(args)
    source = open_source(args.source, size=embedder.input_size, progress=not args.quiet)
    features = embedder.embed(source, out)
    rate = len(source) / embedder.last_seconds if embedder.last_seconds else float("nan")
    _report_skipped(source)
    print(f"wrote {out} {features.shape} float32 ({embedder.model}, {embedder.weights_id}, "
          f"{embedder.pooling} pooling, {rate:.0f} images/s) and {out.with_suffix('.json')}")
    return 0


def cmd_model(args) -> int:
    from .features.models import MODELS
    from .features.summary import summary

    if args.model_command == "list":
        for name, spec in MODELS.items():
            print(f"{name:<20} {spec.channels}-d  {spec.weights_note}")
        return 0
    print(summary(args.name, args.input_size, args.pooling))
    return 0


def cmd_bench(args) -> int:
    from .bench import run, table

    backends = args.backends.split(",") if args.backends else None
    result = run(nb=args.nb, nq=args.nq, d=args.d, k=args.k, metric=args.metric, backends=backends,
                 features=args.features, repeats=args.repeats, verify_queries=args.verify_queries,
                 precision=args.precision, out=args.out, progress=not args.quiet)
    w = result["workload"]
    print(f"workload: {w['nq']} queries x {w['nb']} base x {w['d']}-d, k={w['k']}, {w['metric']}, "
          f"verified on {w['verified_queries']} queries against float64")
    print(table(result))
    print(f"wrote {args.out}/bench.json and {args.out}/bench.png")
    return 0


COMMANDS = {"fetch": cmd_fetch, "show": cmd_show, "embed": cmd_embed, "model": cmd_model, "bench": cmd_bench}


def _register_index_commands() -> None:
    from .cli_index import COMMANDS as INDEX_COMMANDS

    COMMANDS.update(INDEX_COMMANDS)


_register_index_commands()

if __name__ == "__main__":
    sys.exit(main())
