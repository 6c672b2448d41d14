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
import os
import sys

from ..errors import InvalidParameter
from ..text import printable, seconds

# the sizes a kept kNN calibration's choices are shown for: one query and a batch, three bases
SHOW_ROWS = (10_000, 100_000, 1_000_000)
DEFAULT_METRIC = "euclidean"


def register(sub) -> None:
    """Add calibrate to the subparsers `sub`."""
    p = sub.add_parser("calibrate", help="what `auto` measured on this machine (kNN screens, feature "
                                         "extraction); measure it again",
                       description="Show, measure again or delete what precision='auto' measured on this "
                                   "machine: the kNN screen per metric and dimension class, the CNN's runtime "
                                   "and precision per model; each with when it was measured and the load then.")
    p.add_argument("--again", action="store_true",
                   help="measure every kept kNN shape class again now (and --d's), and forget the feature "
                        "extractor's choices (the next embed measures them, with its model)")
    p.add_argument("--d", type=int, default=None, metavar="D",
                   help="a kNN shape class to measure now when it is not kept (with --again: in any case)")
    p.add_argument("--metric", default=None,
                   help=f"--d's metric (default {DEFAULT_METRIC}; one with a GEMM screen: euclidean, sqeuclidean, "
                        "cosine, inner_product)")
    p.add_argument("--device", default="cpu", help="cpu (default), cuda or cuda:N")
    p.add_argument("--forget", action="store_true", help="delete this machine's calibration files")
    p.add_argument("--json", action="store_true", help="print what is kept (or deleted) as JSON")
    p.set_defaults(run=calibrate)


def calibrate(args: argparse.Namespace) -> int:
    from ..cache import calibration_files
    from ..features import calibrate as fcal
    from ..hardware import busy, load_average, machine_identity, resolve_device
    from ..knn import calibrate as kcal
    from ..knn.metrics import METRICS, get_metric

    device = resolve_device(args.device)
    if args.metric is not None and args.d is None:
        raise InvalidParameter(f"--metric {args.metric} names the metric of --d's class: give --d too")
    metric = get_metric(args.metric or DEFAULT_METRIC)  # an unknown metric: a usage error, before any measuring
    if not metric.gemm:
        screened = ", ".join(sorted(n for n, m in METRICS.items() if m.gemm))
        raise InvalidParameter(f"--metric {args.metric}: searched in float64 with no lower-precision screen, so "
                               f"nothing to calibrate (metrics with one: {screened})")
    if args.forget:
        if args.again or args.d is not None:
            raise InvalidParameter("--forget deletes the calibrations; give it alone")
        deleted, absent = [], []
        for path in (kcal.cache_path(), fcal.cache_path()):
            try:
                path.unlink()
                deleted.append(str(path))
            except FileNotFoundError:
                absent.append(str(path))
        kcal.forget()
        fcal.forget()
        if args.json:
            print(json.dumps({"deleted": deleted, "absent": absent}, indent=1))
        else:
            print("\n".join([f"deleted {printable(p)}" for p in deleted] + [f"no {printable(p)}" for p in absent]))
        return 0
    say = (lambda line: None) if args.json else print
    if not calibration_files():
        say("calibrations are not kept (LOOKALIKE_CALIBRATION=0): each process measures anew")
    keys = list(kcal.kept(device)) if args.again else []  # unreadable ones too
    if args.d is not None:
        key = kcal.shape_class(device, metric, args.d)[0]
        if args.again or kcal.cached(device, metric, args.d) is None:
            keys.append(key)
        else:
            say(f"{key} is kept already (--again measures it anew)")
    keys = list(dict.fromkeys(keys))
    load = load_average()
    if keys and busy(load):
        print(f"lookalike: the machine is busy now (load average {load:g} on {os.cpu_count()} cores): what is "
              "measured will be flagged busy; measure again when it is quiet", file=sys.stderr)
    measured = []
    for key in keys:
        try:
            cal = kcal.measure_again(device, key)
        except ValueError:  # an entry under a key no version of lookalike writes
            kcal.drop(device, key)
            say(f"dropped {printable(key)}: not a shape class")
            continue
        measured.append(key)
        if not calibration_files():  # measured, shown, not kept
            say("\n".join(_knn_lines(key, cal)))
        else:
            say(f"measured {key} in {seconds(cal.seconds)}")
    if args.again and calibration_files():
        choices = fcal.kept(device)
        fcal.drop_kept(device)
        say(f"forgot {len(choices)} feature extractor choice{'s' if len(choices) != 1 else ''}: the next embed of "
            "each model measures it again" if choices else "no feature extractor choices were kept")
    if not calibration_files():
        return 0
    knn, features = kcal.kept(device), fcal.kept(device)
    if args.json:
        print(json.dumps({"machine": machine_identity(device),
                          "files": {"knn": str(kcal.cache_path()), "features": str(fcal.cache_path())},
                          "measured_now": measured,
                          "knn": {k: _knn_json(c) for k, c in knn.items()},
                          "features": {k: {"unreadable": True} if c is None else
                                       {**c.as_dict(), "busy": busy(c.load, others=c.others)}
                                       for k, c in features.items()}}, indent=1))
        return 0
    m = machine_identity(device)
    print(f"this machine: {printable(m['cpu'])}, {m['cores']} cores, {m['threads']} torch threads, torch "
          f"{m['torch']}{', ' + printable(m['cuda']) if 'cuda' in m else ''}")
    print(f"kNN screens ({printable(kcal.cache_path())}):")
    if not knn:
        print("  " + _nothing(kcal.cache_path(), "the first `auto` search of a shape class measures it (a second "
                                                   "or a few)"))
    for key, cal in knn.items():
        print("\n".join("  " + line for line in _knn_lines(key, cal)))
    print(f"feature extraction ({printable(fcal.cache_path())}):")
    if not features:
        print("  " + _nothing(fcal.cache_path(), "the first embed of 256 images or more with the fast path "
                                                   "measures it"))
    for key, choice in features.items():
        if choice is None:
            print(f"  {printable(key)}: unreadable, measured again by the next embed of it")
            continue
        print(f"  {printable(choice.explain())}")
        print(f"    {_when(choice.measured, choice.load, choice.others)}")
    return 0


