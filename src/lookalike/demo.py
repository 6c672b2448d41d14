"""`lookalike demo`: the whole tutorial, offline, in one call.

sample set (or STL-10) -> show -> 9:1 split -> features -> index -> search every query ->
backend comparison -> verification -> retrieval quality -> grid.png, bench.png, bench.json,
report.md.
"""

from __future__ import annotations

import shutil
import sys
import time
from pathlib import Path

import numpy as np

from .errors import LookalikeError


def run_demo(out: str | Path = "demo-out", *, dataset: str = "sample", n: int = 2000, k: int = 3,
             stl10_root: str | None = None, seed: int = 0, progress: bool = True) -> Path:
    """Run the tutorial end to end into folder `out`; returns the path of report.md."""
    from . import bench
    from .features import Embedder
    from .index import Index
    from .knn import NearestNeighbors, compare
    from .quality import altered_copy_accuracy
    from .report.figures import image_grid, result_grid
    from .sources import STL10Source, SampleSource, split

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    clock: dict[str, float] = {}

    def step(name: str) -> None:
        if progress:
            print(f"[demo] {name}", file=sys.stderr, flush=True)

    step("1/8 images")
    t0 = time.perf_counter()
    if dataset == "stl10":
        source = STL10Source(stl10_root)
        model, weights = "resnet50", "imagenet"
    elif dataset == "sample":
        source = SampleSource(n, seed=seed)
        model, weights = "efficientnet_lite0", "imagenet"
    else:
        raise LookalikeError(f"unknown dataset {dataset!r}; use sample or stl10")
    picks = np.sort(np.random.default_rng(seed).choice(len(source), min(8, len(source)), replace=False))
    image_grid(source.read(picks), [source.ids[i] + (f"\n{source.label(i)}" if source.labels is not None else "")
                                    for i in picks], out / "images.png", suptitle=f"{source.name}: 8 random images")
    index_set, query_set = split(source, 0.1, seed)
    clock["load"] = time.perf_counter() - t0

    step(f"2/8 features: {model} ({weights}) on {len(source)} images")
    embedder = Embedder(model, weights=weights, progress=progress)
    t0 = time.perf_counter()
    features = embedder.embed(source, out / "features.npy")
    clock["embed"] = time.perf_counter() - t0

    step("3/8 index")
    t0 = time.perf_counter()
    if (out / "index").exists():
        shutil.rmtree(out / "index")
    index = Index.from_features(features[index_set.indices], index_set, embedder.config(), out / "index")
    clock["index"] = time.perf_counter() - t0

    step(f"4/8 search: {len(query_set)} queries, k={k}")
    xq = np.ascontiguousarray(features[query_set.indices])
    t0 = time.perf_counter()
    D, I = index.search_vectors(xq, k)
    clock["search"] = time.perf_counter() - t0

    step("5/8 the tutorial's check: scikit-learn brute force against lookalike")
    sk = NearestNeighbors(k, backend="sklearn").fit(np.asarray(index.vectors()))
    D_sk, I_sk = sk.kneighbors(xq)
    tutorial_check = compare(D_sk, I_sk, D, I)

    step("6/8 backend comparison (each backend in its own process, verified against float64)")
    result = bench.run(features=str(out / "features.npy"), k=k, out=out,  # the bench's own backends
                       verify_queries=len(xq), seed=seed, progress=progress)

    step("7/8 retrieval quality")
    quality: dict = {}
    if query_set.labels is not None and dataset == "sample":
        same = index_set.labels[I] == query_set.labels[:, None]
        quality["sample_top1"] = float(same[:, 0].mean())
        quality["sample_precision_at_k"] = float(same.mean())
    quality["altered"] = altered_copy_accuracy(embedder)

    step("8/8 pictures and report")
    rows = np.sort(np.random.default_rng(seed).choice(len(query_set), min(5, len(query_set)), replace=False))
    nb_px = index.read_pixels(I[rows].ravel().tolist()).reshape(len(rows), k, *source.image_shape)
    nb_meta = {m.id: m for m in index.images(sorted(set(I[rows].ravel().tolist())))}
    titles = [[nb_meta[int(i)].key + (f"\n{nb_meta[int(i)].label}" if nb_meta[int(i)].label else "")
               for i in I[r]] for r in rows]
    q_titles = [query_set.ids[r] + (f"\n{query_set.label(r)}" if query_set.labels is not None else "") for r in rows]
    result_grid(query_set.read(rows), q_titles, nb_px, D[rows], titles, out / "grid.png")
    report = out / "report.md"
    report.write_text(_report(source, index_set, query_set, embedder, k, clock, tutorial_check, result, quality))
    return report


def _report(source, index_set, query_set, embedder, k, clock, check, result, quality) -> str:
    from .bench import table

    lines = [
        "# lookalike demo report", "",
        f"Images: **{len(source)}** from `{source.name}`, split 9:1 into **{len(index_set)}** indexed and "
        f"**{len(query_set)}** queries.  ",
        f"Features: `{embedder.model}` ({embedder.weights_id}), {embedder.pooling} pooling, "
        f"input {embedder.input_size}x{embedder.input_size}, {embedder.dim}-d, "
        f"{str(embedder.dtype).removeprefix('torch.')}.", "",
        "![queries and their nearest neighbours](grid.png)", "",
        "## Timings", "",
        "| step | seconds |", "|---|---|",
        f"| load and split | {clock['load']:.2f} |",
        f"| features ({len(source) / max(clock['embed'], 1e-9):.0f} images/s) | {clock['embed']:.2f} |",
        f"| index | {clock['index']:.2f} |",
        f"| search, {len(query_set)} queries, k={k} | {clock['search']:.3f} |", "",
        "## Backends, same features, same run", "",
        "Each backend ran in its own process; the speed-up is over scikit-learn's brute force. "
        "Verification is against an independent float64 brute force on every query.", "",
        "```", table(result), "```", "",
        "![backend comparison](bench.png)", "",
        "## Verification", "",
        "The tutorial compares the GPU and CPU results by distance and accepts a difference below 1. "
        "lookalike against scikit-learn here:", "",
        f"- largest absolute distance difference: **{check['max_abs_dist_diff']:.3g}**",
        f"- queries whose neighbour set differs: **{check['frac_neighbor_sets_differ']:.2%}** "
        f"({check['frac_neighbor_sets_differ_beyond_ties']:.2%} beyond exact ties)", "",
        "## Retrieval quality", "",
    ]
    if "sample_top1" in quality:
        lines += [f"- nearest neighbour cut from the same photo as the query: **{quality['sample_top1']:.1%}**; "
                  f"precision at {k}: **{quality['sample_precision_at_k']:.1%}**"]
    alt = quality["altered"]
    lines += [f"- altered copies of {alt['photos']} real photos ({alt['queries']} queries: crop to 70%, flip, "
              f"brighten, JPEG quality 30, rotate 10 degrees): own photo first for **{alt['top1']:.1%}**",
              "", "| alteration | top-1 |", "|---|---|"]
    lines += [f"| {kind} | {acc:.0%} |" for kind, acc in alt["per_alteration"].items()]
    if alt["misses"]:
        lines += ["", "Misses: " + "; ".join(alt["misses"])]
    lines += ["", "![random images of the set](images.png)", ""]
    return "\n".join(lines)
