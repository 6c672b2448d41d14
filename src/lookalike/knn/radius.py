"""Radius search on the same screen + bound + exact rerank as `knn`, over a `PreparedBase`."""

from __future__ import annotations

import numpy as np
import torch

from ..errors import InvalidParameter
from ..hardware import free_memory
from .blocks import as_tensor, ranges
from .refine import pair_distances
from .screen import Extent, PreparedBase, Screen, prepare_rows


def radius_search(xq: np.ndarray, base: PreparedBase, radius: float, *, exclude_self: bool = False,
                  sort_results: bool = False, first_row: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Every base row within `radius` of each query (inner products: at least `radius`).

    The base is the one `fit` prepared, at its own precision and on its own device: a row is
    a candidate when its screen score is within twice the bound of its block of the score at
    the radius, and candidates are kept or dropped on their exact float64 distance. Queries
    beyond the base's scale (see `PreparedBase.query_scales`) are screened in float64.

    With `exclude_self`, query i is base row `first_row + i` and is not its own neighbour
    (`xq` is the base, or its rows from `first_row` on).

    Returns
    -------
    distances : ndarray of shape (nq,), dtype object, each item a float64 array
    indices : ndarray of shape (nq,), dtype object, each item an int64 array; by base index,
        or by (distance, index) with `sort_results`.
    """
    m = base.metric
    wide, scale = base.query_scales(xq)
    rows, cols = _candidates(base, base.screen, xq, np.flatnonzero(~wide), radius, streamed=False)
    if wide.any():
        wide_screen = Screen(m, base.d, torch.float64, base.mean64, base.scale)
        r64, c64 = _candidates(base, wide_screen, xq, np.flatnonzero(wide), radius, streamed=True)
        rows, cols = np.concatenate([rows, r64]), np.concatenate([cols, c64])
    if exclude_self:  # query i is base row first_row + i (a block of the base searched against it)
        own = rows + first_row != cols
        rows, cols = rows[own], cols[own]
    dist = pair_distances(m, xq, base.xb, rows, cols, scale=scale)  # of rows times `scale`
    inside = m.sort_key(dist) <= m.sort_key(radius * scale**m.power)
    rows, cols, dist = rows[inside], cols[inside], dist[inside]
    order = np.lexsort((cols, m.sort_key(dist), rows)) if sort_results else np.lexsort((cols, rows))
    rows, cols, dist = rows[order], cols[order], dist[order] / scale**m.power
    bounds = np.searchsorted(rows, np.arange(len(xq) + 1))
    out_d = np.empty(len(xq), dtype=object)
    out_i = np.empty(len(xq), dtype=object)
    for i in range(len(xq)):
        out_d[i] = dist[bounds[i] : bounds[i + 1]]
        out_i[i] = cols[bounds[i] : bounds[i + 1]].astype(np.int64)
    return out_d, out_i


PAIR_BYTES = 64  # a returned pair: its index and distance, and the candidate arrays and sort behind them


def max_pairs() -> int:
    """The most (query, point) pairs a radius search holds: half the memory free, or 2**31."""
    free = free_memory()
    return int(free / 2 // PAIR_BYTES) if free is not None else 2**31


def _candidates(base: PreparedBase, screen: Screen, xq: np.ndarray, which: np.ndarray, radius: float,
                streamed: bool) -> tuple[np.ndarray, np.ndarray]:
    """(query, base row) of every pair of queries `which` whose screen score is within twice
    the bound of the score at the radius. `streamed`: base blocks are prepared for `screen`
    as they go by (a screen other than the base's own)."""
    if not len(which):
        return np.empty(0, dtype=np.int64), np.empty(0, dtype=np.int64)
    q = prepare_rows(screen, xq[which], base.device, working_memory=base.working_memory)
    limit = screen.limit(radius, q) + screen.limit_error(radius, q)
    qb, bb = base.block_sizes(len(which))
    if streamed:
        blocks = ((lo, hi, screen.prepare(as_tensor(np.asarray(base.xb[lo:hi]), base.device)))
                  for lo, hi in ranges(base.nb, bb))
    else:
        blocks = base.blocks(bb)
    rows_all, cols_all = [], []
    held, most = 0, max_pairs()
    for blo, _, b in blocks:
        extent = Extent()
        extent.update(b)
        bound = screen.bound(q, extent)  # valid for this block's candidates
        for qlo, qhi in ranges(len(which), qb):
            s = screen.scores(q[qlo:qhi], b).double()
            keep = s <= (limit[qlo:qhi] + 2 * bound[qlo:qhi])[:, None]
            r, c = keep.nonzero(as_tuple=True)
            rows_all.append(which[(r + qlo).cpu().numpy()])
            cols_all.append((c + blo).cpu().numpy())
            held += len(r)
            if held > most:
                raise InvalidParameter(f"radius {radius:g} holds more than {most} (query, point) pairs, more than "
                                       "half the memory free can return: use a smaller radius or fewer queries")
    return np.concatenate(rows_all), np.concatenate(cols_all)

