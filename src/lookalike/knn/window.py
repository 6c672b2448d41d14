"""Stage 3 of the engine: each query's window of candidates.

Screen scores carry rounding (and quantisation) error, at most E per query (the screen's
bound). Every true neighbour then scores within 2E of the k-th best screen score, so the
`Window` keeps each query's k best scores so far and every candidate inside
(k-th so far + 2E). `smallest_k` and `hits` read each block of scores once for the minima of
strided column groups, then look again only at the groups that matter.
"""

from __future__ import annotations

import math

import torch


def smallest_k(s: torch.Tensor, K: int, groups: int = 8) -> tuple[torch.Tensor, torch.Tensor]:
    """Values and column indices of the K smallest scores of each row, unordered.

    The K smallest of a row lie in the K column groups with the smallest minima (a group
    outside them would have K smaller elements before its own). So: minima over `groups`
    strided column groups (one vectorised pass), a top-K of those, then a top-K of just
    the K * groups candidate columns. Measured 2.2x faster than one top-K over the row.
    """
    q, b = s.shape
    if b % groups or b < 4 * groups * K:
        return torch.topk(s, min(K, b), dim=1, largest=False, sorted=False)
    w = b // groups
    minima = s.view(q, groups, w).amin(1)  # minimum over columns j, j + w, j + 2w, ...
    _, sub = torch.topk(minima, K, dim=1, largest=False, sorted=False)
    cols = (sub[:, :, None] + torch.arange(groups, device=s.device) * w).reshape(q, -1)
    vals, pos = torch.topk(torch.gather(s, 1, cols), K, dim=1, largest=False, sorted=False)
    return vals, torch.gather(cols, 1, pos)


def hits(s: torch.Tensor, thr: torch.Tensor, groups: int = 8) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(row, column, score) of every score at most its row's threshold, rows ascending.

    Few scores pass, so the block is read once for the minima of `groups` strided column
    groups; only the groups whose minimum passes are looked at again.
    """
    q, b = s.shape
    t = thr[:, None]
    if b % groups or b < 8 * groups:
        r, c = (s <= t).nonzero(as_tuple=True)
        return r, c, s[r, c]
    w = b // groups
    r, j = (s.view(q, groups, w).amin(1) <= t).nonzero(as_tuple=True)
    cols = j[:, None] + torch.arange(groups, device=s.device) * w
    v = s[r[:, None], cols]
    keep = v <= t[r]
    return r[:, None].expand_as(cols)[keep], cols[keep], v[keep]


def _round_up(x: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """float64 `x` cast to `dtype`, never below `x`."""
    y = x.to(dtype)
    return torch.where(y.double() < x, torch.nextafter(y, torch.full_like(y, math.inf)), y)


class Window:
    """The screen's running state for every query: its k best screen scores so far and every
    candidate that lay inside its window (k-th best so far + 2E) when its block was screened.

    The k-th best only falls as blocks go by, so the window only narrows: a candidate inside
    the final window was inside it when it was screened, and kept. Early windows can be wide
    (before a query has met its near neighbours), so candidates are held for all queries
    together up to `limit`; past it, the queries holding most stop collecting and are marked
    to fall back.
    """

    def __init__(self, nq: int, k: int, width: torch.Tensor, limit: int, dtype: torch.dtype, device: torch.device):
        self.k, self.limit, self.width, self.dtype = k, limit, width, dtype
        self.best = torch.full((nq, k), math.inf, dtype=dtype, device=device)
        self.thr = torch.full((nq,), math.inf, dtype=dtype, device=device)
        self.overflow = torch.zeros(nq, dtype=torch.bool, device=device)
        self.parts: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []
        self.held, self.compact_at = 0, min(limit, max(1 << 16, 4 * k * nq))

    def add(self, lo: int, s: torch.Tensor, offset: int) -> None:
        """Screen scores `s` of queries lo.. against base rows offset.. ."""
        hi = lo + len(s)
        best, thr = self.best[lo:hi], self.thr[lo:hi]
        seed = bool((thr == math.inf).any())
        if seed:  # some query has no k-th yet: its whole row counts; a dense top-k of the block
            vals, _ = smallest_k(s, min(self.k, s.shape[1]))
            merged = torch.cat([best, vals.to(self.dtype)], 1)
            best.copy_(torch.topk(merged, self.k, dim=1, largest=False, sorted=False).values)
            self._narrow(lo, hi)
        r, c, v = hits(s, thr)
        if not seed and len(r):  # only scores inside the window can enter the k best
            _merge_sparse(best, r, v.to(self.dtype))
            self._narrow(lo, hi)
        if len(r):
            self.parts.append((r + lo, c + offset, v.to(self.dtype)))
            self.held += len(r)
            if self.held > self.compact_at:
                self.compact()

    def widen(self, width: torch.Tensor) -> None:
        """A new window width per query (never narrower than before)."""
        self.width = torch.maximum(self.width, width)
        self._narrow(0, len(self.thr))

    def _narrow(self, lo: int, hi: int) -> None:
        kth = self.best[lo:hi].amax(1).double()
        thr = _round_up(kth + self.width[lo:hi], self.dtype)
        self.thr[lo:hi] = torch.where(self.overflow[lo:hi], -math.inf, thr)

    def compact(self) -> None:
        """Drop candidates outside their (narrowed) window; over the limit, mark the queries
        holding most until half of it is left."""
        if not self.parts:
            return
        r, c, v = (torch.cat(t) for t in zip(*self.parts))
        keep = v <= self.thr[r]
        r, c, v = r[keep], c[keep], v[keep]
        if len(r) > self.limit:
            count = torch.bincount(r, minlength=len(self.thr))
            heavy = torch.argsort(count, descending=True)
            shed = int(torch.searchsorted(torch.cumsum(count[heavy], 0), len(r) - self.limit // 2)) + 1
            over = torch.zeros_like(self.overflow)
            over[heavy[:shed]] = True
            self.overflow |= over
            self.thr[over] = -math.inf
            keep = ~over[r]
            r, c, v = r[keep], c[keep], v[keep]
        self.parts = [(r, c, v)]
        self.held = len(r)
        self.compact_at = min(self.limit, max(self.compact_at, 2 * self.held))

    def result(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(query, base row) of every candidate in its final window; the queries that overflowed."""
        self.compact()
        if not self.parts:
            empty = torch.empty(0, dtype=torch.int64, device=self.best.device)
            return empty, empty, self.overflow
        r, c, _ = self.parts[0]
        return r, c, self.overflow


