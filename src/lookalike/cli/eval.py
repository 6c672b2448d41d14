"""`eval`: the copy-detection benchmark on the user's own images (recall@1, recall@k, MRR)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ..text import printable
from .common import add_k, add_mid, add_runtime, input_size, seed_value, views_value

KIND = "eval"  # the marker of eval's own output folder
OUTPUTS = ("eval.json", "report.md", "misses.png")


def register(sub) -> None:
    """Add eval to the subparsers `sub`."""
    from ..features.models import DEFAULT_MODEL, POOLINGS
    from ..quality.configs import FIELDS, PRESETS
    from ..quality.edits import DEFAULT_EDITS, EDITS
    from ..sources.decode import RESIZES

    p = sub.add_parser(
        "eval", help="how well copies of your images find their originals (recall@1, recall@k, MRR)",
        description="Index the originals of SOURCE (and --distractors), query with edited copies of each "
                    "original, and report recall@1, recall@k and MRR per edit; misses.png shows each miss.")
    p.add_argument("source", help="the originals: a folder of images, a .npy file, sample:N, ...")
    p.add_argument("--model", default=DEFAULT_MODEL, help=f"CNN for features (default {DEFAULT_MODEL}; or resnet50)")
    p.add_argument("--weights", default="imagenet", help="imagenet (default), none (random) or a weights file")
    p.add_argument("--pooling", default=None, choices=[x for x in POOLINGS if x != "none"],
                   help="default: the model's own")
    p.add_argument("--metric", default=None, help="euclidean, cosine, ... (default: the model's own)")
    p.add_argument("--input-size", type=input_size, default=None, help="network input side (default: the model's)")
    p.add_argument("--views", type=views_value, default=None,
                   help="views summed per image, joined by +: full, centre, mirror, grey (default: the model's)")
    add_mid(p)
    p.add_argument("--resize", default=None, choices=RESIZES,
                   help="how a non-square image becomes square: crop the centre or pad (default: lookalike's)")
    p.add_argument("--distractors", default=None, metavar="SOURCE",
                   help="other images indexed beside the originals, that no copy should find")
    p.add_argument("--edits", default=",".join(DEFAULT_EDITS),
                   help=f"edits to query with, by name, two joined by + (default: each alone and four pairs); "
                        f"known: {', '.join(EDITS)}")
    add_k(p, default=10)
    p.add_argument("--compare", action="append", default=[], metavar="CONFIG",
                   help=f"another configuration, side by side: a preset ({', '.join(PRESETS)}) or fields like "
                        f"pooling=avg,metric=cosine ({', '.join(FIELDS)}); repeat for more")
    p.add_argument("--seed", type=seed_value, default=0, help="where crops, bars and captions fall (default 0)")
    add_runtime(p)
    p.add_argument("--out", default="eval-out", help="folder for eval.json, report.md and misses.png "
                                                     "(default eval-out)")
    p.add_argument("--force", action="store_true",
                   help="write into a folder that holds other files (only eval's own file names are replaced)")
    p.set_defaults(run=run_eval)


def check_eval_out(out: str, force: bool) -> Path:
    """`out` as eval's output folder, before any work: new, empty, eval's own, or --force."""
    from ..atomic import check_output_folder
    from ..errors import InvalidParameter

    folder = check_output_folder(out, kind=KIND, force=force)
    for name in OUTPUTS:
        if (folder / name).is_dir():
            raise InvalidParameter(f"{folder / name}: is a folder; eval writes its {name} there, so move it away "
                                   "or give another --out")
    return folder


def run_eval(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from ..atomic import atomic_write_text, claim_own_folder, make_own_folder
    from ..quality import Config, evaluate, parse_config, parse_edits
    from ..sources import open_source
    from .common import report_skipped

    out = check_eval_out(args.out, args.force)
    edits = parse_edits(args.edits)
    base = Config(model=args.model, weights=args.weights, pooling=args.pooling, metric=args.metric,
                  input_size=args.input_size, views=args.views, mid=args.mid,
                  **({"resize": args.resize} if args.resize else {}))
    configs = [base.resolved()] + [parse_config(c) for c in args.compare]
    if len({c.name for c in configs}) < len(configs):  # the same column twice: name them by place
        configs = [replace(c, name=f"{i + 1}: {c.name}") for i, c in enumerate(configs)]
    source = open_source(args.source, progress=not args.quiet)
    distractors = None if args.distractors is None else open_source(args.distractors, progress=not args.quiet)
    evaluations = evaluate(source, configs, distractors=distractors, edits=edits, k=args.k, seed=args.seed,
                           runtime=args.runtime, progress=not args.quiet)
    report_skipped(source)
    if distractors is not None:
        report_skipped(distractors)
    if args.force:
        out.mkdir(exist_ok=True)
        claim_own_folder(out, KIND)
    else:
        make_own_folder(out, KIND)
    _misses_picture(evaluations[0], out / "misses.png")
    options = {k: v for k, v in vars(args).items() if k not in ("run", "command", "quiet", "force")}
    record = {"options": options, "evaluations": [e.to_dict() for e in evaluations]}
    atomic_write_text(out / "eval.json", json.dumps(record, indent=1) + "\n")
    atomic_write_text(out / "report.md", _report(args, evaluations))
    from ..quality.tables import table

    print(table(evaluations))
    if evaluations[0].identical:
        print(_identical_note(evaluations[0].identical))
    print(f"wrote {printable(out / 'report.md')}, eval.json and misses.png")
    return 0


def _identical_note(groups: list[list[str]]) -> str:
    """One line naming the originals that are the same pixels, which count as one original."""
    shown = "; ".join(" = ".join(printable(n) for n in g) for g in groups[:5])
    more = f"; and {len(groups) - 5} more set(s)" if len(groups) > 5 else ""
    return (f"note: {sum(len(g) for g in groups)} originals have the same pixels as another ({shown}{more}): "
            "a copy of one that finds its twin counts as found")


def _misses_picture(evaluation, path: Path) -> None:
    from ..report.grids import misses_grid

    shown = [m for m in evaluation.misses if m.pixels is not None]
    titles = [(f"{m.edit} of {m.original}", m.found,
               m.original + (f" (rank {m.rank})" if m.rank else " (not in top k)")) for m in shown]
    more = len(evaluation.misses) - len(shown)
    misses_grid([m.pixels for m in shown], titles, path,
                suptitle=f"{evaluation.config.name}: {len(evaluation.misses)} miss(es) of "
                         f"{evaluation.overall.queries} queries" + (f", first {len(shown)} shown" if more else ""))


def _report(args, evaluations) -> str:
    from ..quality.tables import configs_table, misses_text, table

    first = evaluations[0]
    return "\n".join([
        "# lookalike eval", "",
        f"Originals: `{printable(args.source)}` ({first.originals}); distractors: "
        + (f"`{printable(args.distractors)}` ({first.distractors})" if args.distractors else "none")
        + f"; edits: {', '.join(first.edits)}; seed {args.seed}.",
        "Each edited copy of an original is a query; it succeeds at rank 1 when its own original comes back first.",
        *([_identical_note(first.identical) + "."] if first.identical else []),
        "", "## Results", "", table(evaluations), "", "## Configurations", "", configs_table(evaluations), "",
        f"## Misses of `{first.config.name}`", "", "![misses: query, what came back, what should have](misses.png)",
        "", misses_text(first), ""])
