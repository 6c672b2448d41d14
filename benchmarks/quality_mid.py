"""Which mid-level features to append (`lookalike.features.mid`): an exploration in NumPy.

Every image of `quality_views.py`'s two sets (the quadrants; the distinct photos in two folds)
and every edited copy goes once through EfficientNet-Lite0 (eager fp32, 96 px, crop) per view
(full, centre, and grey with --grey); the final map and the outputs of blocks 5 to 14 are
max- and GeM-pooled and kept. Each candidate descriptor is then put together from them as the
Embedder would (each part L2-normalised, weighted, concatenated; views each normalised and
summed) and searched by cosine, exactly, over originals and 3,000 distractors. This ranks the
candidates; `quality_views.py` then measures the chosen ones with `lookalike eval` itself.

Run:  python benchmarks/quality_mid.py [--cache /tmp/mid.npz] [--grey] [--out docs/quality/mid_explore.json]
"""

from __future__ import annotations

import argparse
import datetime
import itertools
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from lookalike.features import Embedder
from lookalike.features.models import pool
from lookalike.features.views import render
from lookalike.quality.copies import make_copies, read_originals, source_squares, squares
from lookalike.quality.edits import DEFAULT_EDITS
from lookalike.sources import open_source

sys.path.insert(0, str(Path(__file__).parent))
from quality_defaults import DISTRACTOR_PHOTOS, ORIGINALS, build_set, machine  # noqa: E402
from quality_views import crops_of, whole_photos  # noqa: E402

BLOCKS = (5, 6, 7, 8, 9, 10, 11, 12, 13, 14)
SIZE = 96
CHUNK = 128


class Taps(nn.Module):
    """The trunk's final map max-pooled, and each of BLOCKS max- and GeM-pooled, as one row."""

    def __init__(self, trunk: nn.Module):
        super().__init__()
        self.trunk = trunk

    def forward(self, x):
        final, maps = self.trunk.tapped(x, BLOCKS)
        return torch.cat([pool(final, "max")] + [pool(m, p) for m in maps for p in ("max", "gem")], dim=1)


def layout(channels: list[int]) -> dict[str, slice]:
    """Where each part lies in a row of `Taps`: 'final', '<block>:max', '<block>:gem'."""
    out, lo = {"final": slice(0, 1280)}, 1280
    for b in BLOCKS:
        for p in ("max", "gem"):
            out[f"{b}:{p}"] = slice(lo, lo + channels[b])
            lo += channels[b]
    return out


def describe(images: np.ndarray, embedder: Embedder, graph, views, bar_name: str) -> np.ndarray:
    """(n, views, row) float32 of uint8 squares `images`."""
    out = []
    t0 = time.perf_counter()
    with torch.inference_mode():
        for lo in range(0, len(images), CHUNK):
            px = embedder._pixels(images[lo:lo + CHUNK])
            out.append(np.stack([graph(embedder._normalise(render(px, v))).numpy() for v in views], axis=1))
    print(f"  {bar_name}: {len(images)} images, {time.perf_counter() - t0:.0f} s", file=sys.stderr, flush=True)
    return np.concatenate(out)


def fold_features(originals_dir: Path, distractors_dir: Path, embedder, graph, views, cache: dict, tag: str):
    src = open_source(originals_dir, progress=False)
    originals, ids = read_originals(src)
    copies = make_copies(originals, DEFAULT_EDITS, 0)
    feats = {"orig": describe(squares(originals, SIZE, "crop"), embedder, graph, views, f"{tag} originals"),
             "query": describe(squares([c.image for c in copies], SIZE, "crop"), embedder, graph, views,
                               f"{tag} queries")}
    key = str(distractors_dir)
    if key not in cache:
        dis = open_source(distractors_dir, progress=False)
        px, _ = source_squares(dis, range(len(dis)), SIZE, "crop")
        cache[key] = describe(px, embedder, graph, views, f"{tag} distractors")
    feats["dis"] = cache[key]
    feats["truth"] = np.array([c.original for c in copies])
    feats["edit"] = np.array([c.edit for c in copies])
    return feats


