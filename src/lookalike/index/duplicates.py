"""Images an index holds already: the same place (file, or source and position) and the same
pixels (a content digest stored with each image since index format 2).

An image of a format-1 index has no digest: an image from the same place is then embedded
and compared by vector (`same_vectors`) before it is committed.
"""

from __future__ import annotations

import numpy as np

from ..features.files import image_digests
from ..sources.base import Source
from .store import IndexStore, origin

RTOL = 1e-3  # two vectors of one image, embedded twice by one model, are within this (relative, L2)


def find_duplicates(store: IndexStore, source: Source, metas: list[dict],
                    batch_size: int) -> tuple[set[int], dict[int, list[int]]]:
    """(rows of `source` the index holds already, {row: ids of images from the same place
    whose digest is not known}). Only images from a place the index knows are read."""
    origins = store.origins()
    matches = {}
    for i, m in enumerate(metas):
        ids = origins.get(origin(m["source"], m["position"], m["location"]))
        if ids:
            matches[i] = ids
    if not matches:
        return set(), {}
    known = store.digests(sorted({j for ids in matches.values() for j in ids}))
    digests = _digests(source, sorted(matches), batch_size)
    dups, unknown = set(), {}
    for i, ids in matches.items():
        if i in digests and digests[i] in {known[j] for j in ids}:
            dups.add(i)
        elif any(known[j] is None for j in ids):
            unknown[i] = [j for j in ids if known[j] is None]
    return dups, unknown


def _digests(source: Source, rows: list[int], batch_size: int) -> dict[int, str]:
    """Row -> content digest of the images of `source` at `rows` that decode."""
    found = {}
    for lo in range(0, len(rows), batch_size):
        chunk = rows[lo : lo + batch_size]
        images, failed = source.read_available(chunk)
        ok = [r for j, r in enumerate(chunk) if j not in failed]
        found.update(zip(ok, image_digests(images)))
    return found


def same_vectors(vector: np.ndarray, others: np.ndarray) -> bool:
    """Whether `vector` (d,) equals one of `others` (n, d) up to the noise of embedding twice."""
    others = np.asarray(others, dtype=np.float64).reshape(-1, len(vector))
    gaps = np.linalg.norm(others - vector, axis=1)
    return bool(np.any(gaps <= RTOL * np.maximum(np.linalg.norm(others, axis=1), 1e-12)))
