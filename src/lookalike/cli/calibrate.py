"""`calibrate`: what `auto` measured on this machine, and measuring it again.

`auto` chooses the kNN screen and the feature extractor's variant by timing them once per
shape class and machine, and keeps the result in the cache folder (`knn.calibrate`,
`features.calibrate`). A measurement made while the machine was busy is kept as well as any
other: this command shows each one with when it was made and how busy the machine was, and
measures the kNN classes again (`--again`); the feature extractor's choices, which need the
model to measure, are forgotten and measured again by the next embed.
"""

from __future__ import annotations

import argparse
import json

from ..errors import InvalidParameter
from ..text import printable, seconds

# the sizes a kept kNN calibration's choices are shown for: one query and a batch, three bases
SHOW_ROWS = (10_000, 100_000, 1_000_000)


def register(sub) -> None:
    """Add calibrate to the subparsers `sub`."""
    p = sub.add_parser("calibrate", help="what `auto` measured on this machine (kNN screens, feature "
                                         "extraction); measure it again")
    p.add_argument("--again", action="store_true",
                   help="measure every kept kNN shape class again now (and --d's), and forget the feature "
                        "extractor's choices (the next embed measures them, with its model)")
    p.add_argument("--d", type=int, default=None, metavar="D",
                   help="a kNN shape class to measure now when it is not kept (with --again: in any case)")
    p.add_argument("--metric", default="euclidean", help="--d's metric (default euclidean)")
    p.add_argument("--device", default="cpu", help="cpu (default) or cuda[:N]")
    p.add_argument("--forget", action="store_true", help="delete this machine's calibration files")
    p.add_argument("--json", action="store_true", help="print what is kept as JSON")
    p.set_defaults(run=calibrate)


def calibrate(args: argparse.Namespace) -> int:
    from ..cache import calibration_files
    from ..features import calibrate as fcal
    from ..hardware import machine_identity, resolve_device
    from ..knn import calibrate as kcal
    from ..knn.metrics import get_metric

    device = resolve_device(args.device)
    metric = get_metric(args.metric)  # an unknown metric is a usage error, before anything is measured
    if not metric.gemm:
        raise InvalidParameter(f"--metric {args.metric}: screened by cdist in float64, no screen to choose")
    if args.forget:
        if args.again or args.d is not None:
            raise InvalidParameter("--forget deletes the calibrations; give it alone")
        for path in (kcal.cache_path(), fcal.cache_path()):
            try:
                path.unlink()
                print(f"deleted {printable(path)}")
            except FileNotFoundError:
                print(f"no {printable(path)}")
        kcal.forget()
        fcal.forget()
        return 0
    if not calibration_files():
        print("calibrations are not kept (LOOKALIKE_CALIBRATION=0): each process measures anew")
    measured = []
    keys = list(kcal.kept(device)) if args.again else []  # unreadable ones too
    if args.d is not None:
        key = kcal.shape_class(device, metric, args.d)[0]
        if args.again or kcal.cached(device, metric, args.d) is None:
            keys.append(key)
    for key in dict.fromkeys(keys):
        try:
            cal = kcal.measure_again(device, key)
        except ValueError:  # an entry under a key no version of lookalike writes
            kcal.drop(device, key)
            if not args.json:
                print(f"dropped {printable(key)}: not a shape class")
            continue
        measured.append(key)
        if not calibration_files():  # measured, shown, not kept
            print(_knn_lines(key, cal)[0])
            print("\n".join(_knn_lines(key, cal)[1:]))
        elif not args.json:
            print(f"measured {key} in {seconds(cal.seconds)}")
    if args.again and calibration_files():
        choices = fcal.kept(device)
        if choices:
            fcal.drop_kept(device)
            if not args.json:
                print(f"forgot {len(choices)} feature extractor choice{'s' if len(choices) != 1 else ''}: "
                      "the next embed of each model measures it again")
    if not calibration_files():
        return 0
    knn, features = kcal.kept(device), fcal.kept(device)
    if args.json:
        files = [str(kcal.cache_path()), str(fcal.cache_path())]
        print(json.dumps({"machine": machine_identity(device), "files": files, "measured_now": measured,
                          "knn": {k: None if c is None else {**c.as_dict(), "busy": _busy(c.load)}
                                  for k, c in knn.items()},
                          "features": {k: None if c is None else {**c.as_dict(), "busy": _busy(c.load)}
                                       for k, c in features.items()}}, indent=1))
        return 0
    m = machine_identity(device)
    print(f"this machine: {printable(m['cpu'])}, {m['cores']} cores, {m['threads']} torch threads, torch "
          f"{m['torch']}{', ' + printable(m['cuda']) if 'cuda' in m else ''}")
    print(f"kNN screens ({printable(kcal.cache_path())}):")
    if not knn:
        print("  none measured yet: the first `auto` search of a shape class measures it (about a second)")
    for key, cal in knn.items():
        print("\n".join("  " + line for line in _knn_lines(key, cal)))
    print(f"feature extraction ({printable(fcal.cache_path())}):")
    if not features:
        print("  none measured yet: the first embed of a model with the fast path measures it")
    for key, choice in features.items():
        if choice is None:
            print(f"  {printable(key)}: unreadable, measured again by the next embed of it")
            continue
        print(f"  {printable(choice.explain())}")
        print(f"    {_when(choice.measured, choice.load)}")
    return 0


def _knn_lines(key: str, cal) -> list[str]:
    """A kept kNN calibration in a few lines: when, its choices at `SHOW_ROWS`, the predicted
    times at the middle size for a batch, and its probes."""
    from ..knn.calibrate import PLAN_QUERIES

    if cal is None:
        return [f"{key}: unreadable, measured again by the next search of the class"]
    out = [f"{key}: {_when(cal.measured, cal.load)}, in {seconds(cal.seconds)}"]
    for nq in (1, PLAN_QUERIES):
        picks = ", ".join(f"{nb:,} rows {cal.choice(nb, nq)}" for nb in SHOW_ROWS)
        out.append(f"  {nq} quer{'y' if nq == 1 else 'ies'}: {picks}")
    out.append(f"  {cal.explain(SHOW_ROWS[1], PLAN_QUERIES)}")
    for pk, p in sorted(cal.probes.items()):
        times = ", ".join(f"{n} {seconds(t)}" for n, t in sorted(p["times"].items(), key=lambda kv: kv[1]))
        out.append(f"  probe {pk}: {p['choice']} (a search of {p['nq']:,} x {p['nb']:,} rows, timed on its first "
                   f"{p.get('queries', '?')} queries: {times})")
    return out


def _busy(load: float | None) -> bool:
    from ..hardware import busy

    return busy(load)


def _when(measured: str, load: float | None) -> str:
    """When a calibration was made and how busy the machine was; a busy one says how to redo it."""
    at = f"measured {measured.replace('T', ' ').replace('Z', ' UTC')}" if measured else "measured (time not kept)"
    if load is None:
        return at
    return f"{at.rstrip()}, load average {load:g}{' (busy)' if _busy(load) else ''}"