def compute(n_distractors: int, views) -> dict:
    embedder = Embedder(pooling="max", views="full", mid="none", fast=False, precision="fp32", progress=False)
    net = Taps(embedder.net.trunk).eval()
    example = torch.zeros(8, 3, SIZE, SIZE)
    with torch.no_grad():
        graph = torch.jit.freeze(torch.jit.trace(net, example, check_trace=False))
    channels = embedder.net.trunk.block_channels()
    cache: dict = {}
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "q").mkdir()
        quads, dis1 = build_set(root / "q", n_distractors)
        out["quadrants"] = [fold_features(quads, dis1, embedder, graph, views, cache, "quadrants")]
        out["distinct"] = [fold_features(whole_photos(root / "a", ORIGINALS), dis1, embedder, graph, views, cache,
                                         "distinct A"),
                           fold_features(whole_photos(root / "b", DISTRACTOR_PHOTOS),
                                         crops_of(root / "dis2", ORIGINALS, n_distractors), embedder, graph, views,
                                         cache, "distinct B")]
    return {"sets": out, "channels": channels, "views": list(views)}


def unit(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


def descriptor(rows: np.ndarray, parts: dict[str, slice], view_idx: list[int], taps) -> np.ndarray:
    """rows (n, views, row) -> (n, d): as `Embedder` makes it (taps: [(part, weight)])."""
    per_view = []
    for v in view_idx:
        r = rows[:, v]
        d = [unit(r[:, parts["final"]])] + [w * unit(r[:, parts[p]]) for p, w in taps]
        per_view.append(unit(np.concatenate(d, axis=1)))
    return unit(sum(per_view))


def recall(fold: dict, parts, view_idx, taps, k: int = 10) -> tuple[int, int, int, dict]:
    """(hits@1, hits@k, queries, misses per edit) of one fold."""
    base = descriptor(np.concatenate([fold["orig"], fold["dis"]]), parts, view_idx, taps)
    q = descriptor(fold["query"], parts, view_idx, taps)
    sims = q @ base.T
    top = np.argsort(-sims, axis=1, kind="stable")[:, :k]
    hit = top == fold["truth"][:, None]
    first = hit[:, 0]
    missed: dict[str, int] = {}
    for e in fold["edit"][~first]:
        missed[str(e)] = missed.get(str(e), 0) + 1
    return int(first.sum()), int(hit.any(1).sum()), len(q), missed


def evaluate(data: dict, view_names, taps) -> dict:
    parts = layout(data["channels"])
    idx = [data["views"].index(v) for v in view_names]
    out = {}
    for set_name, folds in data["sets"].items():
        h1 = hk = n = 0
        missed: dict[str, int] = {}
        for fold in folds:
            a, b, c, m = recall(fold, parts, idx, taps)
            h1, hk, n = h1 + a, hk + b, n + c
            for e, x in m.items():
                missed[e] = missed.get(e, 0) + x
        out[set_name] = {"recall_at_1": h1 / n, "recall_at_10": hk / n, "misses": n - h1, "queries": n,
                         "missed_edits": missed}
    return out


def candidates(views_avail) -> list[tuple[str, tuple, tuple]]:
    """(label, views, taps) to try."""
    view_sets = [("full",), ("full", "centre")] + ([("full", "centre", "grey")] if "grey" in views_avail else [])
    out = []
    for vs in view_sets:
        out.append(("+".join(vs) + " / none", vs, ()))
        for b, p, w in itertools.product(BLOCKS, ("max", "gem"), (0.3, 0.5, 0.7, 1.0, 1.5, 2.0)):
            out.append((f"{'+'.join(vs)} / {b}:{p}:{w:g}", vs, ((f"{b}:{p}", w),)))
    vs = ("full", "centre")
    for b1, b2 in ((9, 12), (10, 12), (10, 13), (8, 12), (10, 11)):
        for w in (0.3, 0.5):
            out.append((f"full+centre / {b1}:max:{w:g}+{b2}:max:{w:g}", vs, ((f"{b1}:max", w), (f"{b2}:max", w))))
    # a second round, after the first showed GeM of blocks 5 to 8 with weights 1.5 to 2 ahead:
    # larger weights, and two blocks
    for b in (5, 6, 7, 8, 9, 10):
        for w in (1.75, 2.5, 3.0, 4.0):
            out.append((f"full+centre / {b}:gem:{w:g}", vs, ((f"{b}:gem", w),)))
    pairs = [((5, 8), w) for w in ((0.7, 0.7), (0.7, 1), (1, 0.7), (1, 1), (1, 1.25), (1.25, 1), (1.25, 1.25),
                                   (1, 1.5), (1.5, 1), (1.5, 1.5), (0.7, 1.5), (2, 2))]
    pairs += [((6, 9), w) for w in ((1, 1), (1, 1.5), (1.5, 1.5), (0.7, 1.5))]
    pairs += [((a, b), (1, 1)) for a, b in ((5, 9), (5, 10), (6, 8), (7, 8), (5, 11), (7, 10), (5, 7))]
    for (a, b), (w1, w2) in pairs:
        taps = ((f"{a}:gem", w1), (f"{b}:gem", w2))
        for views in ((vs, ("full",)) if (a, b, w1, w2) == (5, 8, 1, 1.25) else (vs,)):
            out.append((f"{'+'.join(views)} / {a}:gem:{w1:g}+{b}:gem:{w2:g}", views, taps))
    out.append(("full+centre / 5:max:1+8:max:1", vs, (("5:max", 1), ("8:max", 1))))
    out.append(("full+centre / 5:gem:1+8:max:1", vs, (("5:gem", 1), ("8:max", 1))))
    if "grey" in views_avail:
        out.append(("full+centre+grey / 5:gem:1+8:gem:1.25", ("full", "centre", "grey"),
                    (("5:gem", 1), ("8:gem", 1.25))))
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--cache", default="/tmp/lookalike-mid.npz", help="pooled features, kept between runs")
    p.add_argument("--grey", action="store_true", help="also the grey view (a third pass)")
    p.add_argument("--distractors", type=int, default=3000)
    p.add_argument("--out", default="docs/quality/mid_explore.json")
    p.add_argument("--top", type=int, default=40, help="rows to print")
    args = p.parse_args()
    cache = Path(args.cache)
    views = ("full", "centre", "grey") if args.grey else ("full", "centre")
    computed = not cache.is_file()
    if not computed:
        with open(cache, "rb") as f:
            import pickle

            data = pickle.load(f)
    else:
        data = compute(args.distractors, views)
        import pickle

        with open(cache, "wb") as f:
            pickle.dump(data, f, protocol=4)
    rows = []
    for label, vs, taps in candidates(data["views"]):
        r = evaluate(data, vs, taps)
        rows.append({"descriptor": label, "passes": len(vs), **{s: v for s, v in r.items()}})
    rows.sort(key=lambda r: (-r["distinct"]["recall_at_1"], -r["quadrants"]["recall_at_1"]))
    print("| descriptor | passes | distinct r@1 (misses) | quadrants r@1 (misses) | distinct r@10 | quadrants r@10 |")
    print("|---|---|---|---|---|---|")
    for r in rows[:args.top]:
        d, q = r["distinct"], r["quadrants"]
        print(f"| {r['descriptor']} | {r['passes']} | {d['recall_at_1']:.3f} ({d['misses']}) | "
              f"{q['recall_at_1']:.3f} ({q['misses']}) | {d['recall_at_10']:.3f} | {q['recall_at_10']:.3f} |")
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({
        "command": "python benchmarks/quality_mid.py " + " ".join(sys.argv[1:]), "commit": commit,
        "machine": machine(), "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "note": "eager fp32 pooled descriptors combined in NumPy, exact cosine search; a ranking of candidates, "
                "not lookalike eval's figures",
        "features": f"computed once and kept in {args.cache} (computed now)" if computed else
                    f"read from {args.cache}, computed by an earlier run of this script on the same sets",
        "rows": rows}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
