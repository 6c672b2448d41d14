"""Radius search on the same screen + bound + exact rerank as `knn`, over a `PreparedBase`."""

from __future__ import annotations

import numpy as np

from .blocks import ranges
from .refine import pair_distances
from .screen import Extent, PreparedBase, prepare_rows


def radius_search(xq: np.ndarray, base: PreparedBase, radius: float, *, exclude_self: bool = False,
                  sort_results: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Every base row within `radius` of each query (inner products: at least `radius`).

    The base is the one `fit` prepared, at its own precision and on its own device: a row is
    a candidate when its screen score is within twice the bound of its block of the score at
    the radius, and candidates are kept or dropped on their exact float64 distance.

    Returns
    -------
    distances : ndarray of shape (nq,), dtype object, each item a float64 array
    indices : ndarray of shape (nq,), dtype object, each item an int64 array; by base index,
        or by (distance, index) with `sort_results`.
    """
    m, screen = base.metric, base.screen
    q = prepare_rows(screen, xq, base.device)
    limit = screen.limit(radius, q)
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
            rows_all.append((r + qlo).cpu().numpy())
            cols_all.append((c + blo).cpu().numpy())
    rows, cols = np.concatenate(rows_all), np.concatenate(cols_all)
    if exclude_self:
        rows, cols = rows[rows != cols], cols[rows != cols]
    dist = pair_distances(m, xq, base.xb, rows, cols)
    inside = m.sort_key(dist) <= m.sort_key(radius)
    rows, cols, dist = rows[inside], cols[inside], dist[inside]
    order = np.lexsort((cols, m.sort_key(dist), rows)) if sort_results else np.lexsort((cols, rows))
    rows, cols, dist = rows[order], cols[order], dist[order]
    bounds = np.searchsorted(rows, np.arange(len(xq) + 1))
    out_d = np.empty(len(xq), dtype=object)
    out_i = np.empty(len(xq), dtype=object)
    for i in range(len(xq)):
        out_d[i] = dist[bounds[i] : bounds[i + 1]]
        out_i[i] = cols[bounds[i] : bounds[i + 1]].astype(np.int64)
    return out_d, out_i

