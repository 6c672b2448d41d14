"""The exact merge of per-shard results: the k best of every shard's k best.

Each shard answers with its own k best pairs (or all its rows when it has fewer), their
global indices and their exact float64 distances. The k best of the union are the k best
of the whole base: a neighbour left out of its shard's list has k better ones in that
shard alone. They are ordered as the single-machine engine orders them (`refine.pick`):
by the metric's sort key on the float64 distance (inner products: largest first), then by
the lower global index; only then are distances rounded to float32. Sorting on the float32
values instead would misorder pairs that differ only below float32's precision (and
sorting by the magnitude alone reverses the order of metrics that are largest first, as
FAISS's shard merge does for L1 and Linf: facebookresearch/faiss#5503).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ..knn.metrics import Metric, get_metric


def merge_results(parts: Sequence[tuple[np.ndarray, np.ndarray]], k: int,
                  metric: str | Metric = "euclidean") -> tuple[np.ndarray, np.ndarray]:
    """The k best pairs of each query over all `parts`.

    Parameters
    ----------
    parts : sequence of (D, I): D float64 of shape (nq, k_i), exact distances (inner
        products for 'inner_product'); I int64 of shape (nq, k_i), global indices. k_i may
        differ between parts (a shard smaller than k), and be 0.
    k : neighbours to keep, at most the sum of the k_i.

    Returns
    -------
    D : ndarray of shape (nq, k), float32, in the metric's order
    I : ndarray of shape (nq, k), int64; equal distances go to the lower index
    """
    m = get_metric(metric)
    D = np.concatenate([np.asarray(p[0], dtype=np.float64) for p in parts], axis=1)
    I = np.concatenate([np.asarray(p[1], dtype=np.int64) for p in parts], axis=1)
    if D.shape[1] < k:
        raise RuntimeError(f"internal: the shards returned {D.shape[1]} candidates per query for k={k}")
    order = np.lexsort((I, m.sort_key(D)), axis=-1)[:, :k]
    return (np.take_along_axis(D, order, axis=1).astype(np.float32),
            np.take_along_axis(I, order, axis=1))
