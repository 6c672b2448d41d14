"""Stage 3: each query's window keeps every candidate within (k-th best + width)."""

import math

import pytest
import torch

from lookalike.knn.window import Window, candidate_limit, hits, smallest_k


@pytest.mark.parametrize("values", ["normal", "ties"])
def test_smallest_k_by_group_minima_equals_a_full_top_k(values):
    g = torch.Generator().manual_seed(0)
    if values == "normal":
        s = torch.randn(64, 1024, generator=g)
    else:
        s = torch.randint(0, 3, (64, 1024), generator=g).float()
    for K in (1, 5, 11, 32):
        v, i = smallest_k(s, K)
        assert torch.equal(torch.gather(s, 1, i), v)
        assert torch.equal(v.sort(1).values, torch.topk(s, K, dim=1, largest=False).values.sort(1).values)


def test_hits_equal_a_dense_mask():
    g = torch.Generator().manual_seed(2)
    for cols in (64, 256, 1000):
        s = torch.randint(0, 50, (30, cols), generator=g).float()
        thr = torch.randint(0, 8, (30,), generator=g).float()
        thr[3] = -math.inf
        r, c, v = hits(s, thr)
        expected = (s <= thr[:, None]).nonzero()
        got = torch.stack([r, c], 1)
        assert torch.equal(got[torch.argsort(got[:, 0] * cols + got[:, 1])], expected)
        assert torch.equal(v, s[r, c]) and bool((torch.diff(r) >= 0).all())


def screened(window: Window, scores: torch.Tensor, qb: int, bb: int) -> None:
    """Feed a full (nq, nb) score matrix to the window block by block, as the engine does."""
    nq, nb = scores.shape
    for blo in range(0, nb, bb):
        for qlo in range(0, nq, qb):
            window.add(qlo, scores[qlo : qlo + qb, blo : blo + bb].clone(), blo)


@pytest.mark.parametrize("k", [1, 3, 10])
@pytest.mark.parametrize("kind", ["normal", "ties", "sorted"])
def test_window_keeps_every_score_within_kth_plus_width(k, kind):
    g = torch.Generator().manual_seed(k)
    nq, nb = 37, 2000
    if kind == "ties":
        scores = torch.randint(0, 20, (nq, nb), generator=g).float()
    else:
        scores = torch.randn(nq, nb, generator=g)
    if kind == "sorted":  # the best come last: early windows are wide and must narrow
        scores = scores.sort(1, descending=True).values
    width = torch.rand(nq, generator=g, dtype=torch.float64) * 0.5
    win = Window(nq, k, width, limit=10**7, dtype=torch.float32, device=torch.device("cpu"))
    screened(win, scores, qb=16, bb=256)
    r, c, fallback = win.result()
    assert not fallback.any()
    kth = torch.kthvalue(scores, k, dim=1).values.double()
    assert torch.equal(win.best.sort(1).values, torch.topk(scores, k, dim=1, largest=False).values.sort(1).values)
    inside = (scores.double() <= (kth + width)[:, None]).nonzero()
    got = set(zip(r.tolist(), c.tolist()))
    assert set(map(tuple, inside.tolist())) <= got  # every candidate in the final window was kept
    assert len(got) == len(r)  # each pair once


def test_window_over_its_limit_marks_the_queries_holding_most():
    g = torch.Generator().manual_seed(5)
    nq, nb, k = 12, 4000, 3
    scores = torch.randn(nq, nb, generator=g)
    scores[0] = 0.0  # every score of query 0 is a tie: its window holds the whole row
    win = Window(nq, k, torch.full((nq,), 0.01, dtype=torch.float64), limit=500, dtype=torch.float32,
                 device=torch.device("cpu"))
    screened(win, scores, qb=nq, bb=512)
    r, c, fallback = win.result()
    assert fallback[0] and not fallback[1:].all()
    kth = torch.kthvalue(scores, k, dim=1).values.double()
    for q in torch.nonzero(~fallback).ravel().tolist():  # the others are complete
        inside = set(torch.nonzero(scores[q].double() <= kth[q] + 0.01).ravel().tolist())
        assert inside <= set(c[r == q].tolist())
    assert len(r) <= 500


def test_candidate_limit_is_at_least_four_k_a_query():
    assert candidate_limit(3, 1000, 1.0) == 12_000
    assert candidate_limit(3, 10, 2**30) == 2**30 // 4 // 24
