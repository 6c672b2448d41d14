"""`lookalike demo`: the whole tutorial, offline, in one call.

sample set (or STL-10) -> show -> 9:1 split -> features -> index -> search every query ->
backend comparison -> verification -> retrieval quality -> grid.png, bench.png, bench.json,
report.md.

The output folder is the demo's own: a new or empty folder, which it marks as its own
(`.lookalike`), or one it marked before (a second run replaces its outputs there). A folder
holding anything else is refused unless `force`, and even then only the demo's own file
names are written there; nothing else is touched.
"""

from __future__ import annotations

import shutil
import sys
import time
from pathlib import Path

import numpy as np

from .atomic import atomic_write_text, check_output_folder, claim_own_folder, make_own_folder
from .errors import InvalidParameter
from .sources.base import Source


DATASETS = ("sample", "stl10")
KIND = "demo"  # the marker of the demo's own output folder
OUTPUTS = ("images.png", "features.npy", "features.json", "index", "bench.json", "bench.png", "grid.png",
           "report.md")


def check_demo_out(out: str | Path, force: bool = False) -> Path:
    """`out` as the demo's output folder, before any work (see the module's docstring)."""
    from .features.files import is_own_sidecar
    from .index import IndexStore

    out = check_output_folder(out, kind=KIND, force=force)
    for name in OUTPUTS:
        path = out / name
        if name == "index" and path.exists() and not IndexStore.looks_like_index(path):
            raise InvalidParameter(f"{path}: holds files lookalike did not write; the demo puts its index there, "
                                   "so move it away or give another --out")
        if name != "index" and path.is_dir():
            raise InvalidParameter(f"{path}: is a folder; the demo writes its {name} there, so move it away "
                                   "or give another --out")
        if name == "features.json" and path.exists() and not is_own_sidecar(path) and not force:
            raise InvalidParameter(f"{path}: is not a sidecar lookalike wrote; the demo writes its features' "
                                   "sidecar there, so move it away, or give --force to replace it")
    return out


def _take_folder(out: Path, force: bool) -> None:
    """Make `out` the demo's own (checked by `check_demo_out` before)."""
    if not force:
        make_own_folder(out, KIND)
        return
    out.mkdir(exist_ok=True)
    claim_own_folder(out, KIND)
    (out / "features.json").unlink(missing_ok=True)  # --force: replaced, whoever wrote it


def run_demo(out: str | Path = "demo-out", *, dataset: str = "sample", n: int = 2000, k: int = 3,
             stl10_root: str | None = None, seed: int = 0, progress: bool = True, force: bool = False) -> Path:
    """Run the tutorial end to end into folder `out`; returns the path of report.md.

    Its eight steps read in the tutorial's order, one after another; each says so on stderr.
    `out` must be new, empty or the demo's own from an earlier run; `force` writes the
    demo's files into any folder (see the module's docstring).
    """
    from . import bench
    from .features import Embedder
    from .knn import NearestNeighbors, compare
    from .report.grids import neighbour_grid, pick, sample_grid
    from .sources import split

    out = check_demo_out(out, force)
    source, model, weights = _images(dataset, n, seed, stl10_root)  # a bad dataset: said before any write
    _take_folder(out, force)
    clock: dict[str, float] = {}

    def step(name: str) -> None:
        if progress:
            print(f"[demo] {name}", file=sys.stderr, flush=True)

    step("1/8 images")
    t0 = time.perf_counter()
    sample_grid(source, 8, seed=seed, out=out / "images.png")
    index_set, query_set = split(source, 0.1, seed)
    clock["load"] = time.perf_counter() - t0

    step(f"2/8 features: {model} ({weights}) on {len(source)} images")
    embedder = Embedder(model, weights=weights, progress=progress)
    t0 = time.perf_counter()
    embedded = embedder.embed_rows(source, out / "features.npy")
    features = embedded.features
    clock["embed"] = time.perf_counter() - t0

    step("3/8 index")
    t0 = time.perf_counter()
    index = _index(out / "index", embedded, index_set, embedder.config())
    clock["index"] = time.perf_counter() - t0

    step(f"4/8 search: {len(query_set)} queries, k={k}")
    xq = np.ascontiguousarray(features[query_set.indices])
    t0 = time.perf_counter()
    D, I = index.search_vectors(xq, k)
    clock["search"] = time.perf_counter() - t0

    step("5/8 the tutorial's check: scikit-learn brute force against lookalike")
    sk = NearestNeighbors(k, metric=index.metric, backend="sklearn").fit(np.asarray(index.vectors()))
    D_sk, I_sk = sk.kneighbors(xq)
    tutorial_check = compare(D_sk, I_sk, D, I)

    step("6/8 backend comparison (each backend in its own process, verified against float64)")
    # the bench's own backends; a search as the demo's index repeats it (the first of each
    # process, which also pays for buffers and probes once, is in bench.json and the table)
    result = bench.run(features=str(out / "features.npy"), k=k, out=out,
                       verify_queries=len(xq), seed=seed, progress=progress, steady=True)

    step("7/8 retrieval quality")
    quality = _quality(embedder, index_set, query_set, I, sample=dataset == "sample", progress=progress)

    step("8/8 pictures and report")
    rows = pick(len(query_set), 5, seed)
    neighbour_grid(query_set, rows, index, D[rows], I[rows], out / "grid.png")
    report = out / "report.md"
    text = _report(source, index_set, query_set, embedder, k, clock, tutorial_check, result, quality)
    atomic_write_text(report, text)
    return report


