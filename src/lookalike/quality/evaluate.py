"""The copy-detection benchmark: index originals (and distractors), query with edited copies,
and measure how often, and how high, each copy's own original comes back.

Per query, the rank of its original among the k nearest indexed images (1 = first; 0 = not
among them) gives three figures, per edit and over all queries:

- recall@1: the share of queries whose original comes first;
- recall@k: the share whose original is among the k nearest;
- MRR: the mean of 1 / rank, counting 0 for an original not among the k nearest (MRR@k).

Originals that are the same pixels (a photo saved twice, in two colour modes) are one
original to the benchmark: a copy of one that finds the other has found its original, since
no model could tell them apart (`Evaluation.identical` names them).

Configurations that differ only in pooling and metric share one pass of the network: the
feature map is computed once and pooled each way (`features.models.pool`, the function the
network itself pools with). Configurations with several views (`features.views`) or with
mid-level features (`features.mid`) run the embedder itself, once per pooling, since each
view and each part is pooled before they are joined.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from PIL import Image

from ..errors import InvalidParameter
from ..features.embed import Embedder
from ..features.models import output_dim, pool
from ..features.mid import NONE as NO_MID
from ..features.views import SINGLE
from ..knn.estimator import NearestNeighbors
from ..progress import counter
from ..sources.base import Source
from ..text import printable
from .configs import Config
from .copies import make_copies, read_originals, source_squares, squares
from .edits import DEFAULT_EDITS, parse_edits

CHUNK = 256  # images per pass of the network; their feature maps are pooled and let go
MAX_MISSES_SHOWN = 24  # misses whose pixels are kept for the picture (all are listed)
# Passes of at least this many images run the traced, frozen network (`Embedder(fast=True)`):
# tracing costs about 13 s once, eager lite0 about 5 s more per 100 images at 64-96 pixels
# (measured on 2 busy cores), so a small evaluation runs eager.
FAST_FROM = 500


@dataclass
class Scores:
    """The figures of a set of queries (see the module's docstring)."""

    queries: int
    recall_at_1: float
    recall_at_k: float
    mrr: float


@dataclass
class Miss:
    """A query whose original did not come first: what was asked, what came back, what should
    have. `rank` is the original's rank (0: not among the k nearest); the pixels are what the
    network saw, square (only for the first `MAX_MISSES_SHOWN` misses)."""

    original: str
    edit: str
    found: str
    rank: int
    pixels: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None  # query, found, original


@dataclass
class Evaluation:
    """One configuration's results on one set of originals, distractors and edits."""

    config: Config
    k: int
    originals: int
    distractors: int
    edits: tuple[str, ...]
    overall: Scores
    per_edit: dict[str, Scores]
    misses: list[Miss] = field(default_factory=list)
    identical: list[list[str]] = field(default_factory=list)  # originals of the same pixels, counted as one

    def to_dict(self) -> dict:
        return {"config": self.config.as_dict(), "k": self.k, "originals": self.originals,
                "distractors": self.distractors, "identical": self.identical, "edits": list(self.edits),
                "overall": vars(self.overall),
                "per_edit": {e: vars(s) for e, s in self.per_edit.items()},
                "misses": [{"original": m.original, "edit": m.edit, "found": m.found, "rank": m.rank}
                           for m in self.misses]}


def ranks_of(I: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """The 1-based rank of `truth[q]` in row q of `I` (n_queries, k); 0 where it is absent."""
    I, truth = np.asarray(I), np.asarray(truth)
    hit = I == truth[:, None]
    return np.where(hit.any(axis=1), hit.argmax(axis=1) + 1, 0)


def identical_originals(originals: Sequence[Image.Image]) -> np.ndarray:
    """For each original, the first original of the same pixels (itself when it has no twin)."""
    import hashlib

    first: dict[bytes, int] = {}
    out = np.empty(len(originals), np.int64)
    for j, im in enumerate(originals):
        pixels = np.asarray(im.convert("RGB"))
        key = hashlib.blake2b(pixels.tobytes() + repr(pixels.shape).encode(), digest_size=16).digest()
        out[j] = first.setdefault(key, j)
    return out


def score(ranks: np.ndarray) -> Scores:
    """recall@1, recall@k and MRR@k of queries whose originals came at `ranks` (0: not in the k)."""
    ranks = np.asarray(ranks)
    if len(ranks) == 0:
        return Scores(0, float("nan"), float("nan"), float("nan"))
    found = ranks > 0
    return Scores(int(len(ranks)), float((ranks == 1).mean()), float(found.mean()),
                  float(np.where(found, 1.0 / np.maximum(ranks, 1), 0.0).mean()))


def evaluate(source: Source, configs: Sequence[Config], *, distractors: Source | None = None,
             edits: Sequence[str] | str = DEFAULT_EDITS, k: int = 10, seed: int = 0, runtime: str = "torch",
             progress: bool = True) -> list[Evaluation]:
    """Run the benchmark for each of `configs` (each resolved first) on the originals of
    `source`, with `distractors` indexed beside them; returns one `Evaluation` per config.

    `k` is capped at the number of indexed images (the figures say the k used).
    """
    originals, ids = read_originals(source)
    return evaluate_images(originals, ids, configs, distractors=distractors, edits=edits, k=k, seed=seed,
                           runtime=runtime, progress=progress)


def evaluate_images(originals: Sequence[Image.Image], ids: Sequence[str], configs: Sequence[Config], *,
                    distractors: Source | None = None, edits: Sequence[str] | str = DEFAULT_EDITS, k: int = 10,
                    seed: int = 0, runtime: str = "torch", progress: bool = True) -> list[Evaluation]:
    """`evaluate` on originals already read (RGB images, with their ids)."""
    edits = parse_edits(edits)
    configs = [c.resolved() for c in configs]
    if not configs:
        raise InvalidParameter("no configuration to evaluate")
    if len(originals) < 2:
        raise InvalidParameter(f"{len(originals)} original(s); an evaluation needs at least two")
    ids = list(ids)
    same = identical_originals(originals)
    copies = make_copies(originals, edits, seed)
    n_dis = 0 if distractors is None else len(distractors)
    groups: dict[tuple, list[Config]] = {}
    for c in configs:
        groups.setdefault((c.model, c.weights, c.input_size, c.resize, c.views, c.mid), []).append(c)
    bar = counter(total=len(groups) * (len(originals) + len(copies) + n_dis), desc="eval", unit="img",
                  enabled=progress)
    results: dict[Config, Evaluation] = {}
    try:
        for (model, weights, size, resize, views, mid), group in groups.items():
            fast = len(originals) + len(copies) + n_dis >= FAST_FROM
            poolings = sorted({c.pooling for c in group})
            embedder: Embedder | dict[str, Embedder]
            if views == SINGLE and mid == NO_MID:  # one pass of the network, pooled each way
                embedder = Embedder(model, weights=weights, pooling="none", views=SINGLE, input_size=size,
                                    fast=fast, runtime=runtime, progress=False)
            else:  # views (mid-level parts) are pooled and joined inside the network's pass: one
                # embedder per pooling
                embedder = {p: Embedder(model, weights=weights, pooling=p, views=views, mid=mid, input_size=size,
                                        fast=fast, runtime=runtime, progress=False) for p in poolings}
            x_orig = squares(originals, size, resize)
            x_copy = squares([c.image for c in copies], size, resize)
            base = _features(embedder, x_orig, poolings, bar)
            queries = _features(embedder, x_copy, poolings, bar)
            kept: list[int] = []
            if distractors is not None:
                dis, kept = _distractor_features(embedder, distractors, size, resize, poolings, bar)
                base = {p: np.concatenate([base[p], dis[p]]) for p in poolings}
            names = ids + [f"distractor {printable(distractors.ids[r])}" for r in kept] if distractors else ids
            for c in group:
                results[c] = _score_config(c, base[c.pooling], queries[c.pooling], copies, names, edits, k,
                                           x_orig, x_copy, distractors, kept, same)
    finally:
        bar.close()
    if distractors is not None and not any(e.distractors for e in results.values()):
        raise InvalidParameter(f"{printable(distractors.name)}: none of its {len(distractors)} image(s) could be "
                               "read as distractors")
    return [results[c] for c in configs]


def _features(embedder: Embedder | dict[str, Embedder], images: np.ndarray, poolings: Sequence[str],
              bar) -> dict[str, np.ndarray]:
    """Each pooling's features of `images`: from one pass of an unpooled network per chunk,
    or from each pooling's own embedder (a dict) when views are aggregated."""
    out: dict[str, list[np.ndarray]] = {p: [] for p in poolings}
    if isinstance(embedder, dict):
        for lo in range(0, len(images), CHUNK):
            for p in poolings:
                out[p].append(embedder[p].embed_array(images[lo:lo + CHUNK]))
            bar.update(len(images[lo:lo + CHUNK]))
        channels = next(iter(embedder.values())).dim
        return {p: np.concatenate(v) if v else np.empty((0, channels), np.float32) for p, v in out.items()}
    channels = embedder.spec.channels
    side = int(round((output_dim(embedder.spec, "none", embedder.input_size) / channels) ** 0.5))
    for lo in range(0, len(images), CHUNK):
        fmap = torch.from_numpy(embedder.embed_array(images[lo:lo + CHUNK])).view(-1, channels, side, side)
        for p in poolings:
            out[p].append(pool(fmap, p).numpy())
        bar.update(len(images[lo:lo + CHUNK]))
    return {p: np.concatenate(v) if v else np.empty((0, channels), np.float32) for p, v in out.items()}


def _distractor_features(embedder: Embedder | dict[str, Embedder], distractors: Source, size: int, resize: str,
                         poolings: Sequence[str], bar) -> tuple[dict[str, np.ndarray], list[int]]:
    parts: dict[str, list[np.ndarray]] = {p: [] for p in poolings}
    kept: list[int] = []
    for lo in range(0, len(distractors), CHUNK):
        rows = range(lo, min(lo + CHUNK, len(distractors)))
        pixels, ok = source_squares(distractors, rows, size, resize)
        feats = _features(embedder, pixels, poolings, bar)
        bar.update(len(rows) - len(ok))
        for p in poolings:
            parts[p].append(feats[p])
        kept += ok
    return {p: np.concatenate(v) for p, v in parts.items()}, kept


def _score_config(c: Config, xb: np.ndarray, xq: np.ndarray, copies, names: list[str], edits: tuple[str, ...],
                  k: int, x_orig: np.ndarray, x_copy: np.ndarray, distractors: Source | None,
                  kept: list[int], same: np.ndarray) -> Evaluation:
    k = min(k, len(xb))
    I = NearestNeighbors(k, metric=c.metric).fit(xb).kneighbors(xq, return_distance=False)
    truth = np.array([cp.original for cp in copies])
    one = np.concatenate([same, np.arange(len(same), len(xb))])  # an original as its first twin; distractors own
    ranks = ranks_of(one[I], same[truth])
    edit_of = np.array([cp.edit for cp in copies])
    per_edit = {e: score(ranks[edit_of == e]) for e in edits}
    n_orig = len(x_orig)
    misses = []
    for q in np.flatnonzero(ranks != 1):
        found = int(I[q, 0])
        miss = Miss(names[truth[q]], str(edit_of[q]), names[found], int(ranks[q]))
        if len(misses) < MAX_MISSES_SHOWN:
            if found < n_orig:
                found_px = x_orig[found]
            else:
                found_px = source_squares(distractors, [kept[found - n_orig]], c.input_size, c.resize)[0][0]
            miss.pixels = (x_copy[q], found_px, x_orig[truth[q]])
        misses.append(miss)
    twins = [[names[j] for j in np.flatnonzero(same == g)] for g in np.unique(same)]
    return Evaluation(c, k, n_orig, len(kept), edits, score(ranks), per_edit, misses,
                      [t for t in twins if len(t) > 1])
