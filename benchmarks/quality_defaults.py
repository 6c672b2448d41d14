"""Choose lookalike's default pooling, metric, input size and resize policy by measurement.

The set (built here, offline, from real photographs that ship in installed packages):

- originals: the four quadrants of each of ten photos (scikit-image's astronaut, camera,
  chelsea, coffee, hubble_deep_field, motorcycle_left, rocket; scikit-learn's china and
  flower; matplotlib's grace_hopper): 40 distinct images, each 190 to 500 pixels a side.
  Quadrants of one photo are alike (the sky above a rocket, a cat's fur), which is what
  makes the set hard.
- distractors: random crops (35-75% of the shorter side, flipped, recoloured: the sample
  set's `make_crop`) of eleven OTHER photos (cell, coins, ihc, retina, clock_motion, brick,
  grass, gravel, moon, page, text), 160 x 160, saved as JPEG; and the 200 faces of
  scikit-image's lfw_subset. No distractor is cut from a photo an original comes from; no
  other real photos are on this machine (STL-10 cannot be downloaded here).
- queries: every original after every edit of `lookalike eval` (eight edits, four pairs).

Run:  python benchmarks/quality_defaults.py [--distractors 3000] [--sizes 96,128,160,224]
      [--resizes crop,pad] [--out docs/quality/defaults.json]
Each (size, resize) is one pass of the network; the poolings and metrics are pooled and
searched from it (`lookalike.quality.evaluate`). Results are written after each pass.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from lookalike.quality import Config, evaluate
from lookalike.quality.tables import table
from lookalike.sources import open_source
from lookalike.sources.sample import make_crop, photo_paths

ORIGINALS = ("astronaut", "camera", "chelsea", "coffee", "hubble_deep_field", "motorcycle_left", "rocket", "china",
             "flower", "grace_hopper")
DISTRACTOR_PHOTOS = ("cell", "coins", "ihc", "retina", "clock_motion", "brick", "grass", "gravel", "moon", "page",
                     "text")


def photos() -> dict[str, Path]:
    import matplotlib

    found = {p.stem: p for p in photo_paths()}
    found["grace_hopper"] = Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg"
    return found


def build_set(root: Path, n_distractors: int, seed: int = 0) -> tuple[Path, Path]:
    """Write the originals (PNG quadrants) and the distractors (JPEG) below `root`."""
    import skimage

    have = photos()
    originals, distractors = root / "originals", root / "distractors"
    originals.mkdir()
    distractors.mkdir()
    for name in ORIGINALS:
        im = Image.open(have[name]).convert("RGB")
        w, h = im.size
        for q, (x, y) in enumerate(((0, 0), (1, 0), (0, 1), (1, 1))):
            im.crop((x * w // 2, y * h // 2, (x + 1) * w // 2, (y + 1) * h // 2)).save(originals / f"{name}-q{q}.png")
    rng = np.random.default_rng(seed)
    pixels = [np.asarray(Image.open(have[n]).convert("RGB")) for n in DISTRACTOR_PHOTOS]
    faces = np.load(Path(skimage.__file__).parent / "data" / "lfw_subset.npy")
    n_crops = max(0, n_distractors - len(faces))
    for i in range(n_crops):
        Image.fromarray(make_crop(pixels[i % len(pixels)], rng, 160)).save(distractors / f"crop{i:05d}.jpg",
                                                                          quality=90)
    for i, face in enumerate(faces[:n_distractors]):
        Image.fromarray((face * 255).round().astype(np.uint8)).convert("RGB").save(distractors / f"face{i:03d}.png")
    return originals, distractors


def machine() -> str:
    flags = open("/proc/cpuinfo").read() if os.path.exists("/proc/cpuinfo") else ""
    isa = [f for f in ("avx512_bf16", "avx512_vnni", "amx_tile") if f" {f}" in flags]
    return f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, {' '.join(isa) or 'no AVX-512'}"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--distractors", type=int, default=3000)
    p.add_argument("--sizes", default="96,128,160,224")
    p.add_argument("--resizes", default="crop,pad")
    p.add_argument("--poolings", default="max,avg,gem")
    p.add_argument("--metrics", default="euclidean,cosine")
    p.add_argument("--model", default="efficientnet_lite0")
    p.add_argument("-k", type=int, default=10)
    p.add_argument("--out", default="docs/quality/defaults.json")
    p.add_argument("--append", action="store_true", help="add to the results already in --out")
    p.add_argument("--markdown", action="store_true", help="print the tables of --out (for docs/quality.md), no run")
    args = p.parse_args()
    if args.markdown:
        print(markdown(json.loads(Path(args.out).read_text())))
        return 0
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    record = {"command": "python benchmarks/quality_defaults.py " + " ".join(sys.argv[1:]), "commit": commit,
              "machine": machine(), "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
              "set": {"originals": [f"{n} (4 quadrants)" for n in ORIGINALS],
                      "distractor_photos": list(DISTRACTOR_PHOTOS), "distractor_faces": "skimage lfw_subset (200)",
                      "distractors": args.distractors},
              "results": []}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    if args.append:
        before = json.loads(out.read_text())
        record["results"] = before["results"]
        record["command"] = before["command"] + "; then " + record["command"]
    with tempfile.TemporaryDirectory() as tmp:
        originals, distractors = build_set(Path(tmp), args.distractors)
        source, dis = open_source(originals, progress=False), open_source(distractors, progress=False)
        for size in map(int, args.sizes.split(",")):
            for resize in args.resizes.split(","):
                configs = [Config(model=args.model, pooling=pl, metric=m, input_size=size, resize=resize)
                           for pl in args.poolings.split(",") for m in args.metrics.split(",")]
                t0 = time.perf_counter()
                evals = evaluate(source, configs, distractors=dis, k=args.k, progress=True)
                print(f"size {size} {resize}: {time.perf_counter() - t0:.0f} s", file=sys.stderr)
                print(table(evals), flush=True)
                record["results"] += [e.to_dict() for e in evals]
                out.write_text(json.dumps(record, indent=1) + "\n")
    return 0


def markdown(record: dict) -> str:
    """Every configuration's overall figures, best recall@1 first."""
    rows = sorted(record["results"], key=lambda r: (-r["overall"]["recall_at_1"], -r["overall"]["mrr"]))
    k = rows[0]["k"]
    lines = [f"| pooling | metric | input | resize | recall@1 | recall@{k} | MRR@{k} |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        c, o = r["config"], r["overall"]
        lines.append(f"| {c['pooling']} | {c['metric']} | {c['input_size']} | {c['resize']} | "
                     f"{o['recall_at_1']:.3f} | {o['recall_at_k']:.3f} | {o['mrr']:.3f} |")
    return "\n".join(lines) + "\n\n" + per_edit(record)


def per_edit(record: dict, pairs=(("max", "euclidean", 96, "crop"), ("max", "cosine", 96, "crop"))) -> str:
    """The previous default and the chosen one, per edit."""
    def find(*want):
        return next(x for x in record["results"]
                    if tuple(x["config"][f] for f in ("pooling", "metric", "input_size", "resize")) == want)

    runs = [find(*c) for c in pairs]
    k = runs[0]["k"]
    heads = " | ".join(f"{p} {m} {s} {r}" for p, m, s, r in pairs)
    lines = [f"recall@1 / recall@{k} / MRR@{k}", "", f"| edit | queries | {heads} |", "|---|---|" + "---|" * len(runs)]
    for e in runs[0]["edits"] + ["all"]:
        cells = [x["overall"] if e == "all" else x["per_edit"][e] for x in runs]
        lines.append(f"| {e} | {cells[0]['queries']} | "
                     + " | ".join(f"{c['recall_at_1']:.3f} / {c['recall_at_k']:.3f} / {c['mrr']:.3f}" for c in cells)
                     + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
