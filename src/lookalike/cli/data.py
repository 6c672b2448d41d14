"""Images and features: `fetch`, `show`, `embed`, `model list|summary`."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..text import printable
from .common import add_model_args, embedder_from_args, input_size, positive_int, report_skipped
from .scheduler import add_scheduler, on_scheduler

SOURCE_HELP = "sample[:N[:SEED]], stl10[:PATH], FILE_X.bin, FILE.npy or a folder of images"


def register(sub) -> None:
    """Add fetch, show, embed and model to the subparsers `sub`."""
    from ..features.models import POOLINGS

    p = sub.add_parser("fetch", help="download a dataset (stl10)")
    p.add_argument("dataset", choices=("stl10",))
    p.add_argument("--root", default=None, help="folder to put it in (default: the lookalike cache)")
    p.add_argument("--url", default=None, help="where to download the archive from")
    p.add_argument("--md5", default=None, help="expected MD5 of the archive (known for the official URL)")
    p.add_argument("--keep-archive", action="store_true")
    p.set_defaults(run=fetch)

    p = sub.add_parser("show", help="draw random images of a source, titled with their ids and labels")
    p.add_argument("source", help=SOURCE_HELP)
    p.add_argument("--n", type=positive_int, default=8)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True, help="picture to write: .png, .jpg, .webp, .tif, .pdf or .svg")
    p.set_defaults(run=show)

    p = sub.add_parser("embed", help="extract CNN features of every image of a source")
    p.add_argument("source", help=SOURCE_HELP)
    add_model_args(p)
    p.add_argument("--out", required=True, help="FEATURES.npy (a FEATURES.json sidecar goes beside it)")
    add_scheduler(p)
    p.set_defaults(run=embed)

    p = sub.add_parser("model", help="about the models")
    actions = p.add_subparsers(dest="model_command", required=True, metavar="ACTION")
    s = actions.add_parser("summary", help="layers, output shapes and parameter count")
    s.add_argument("name")
    s.add_argument("--input-size", type=input_size, default=None, help="network input side, 32 to 1024 pixels")
    s.add_argument("--pooling", default=None, choices=POOLINGS, help="default: the model's own")
    s.set_defaults(run=model_summary)
    s = actions.add_parser("list", help="the models lookalike knows")
    s.set_defaults(run=model_list)


def fetch(args: argparse.Namespace) -> int:
    from ..sources.fetch import fetch_stl10

    folder = fetch_stl10(args.root, args.url, args.md5, progress=not args.quiet, keep_archive=args.keep_archive)
    print(f"STL-10 is in {folder}")
    return 0


def show(args: argparse.Namespace) -> int:
    from ..report.figures import check_figure_out
    from ..report.grids import sample_grid
    from ..sources import open_source

    out = check_figure_out(args.out, inputs=_input_paths(args.source))  # before any image is read
    source = open_source(args.source, progress=not args.quiet)
    out = sample_grid(source, args.n, seed=args.seed, out=out)
    report_skipped(source)
    print(f"wrote {printable(out)}")
    return 0


def embed(args: argparse.Namespace) -> int:
    from ..features.files import check_features_out, sidecar_path
    from ..sources import open_source

    out = check_features_out(args.out, inputs=_input_paths(args.source))  # before the model is loaded
    embedder = embedder_from_args(args)
    source = open_source(args.source, size=embedder.input_size, progress=not args.quiet)
    try:
        with on_scheduler(args.scheduler, embedder, args.device) as embedder:
            features = embedder.embed(source, out)
    finally:  # the files left out are listed whatever happens next
        report_skipped(source)
    rate = len(source) / embedder.last_seconds if embedder.last_seconds else float("nan")
    print(f"wrote {printable(out)} {features.shape} float32 ({embedder.model}, {embedder.weights_id}, "
          f"{embedder.pooling} pooling, {rate:.0f} images/s) and {printable(sidecar_path(out))}")
    return 0


def _input_paths(spec: str) -> list[Path]:
    """The file or folder a source spec names, if it names one (`stl10:PATH` too): what an
    output must not overwrite."""
    path = Path(spec.removeprefix("stl10:"))
    return [path] if spec not in ("stl10", "sample") and path.exists() else []


def model_list(args: argparse.Namespace) -> int:
    from ..features.models import MODELS, build, output_dim

    for name, spec in MODELS.items():
        # the length embed writes: the final layer's channels, plus the default mid-level taps'
        net, _, _ = build(name, weights="none", mid=spec.mid, progress=False)  # no weights read: ~0.1 s
        dim = output_dim(spec, spec.pooling, spec.input_size, net)
        parts = "" if dim == spec.channels else f" ({spec.channels} final + {dim - spec.channels} mid-level {spec.mid})"
        print(f"{name:<20} {dim}-d{parts}  {spec.pooling} pooling, {spec.metric}  {spec.weights_note}")
    return 0


def model_summary(args: argparse.Namespace) -> int:
    from ..features.summary import summary

    print(summary(args.name, args.input_size, args.pooling))
    return 0
