"""A deterministic split of a source into an index set and a query set (9:1 by default)."""

from __future__ import annotations

import numpy as np

from ..errors import SourceError
from .base import Source, Subset


def split_indices(n: int, query_fraction: float = 0.1, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Shuffle `range(n)` with `seed` and cut it; each part comes back sorted.

    Returns
    -------
    index_idx : ndarray of shape (n - n_query,), int64
    query_idx : ndarray of shape (n_query,), int64, with n_query = round(n * query_fraction)
    """
    if not 0.0 < query_fraction < 1.0:
        raise SourceError(f"query fraction {query_fraction} must lie strictly between 0 and 1")
    n_query = int(round(n * query_fraction))
    if n_query < 1 or n_query >= n:
        raise SourceError(f"cannot split {n} images with query fraction {query_fraction}")
    order = np.random.default_rng(seed).permutation(n)
    return np.sort(order[n_query:]), np.sort(order[:n_query])


def split(source: Source, query_fraction: float = 0.1, seed: int = 0) -> tuple[Subset, Subset]:
    """Split `source` into (index set, query set)."""
    index_idx, query_idx = split_indices(len(source), query_fraction, seed)
    return source.subset(index_idx, f"{source.name}[index]"), source.subset(query_idx, f"{source.name}[query]")