def _index(path: Path, embedded, index_set: Source, config: dict):
    """The demo's index of `index_set` at `path`, in place of an earlier run's (checked to be an
    index, and nothing else, before the work started)."""
    from .index import Index, IndexStore

    if IndexStore.looks_like_index(path):
        shutil.rmtree(path)
    return Index.from_features(embedded.features[index_set.indices], index_set, config, path,
                               digests=[embedded.digests[i] for i in index_set.indices])


def _images(dataset: str, n: int, seed: int, stl10_root: str | None) -> tuple[Source, str, str]:
    """(source, model, weights) of a demo `dataset`: STL-10 with the tutorial's ResNet-50, or the
    sample set with the offline EfficientNet-Lite0."""
    from .sources import SampleSource, STL10Source

    if dataset == "stl10":
        return STL10Source(stl10_root), "resnet50", "imagenet"
    if dataset == "sample":
        return SampleSource(n, seed=seed), "efficientnet_lite0", "imagenet"
    raise InvalidParameter(f"unknown dataset {dataset!r}; use {' or '.join(DATASETS)}")


def _quality(embedder, index_set: Source, query_set: Source, I: np.ndarray, sample: bool,
             progress: bool = True) -> dict:
    """Share of queries whose neighbours are cut from the same photo (the sample set's labels),
    and the copy-detection benchmark (`lookalike eval`) on the real photos the sample set is
    cut from, for lookalike's default setting and the tutorial's."""
    from .features.models import imagenet_at_hand
    from .quality import PRESETS, evaluate_images, photo_originals

    quality: dict = {}
    if sample and query_set.labels is not None:
        same = index_set.labels[I] == query_set.labels[:, None]
        quality["sample_top1"] = float(same[:, 0].mean())
        quality["sample_precision_at_k"] = float(same.mean())
    configs = [PRESETS["default"].resolved()]
    tutorial = PRESETS["tutorial"]
    if imagenet_at_hand(tutorial.model):
        configs.append(tutorial.resolved())
    else:  # not downloaded: the default model with the tutorial's pooling and metric stands in
        quality["tutorial_missing"] = f"{tutorial.model}'s ImageNet weights are not downloaded"
        configs.append(PRESETS["previous"].resolved())
    originals, ids = photo_originals()
    quality["eval"] = evaluate_images(originals, ids, configs, k=3, progress=progress)
    return quality


def _report(source, index_set, query_set, embedder, k, clock, check, result, quality) -> str:
    from .bench import table

    lines = [
        "# lookalike demo report", "",
        f"Images: **{len(source)}** from `{source.name}`, split 9:1 into **{len(index_set)}** indexed and "
        f"**{len(query_set)}** queries.  ",
        f"Features: `{embedder.model}` ({embedder.weights_id}), {embedder.pooling} pooling, views "
        f"{embedder.views}, mid-level features {embedder.mid}, "
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
        "Each backend ran in its own process and searched every query once, then again for a quarter of a "
        "second; the time is the best of those repeats (a repeated search, as an index serves them), the "
        "first search is on the line under the table. "
        "The speed-up is over scikit-learn's brute force. "
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
    from .quality.tables import configs_table, table

    evals = quality["eval"]
    lines += ["", f"Copy detection (`lookalike eval`) on the {evals[0].originals} real photographs the sample set "
              "is cut from: each photo is indexed whole and queried with edited copies of itself; "
              "docs/quality.md has the figures on a held-out set with 3,000 distractors.", ""]
    if "tutorial_missing" in quality:
        lines += [f"The tutorial's setting (resnet50, max pooling, euclidean) is not shown: "
                  f"{quality['tutorial_missing']} (`lookalike eval SOURCE --compare tutorial` once they are); "
                  "`previous` is the default model with the tutorial's pooling and metric.", ""]
    lines += [table(evals), "", configs_table(evals)]
    lines += ["", "![random images of the set](images.png)", ""]
    return "\n".join(lines)
