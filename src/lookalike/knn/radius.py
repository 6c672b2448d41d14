"""Radius search on the same screen + bound + exact rerank as `knn`."""

from __future__ import annotations

import numpy as np
import torch

from .blocks import ranges
from .refine import pair_distances
from .screen import Extent, PreparedBase, prepare_rows
from .metrics import Metric


def radius_search(xq: np.ndarray, xb: np.ndarray, radius: float, metric: Metric, *, exclude_self: bool = False,
                  sort_results: bool = False, working_memory: float | None = None):
    """Every base row within `radius` of each query (inner products: at least `radius`).

    Returns two object arrays of shape (nq,): float64 distances and int64 indices.
    """
    base = PreparedBase(xb, metric.name, working_memory=working_memory, materialise=False)
    screen = base.screen
    q = prepare_rows(screen, xq, base.device)
    qn = q.l2
    # the screen score a candidate must not exceed, before the error bound
    if metric.name == "euclidean":
        limit = radius**2 - qn**2
    elif metric.name == "sqeuclidean":
        limit = radius - qn**2
    elif metric.name == "cosine":
        limit = torch.full_like(qn, radius - 1.0)
    elif metric.name == "inner_product":
        limit = torch.full_like(qn, -radius)
    else:
        limit = torch.full_like(qn, radius)
    qb, bb = base.block_sizes(len(xq))
    rows_all, cols_all = [], []
    for blo, bhi, b in base.blocks(bb):
        extent = Extent()
        extent.update(b)
        bound = screen.bound(q, extent)  # valid for this block's candidates
        for qlo, qhi in ranges(len(xq), qb):
            s = screen.scores(q[qlo:qhi], b).double()
            keep = s <= (limit[qlo:qhi] + 2 * bound[qlo:qhi])[:, None]
            r, c = keep.nonzero(as_tuple=True)
            rows_all.append((r + qlo).numpy())
            cols_all.append((c + blo).numpy())
    rows, cols = np.concatenate(rows_all), np.concatenate(cols_all)
    if exclude_self:
        rows, cols = rows[rows != cols], cols[rows != cols]
    dist = pair_distances(metric, xq, xb, rows, cols)
    inside = dist >= radius if metric.largest_first else dist <= radius
    rows, cols, dist = rows[inside], cols[inside], dist[inside]
    key = -dist if metric.largest_first else dist
    order = np.lexsort((cols, key, rows)) if sort_results else np.lexsort((cols, rows))
    rows, cols, dist = rows[order], cols[order], dist[order]
    bounds = np.searchsorted(rows, np.arange(len(xq) + 1))
    out_d = np.empty(len(xq), dtype=object)
    out_i = np.empty(len(xq), dtype=object)
    for i in range(len(xq)):
        out_d[i] = dist[bounds[i] : bounds[i + 1]]
        out_i[i] = cols[bounds[i] : bounds[i + 1]].astype(np.int64)
    return out_d, out_i
