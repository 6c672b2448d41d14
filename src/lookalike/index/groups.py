"""Near-duplicate groups: every pair of live images within a distance, joined into groups.

The index is searched against itself with the exact engine's radius search, one block of
queries at a time against the base streamed in blocks (`knn.radius`): memory grows with
the block sizes and with the pairs found, never with N x N. Each pair is kept once (the
lower row asks), and the pairs are joined into connected components (union-find), so a
chain a~b~c is one group even when a and c are further apart than the threshold.

The default threshold is `FRACTION` of the median distance between two images of the index
picked at random (estimated on `PAIRS` random pairs): near-duplicates (the same picture
re-encoded, resized, slightly cropped or brightened) sit far below the distance of unrelated
images, whatever the model's scale of distances.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from ..errors import InvalidParameter
from ..knn.metrics import exact_distances, get_metric
from ..knn.radius import radius_search
from ..knn.screen import PreparedBase
from ..progress import counter

FRACTION = 0.3  # of the median random-pair distance: the default threshold
PAIRS = 20_000  # random pairs that estimate the median distance
QUERY_BLOCK = 8192  # queries per radius search (each one streams the base through once)
WORKING_MEMORY = 128  # MiB for blocks of screen scores (the engine's default, 1 GiB, would double the peak)


@dataclass
class Groups:
    """What `near_duplicates` found: `groups` of image ids (each ascending; largest group
    first, then by smallest id), the `threshold` used, and how many `pairs` were within it."""

    threshold: float
    groups: list[list[int]]
    pairs: int
    metric: str
    images: int
    default_threshold: bool = False
    distances: dict[tuple[int, int], float] = field(default_factory=dict, repr=False)

    def as_dict(self) -> dict:
        return {"threshold": self.threshold, "default_threshold": self.default_threshold, "metric": self.metric,
                "images": self.images, "pairs": self.pairs, "groups": self.groups}


def check_threshold(value: float | None) -> float | None:
    """`value` as a threshold: a finite number >= 0 (None: the default)."""
    if value is None:
        return None
    try:
        value = float(value)
    except (TypeError, ValueError):
        raise InvalidParameter(f"threshold {value!r} is not a number") from None
    if not math.isfinite(value) or value < 0:
        raise InvalidParameter(f"threshold {value!r}: give a finite distance >= 0")
    return value


def default_threshold(vectors, metric: str, seed: int = 0) -> float:
    """`FRACTION` of the median distance between random pairs of rows of `vectors`."""
    m = get_metric(metric)
    if m.largest_first:
        raise InvalidParameter(f"metric {m.name} ranks by similarity, not distance: give --threshold "
                               "(the smallest inner product of a pair)")
    n = len(vectors)
    if n < 2:
        return 0.0
    rng = np.random.default_rng(seed)
    i = rng.integers(0, n, PAIRS)
    j = (i + rng.integers(1, n, PAIRS)) % n  # never i itself
    order = np.argsort(i)  # memory maps are read in order
    a = np.asarray(vectors[np.sort(i)], dtype=np.float32)
    b = np.asarray(vectors[j[order]], dtype=np.float32)
    return float(FRACTION * np.median(exact_distances(m, a, b).numpy()))


def near_duplicates(vectors, ids: np.ndarray, metric: str, threshold: float | None = None, *,
                    progress: bool = True, working_memory: float | None = None,
                    queries: int | None = None) -> Groups:
    """Groups of near-duplicate rows of `vectors` (n, d; a memory map is streamed), named
    by `ids` (n,). `threshold`: the largest distance of a pair (None: `default_threshold`).
    `queries`: only the first rows ask, against all (a part of the work: for a benchmark)."""
    threshold = check_threshold(threshold)
    chosen = threshold is None
    m = get_metric(metric)
    if chosen:
        threshold = default_threshold(vectors, m.name)
    n = len(vectors)
    ids = np.asarray(ids, dtype=np.int64)
    if n < 2:
        return Groups(threshold, [], 0, m.name, n, chosen)
    _fixed_mmap_threshold()
    base = PreparedBase(vectors, m, working_memory=working_memory or WORKING_MEMORY, materialise=False)
    parent = np.arange(n)
    lows, highs, dists = [], [], []
    asking = n if queries is None else min(n, queries)
    bar = counter(total=asking, desc="pairs", unit="img", enabled=progress)
    try:
        for lo in range(0, asking, QUERY_BLOCK):
            hi = min(lo + QUERY_BLOCK, asking)
            D, I = radius_search(np.asarray(vectors[lo:hi], dtype=np.float32), base, threshold,
                                 exclude_self=True, first_row=lo)
            for q in range(hi - lo):
                later = I[q] > lo + q  # each pair once, asked by its lower row
                if later.any():
                    lows.append(np.full(int(later.sum()), lo + q))
                    highs.append(I[q][later])
                    dists.append(D[q][later])
            bar.update(hi - lo)
    finally:
        bar.close()
    a = np.concatenate(lows) if lows else np.empty(0, np.int64)
    b = np.concatenate(highs) if highs else np.empty(0, np.int64)
    d = np.concatenate(dists) if dists else np.empty(0)
    for x, y in zip(a.tolist(), b.tolist()):
        rx, ry = _root(parent, x), _root(parent, y)
        if rx != ry:
            parent[max(rx, ry)] = min(rx, ry)
    members: dict[int, list[int]] = {}
    for r in np.unique(np.concatenate([a, b])).tolist():
        members.setdefault(_root(parent, r), []).append(int(ids[r]))
    groups = sorted((sorted(g) for g in members.values()), key=lambda g: (-len(g), g[0]))
    pairs = {(int(ids[x]), int(ids[y])): float(v) for x, y, v in zip(a.tolist(), b.tolist(), d.tolist())}
    return Groups(threshold, groups, len(a), m.name, n, chosen, pairs)


def _fixed_mmap_threshold(threshold: int = 2**20) -> None:
    """Blocks of 1 MiB or more go to their own mappings, returned to the system when freed.

    glibc raises its mmap threshold each time a large block is freed (up to 32 MiB), so the
    engine's block-sized temporaries then come from the heap, which fragments and grows block
    after block: measured at 40,000 x 1,280-d, peak memory 1,116 MiB against 718 MiB with the
    threshold fixed (as `MALLOC_MMAP_THRESHOLD_` would), and at 100,000 rows it crossed 2 GiB.
    Setting it turns the adjustment off for the process; elsewhere than glibc, nothing happens.
    """
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").mallopt(-3, int(threshold))  # M_MMAP_THRESHOLD
    except (OSError, AttributeError):
        pass


def _root(parent: np.ndarray, x: int) -> int:
    while parent[x] != x:
        parent[x] = parent[parent[x]]
        x = parent[x]
    return x