def _nothing(path, when: str) -> str:
    """The line for a file that keeps nothing for this machine: none yet, or one that cannot be read."""
    if path.exists():
        return (f"none for this machine: the file cannot be read, or was written by another machine or version of "
                f"lookalike (ignored; {when}, and rewrites it)")
    return f"none measured yet: {when}"


def _knn_lines(key: str, cal) -> list[str]:
    """A kept kNN calibration in a few lines: when, its choices at `SHOW_ROWS`, the predicted
    times at the middle size for a batch, and its probes."""
    from ..knn.calibrate import PLAN_QUERIES, PROBE_ONLY

    if cal is None:
        return [f"{key}: unreadable, measured again by the next search of the class"]
    out = [f"{key}: {_when(cal.measured, cal.load, cal.others, cal.seconds)}"]
    for nq in (1, PLAN_QUERIES):
        picks = ", ".join(f"{nb:,} rows {cal.choice(nb, nq)}" for nb in SHOW_ROWS)
        out.append(f"  screen for {nq} quer{'y' if nq == 1 else 'ies'}: {picks}")
    times = cal.predicted(SHOW_ROWS[1], PLAN_QUERIES)
    model = ", ".join(f"{n} {seconds(t)}" for n, t in sorted(times.items(), key=lambda kv: kv[1])
                      if n not in PROBE_ONLY)
    out.append(f"  predicted for {PLAN_QUERIES} queries x {SHOW_ROWS[1]:,} rows: {model}")
    for n in PROBE_ONLY:
        if n in times:
            out.append(f"  {n}: {seconds(times[n])} predicted, taken only where a probe of a large search times it "
                       "fastest")
    if cal.excluded:
        out.append("  not candidates: " + ", ".join(f"{n} ({why})" for n, why in cal.excluded.items()))
    for pk, p in sorted(cal.probes.items()):
        timed = ", ".join(f"{n} {seconds(t)}" for n, t in sorted(p["times"].items(), key=lambda kv: kv[1]))
        out.append(f"  probe {pk}: {p['choice']} (a search of {p['nq']:,} x {p['nb']:,} rows, timed on its first "
                   f"{p.get('queries', '?')} queries: {timed})")
    return out


def _knn_json(cal) -> dict:
    """A kept kNN calibration as JSON: what is kept, whether it was busy, and its choices at `SHOW_ROWS`."""
    from ..hardware import busy
    from ..knn.calibrate import PLAN_QUERIES

    if cal is None:
        return {"unreadable": True}
    return {**cal.as_dict(), "busy": busy(cal.load, others=cal.others),
            "screen": {str(nq): {str(nb): cal.choice(nb, nq) for nb in SHOW_ROWS} for nq in (1, PLAN_QUERIES)}}


def _when(measured: str, load: float | None, others: float | None = None, took: float | None = None) -> str:
    """When a calibration was made (and in how long), and how busy the machine was then."""
    from ..hardware import busy, busy_words

    at = f"measured {measured.replace('T', ' ').replace('Z', ' UTC')}" if measured else "measured (time not kept)"
    if took is not None:
        at += f" in {seconds(took)}"
    if load is None and others is None:
        return at
    flag = ": busy, `lookalike calibrate --again` when quiet" if busy(load, others=others) else ""
    return f"{at}; {busy_words(load, others)}{flag}"
