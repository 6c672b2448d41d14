"""Test-time views and mid-level features against the single view, on two sets of real photographs.

Set 1 ("quadrants") is `quality_defaults.py`'s: the four quadrants of ten photos as 40
originals, and 3,000 distractors (crops of eleven other photos and 200 faces).

Set 2 ("distinct photos") has no near twins among its originals: every real photograph on
this machine (the 21 of `quality_defaults.ORIGINALS` and `DISTRACTOR_PHOTOS`) is an original,
whole, in two folds so that no distractor is cut from an indexed photo:

- fold A: the ten photos of ORIGINALS, with set 1's 3,000 distractors (crops of the eleven
  DISTRACTOR_PHOTOS and the faces);
- fold B: the eleven DISTRACTOR_PHOTOS, with 2,800 crops of the ten ORIGINALS and the faces.

Its figures are both folds' queries together (21 originals x 12 edits = 252).

Run:  python benchmarks/quality_views.py [--configs default,single,...] [--out docs/quality/views.json]
      python benchmarks/quality_views.py --configs mid --append   (more configurations into --out's
          record, each run's command, commit and date listed under "runs")
      python benchmarks/quality_views.py --markdown      (the tables of docs/quality.md)
      python benchmarks/quality_views.py --speed --out docs/quality/views_speed.json
          (images/s of each configuration's embedder on the same 96 x 96 sample images, fast
          path, repeats interleaved, the best rate of each kept; ratios against `single`)
Each configuration is a preset of `lookalike.quality.configs.PRESETS` or `field=value,...`.
"""

from __future__ import annotations

import argparse
import datetime
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from lookalike.quality import evaluate, parse_config
from lookalike.quality.tables import table
from lookalike.sources import open_source
from lookalike.sources.sample import make_crop

sys.path.insert(0, str(Path(__file__).parent))
from quality_defaults import DISTRACTOR_PHOTOS, ORIGINALS, build_set, machine, photos  # noqa: E402

CONFIGS = "previous,single,default,mirror,centre_mirror"


def whole_photos(folder: Path, names) -> Path:
    folder.mkdir()
    have = photos()
    for name in names:
        Image.open(have[name]).convert("RGB").save(folder / f"{name}.png")
    return folder


def crops_of(folder: Path, names, n: int, seed: int = 0) -> Path:
    """`n` crops of the photos `names` (the sample set's `make_crop`, JPEG) and the 200 faces."""
    import skimage

    folder.mkdir()
    have = photos()
    rng = np.random.default_rng(seed)
    pixels = [np.asarray(Image.open(have[k]).convert("RGB")) for k in names]
    faces = np.load(Path(skimage.__file__).parent / "data" / "lfw_subset.npy")
    for i in range(n - len(faces)):
        Image.fromarray(make_crop(pixels[i % len(pixels)], rng, 160)).save(folder / f"crop{i:05d}.jpg", quality=90)
    for i, face in enumerate(faces):
        Image.fromarray((face * 255).round().astype(np.uint8)).convert("RGB").save(folder / f"face{i:03d}.png")
    return folder