def _merge_sparse(best: torch.Tensor, r: torch.Tensor, v: torch.Tensor) -> None:
    """Fold scores `v` of rows `r` (ascending) into each row's k best, in place."""
    rows, counts = torch.unique_consecutive(r, return_counts=True)
    starts = torch.cumsum(counts, 0) - counts
    slot = torch.repeat_interleave(torch.arange(len(rows), device=r.device), counts)
    pad = torch.full((len(rows), int(counts.max())), math.inf, dtype=best.dtype, device=best.device)
    pad[slot, torch.arange(len(r), device=r.device) - starts[slot]] = v
    merged = torch.cat([best[rows], pad], 1)
    best[rows] = torch.topk(merged, best.shape[1], dim=1, largest=False, sorted=False).values


def one_block(s: torch.Tensor, k: int, width: torch.Tensor, groups: int = 8) -> tuple[torch.Tensor, torch.Tensor]:
    """The window of a search whose scores `s` (nq, nb) are all in one block: each query's
    k-th smallest score, and every (query, base row) inside k-th + `width` (float64, per
    query), the threshold rounded up to the scores' type, rows ascending. The small-size
    path: what `Window` decides over many blocks, without its running state.

    One pass over the block gives the minima of `groups` strided column groups, which serve
    both `smallest_k` (the k-th) and `hits` (the pairs inside the window): no full mask."""
    q, b = s.shape
    if b % groups or b < 4 * groups * k:
        kth = torch.topk(s, k, dim=1, largest=False, sorted=False).values.amax(1)
        thr = _round_up(kth.double() + width, s.dtype)
        r, c = (s <= thr[:, None]).nonzero(as_tuple=True)
        return r, c
    w = b // groups
    minima = s.view(q, groups, w).amin(1)
    _, sub = torch.topk(minima, k, dim=1, largest=False, sorted=False)
    cols = (sub[:, :, None] + torch.arange(groups, device=s.device) * w).reshape(q, -1)
    kth = torch.topk(torch.gather(s, 1, cols), k, dim=1, largest=False, sorted=False).values.amax(1)
    thr = _round_up(kth.double() + width, s.dtype)
    r, j = (minima <= thr[:, None]).nonzero(as_tuple=True)
    cols = j[:, None] + torch.arange(groups, device=s.device) * w
    keep = s[r[:, None], cols] <= thr[r][:, None]
    return r[:, None].expand_as(cols)[keep], cols[keep]


def capped(r: torch.Tensor, c: torch.Tensor, nq: int, limit: int,
           count: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The pairs (r, c) of `nq` queries, at most `limit` of them: past it, the queries holding
    most are dropped (and marked, to fall back) until half of it is left, as `Window.compact`
    does. `count`: the pairs of each query, when known. Returns the pairs kept and the mask
    of queries dropped."""
    over = torch.zeros(nq, dtype=torch.bool, device=r.device)
    if len(r) <= limit:
        return r, c, over
    if count is None:
        count = torch.bincount(r, minlength=nq)
    heavy = torch.argsort(count, descending=True)
    shed = int(torch.searchsorted(torch.cumsum(count[heavy], 0), len(r) - limit // 2)) + 1
    over[heavy[:shed]] = True
    keep = ~over[r]
    return r[keep], c[keep], over


def candidate_limit(k: int, nq: int, budget: float) -> int:
    """Candidates held at once, all queries together: a quarter of the working memory at 24
    bytes a candidate, and never under 4k a query."""
    return max(4 * k * nq, int(budget / 4 // 24))