def combined(a: dict, b: dict) -> dict:
    """Two folds' evaluations of one configuration as one: figures weighted by queries."""
    out = json.loads(json.dumps(a))
    out["originals"] += b["originals"]
    out["distractors"] = [a["distractors"], b["distractors"]]
    for key in ["overall", *a["per_edit"]]:
        x = a["overall"] if key == "overall" else a["per_edit"][key]
        y = b["overall"] if key == "overall" else b["per_edit"][key]
        n = x["queries"] + y["queries"]
        merged = {"queries": n, **{f: (x[f] * x["queries"] + y[f] * y["queries"]) / n
                                   for f in ("recall_at_1", "recall_at_k", "mrr")}}
        if key == "overall":
            out["overall"] = merged
        else:
            out["per_edit"][key] = merged
    out["misses"] = a["misses"] + b["misses"]
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--configs", default=CONFIGS, help=f"comma-separated presets or ';'-separated fields "
                                                      f"(default {CONFIGS})")
    p.add_argument("--distractors", type=int, default=3000)
    p.add_argument("--sets", default="quadrants,distinct")
    p.add_argument("-k", type=int, default=10)
    p.add_argument("--out", default="docs/quality/views.json")
    p.add_argument("--markdown", action="store_true", help="print the tables of --out, no run")
    p.add_argument("--append", action="store_true", help="add these configurations to --out's record")
    p.add_argument("--speed", action="store_true", help="time each configuration's embedder instead")
    p.add_argument("--n", type=int, default=512, help="images per timing (--speed)")
    p.add_argument("--repeats", type=int, default=3, help="interleaved timings of each (--speed)")
    args = p.parse_args()
    out = Path(args.out)
    if args.markdown:
        print(markdown(json.loads(out.read_text())))
        return 0
    names = args.configs.split(";") if ";" in args.configs else args.configs.split(",")
    configs = [parse_config(c) for c in names]
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    if args.speed:
        rates = speed(configs, args.n, args.repeats)
        out.write_text(json.dumps({"command": "python benchmarks/quality_views.py " + " ".join(sys.argv[1:]),
                                   "commit": commit, "machine": machine(),
                                   "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                                   "images": args.n, "repeats": args.repeats, "images_per_s": rates}, indent=1) + "\n")
        for name, rate in rates.items():
            print(f"{name}: {rate:.0f} images/s" + (f", {rate / rates['single']:.2f}x single" if "single" in rates
                                                      else ""))
        return 0
    run = {"command": "python benchmarks/quality_views.py " + " ".join(sys.argv[1:]), "commit": commit,
           "machine": machine(), "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
           "configs": [c.name for c in configs]}
    if args.append:  # earlier runs' configurations and results kept, this run's added
        record = json.loads(out.read_text())
        first = {k: record[k] for k in ("command", "commit", "machine", "date")}
        record.setdefault("runs", [{**first, "configs": [c["name"] for c in record["configs"]]}]).append(run)
        record["configs"] += [c.as_dict() for c in configs]
    else:
        record = {**{k: run[k] for k in ("command", "commit", "machine", "date")}, "runs": [run],
                  "sets": {"quadrants": {"originals": [f"{n} (4 quadrants)" for n in ORIGINALS],
                                         "distractors": f"{args.distractors}: crops of "
                                                        f"{', '.join(DISTRACTOR_PHOTOS)}; 200 lfw_subset faces"},
                           "distinct": {"fold A": {"originals": list(ORIGINALS), "distractors": "as quadrants"},
                                        "fold B": {"originals": list(DISTRACTOR_PHOTOS),
                                                   "distractors": f"{args.distractors}: crops of "
                                                                  f"{', '.join(ORIGINALS)}; 200 lfw_subset faces"}}},
                  "configs": [c.as_dict() for c in configs], "results": {}}
    earlier = {name: list(results) for name, results in record["results"].items()}
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "q").mkdir()
        quads, dis1 = build_set(root / "q", args.distractors)
        runs = {}
        if "quadrants" in args.sets:
            runs["quadrants"] = [(quads, dis1)]
        if "distinct" in args.sets:
            runs["distinct"] = [(whole_photos(root / "a", ORIGINALS), dis1),
                                (whole_photos(root / "b", DISTRACTOR_PHOTOS),
                                 crops_of(root / "dis2", ORIGINALS, args.distractors))]
        for set_name, folds in runs.items():
            per_fold = []
            for originals, distractors in folds:
                t0 = time.perf_counter()
                evals = evaluate(open_source(originals, progress=False), configs,
                                 distractors=open_source(distractors, progress=False), k=args.k)
                print(f"{set_name} ({originals.name}): {time.perf_counter() - t0:.0f} s", file=sys.stderr)
                print(table(evals), flush=True)
                per_fold.append([e.to_dict() for e in evals])
            record["results"][set_name] = earlier.get(set_name, []) + (
                [combined(a, b) for a, b in zip(*per_fold)] if len(per_fold) == 2 else per_fold[0])
            out.write_text(json.dumps(record, indent=1) + "\n")
    return 0


def speed(configs, n: int, repeats: int) -> dict[str, float]:
    """The best images/s of each configuration's embedder (fast path, traced once before
    timing) on the same `n` sample images at its input size, repeats interleaved."""
    from lookalike.features import Embedder
    from lookalike.sources.sample import SampleSource

    embedders = {c.name: Embedder(c.model, weights=c.weights, pooling=c.pooling, views=c.views,
                                  input_size=c.input_size, progress=False) for c in configs}
    images = {c.name: SampleSource(n, seed=0, size=c.input_size).read(range(n)) for c in configs}
    for name, e in embedders.items():
        e.embed_array(images[name][:64])  # trace
    best = dict.fromkeys(embedders, 0.0)
    for _ in range(repeats):
        for name, e in embedders.items():
            t0 = time.perf_counter()
            e.embed_array(images[name])
            best[name] = max(best[name], n / (time.perf_counter() - t0))
    return best


def markdown(record: dict) -> str:
    """Per set: every configuration's overall figures, then recall@1 per edit side by side."""
    parts = []
    for set_name, results in record["results"].items():
        k = results[0]["k"]
        lines = [f"### {set_name}", "",
                 f"| configuration | views | mid-level | input | recall@1 | recall@{k} | MRR@{k} |",
                 "|---|---|---|---|---|---|---|"]
        for r in results:
            c, o = r["config"], r["overall"]
            lines.append(f"| `{c['name']}` | {c['views']} | {c.get('mid') or 'none'} | {c['input_size']} | "
                         f"{o['recall_at_1']:.3f} | {o['recall_at_k']:.3f} | {o['mrr']:.3f} |")
        lines += ["", "recall@1 per edit", "", "| edit | " + " | ".join(f"`{r['config']['name']}`" for r in results)
                  + " |", "|---|" + "---|" * len(results)]
        for e in results[0]["edits"]:
            lines.append(f"| {e} | " + " | ".join(f"{r['per_edit'][e]['recall_at_1']:.3f}" for r in results) + " |")
        parts.append("\n".join(lines))
    return "\n\n".join(parts)


if __name__ == "__main__":
    sys.exit(main())
