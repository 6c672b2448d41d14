"""Micro-batching: concurrent queries share one CNN pass and one kNN call, and each gets the
answer it would get alone."""

from __future__ import annotations

import asyncio
from contextlib import contextmanager

import numpy as np

from lookalike.index import Index
from lookalike.service.batching import MicroBatcher, batch_shapes, padded
from lookalike.service.metrics import Metrics
from lookalike.sources import load_image


def test_batch_shapes_and_padding():
    assert batch_shapes(32) == [1, 2, 4, 8, 16, 32] and batch_shapes(24) == [1, 2, 4, 8, 16, 24]
    assert batch_shapes(1) == [1]
    x = np.ones((5, 4, 4, 3), np.uint8)
    p = padded(x, 32)
    assert p.shape == (8, 4, 4, 3) and (p[:5] == 1).all() and (p[5:] == 0).all()
    assert padded(x[:4], 32) is not None and padded(x[:4], 32).shape[0] == 4
    assert padded(np.ones((20, 4, 4, 3), np.uint8), 24).shape[0] == 24


@contextmanager
def batching(built_index, **options):
    """(searcher, metrics, batcher) of the built index; the batcher and index closed after."""
    index = Index(built_index)
    searcher = index.searcher()
    metrics = Metrics()
    batcher = MicroBatcher(searcher, metrics=metrics, **options)
    try:
        yield searcher, metrics, batcher
    finally:
        batcher.close()
        index.close()


def test_concurrent_queries_share_a_batch_and_match_alone(built_index, photos):
    with batching(built_index, batch_size=8, wait_ms=300) as (searcher, metrics, batcher):
        pixels = [load_image(p, 64) for p in photos[:5]]
        vector = np.asarray(searcher.index.vectors()[11], dtype=np.float32)
        ks = [1, 3, 5, 2, 4]

        async def together():
            asks = [batcher.search(k, pixels=px) for k, px in zip(ks, pixels)]
            return await asyncio.gather(*asks, batcher.search(6, vector=vector))

        answers = asyncio.run(together())
        assert metrics.batch_sizes.count == 1 and metrics.batch_sizes.sum == 6  # one batch of six
        alone = searcher.search_images(photos[:5], k=5)
        for (D, I), k, expected in zip(answers, ks, alone):
            assert I.tolist() == [n.id for n in expected.neighbours[:k]]
            assert np.allclose(D, [n.distance for n in expected.neighbours[:k]], rtol=1e-4)
        assert answers[-1][1][0] == 11 and answers[-1][0][0] < 1e-3 and len(answers[-1][1]) == 6


def test_kNN_calls_hold_at_most_batch_size_and_a_failed_pass_fails_only_its_queries(built_index, photos):
    with batching(built_index, batch_size=2, wait_ms=200) as (searcher, metrics, batcher):
        pixels = [load_image(p, 64) for p in photos[:5]]

        async def together():
            asks = [batcher.search(3, pixels=px) for px in pixels]
            return await asyncio.gather(*asks)

        answers = asyncio.run(together())
        alone = searcher.search_images(photos[:5], k=3)
        assert [I.tolist() for _, I in answers] == [[n.id for n in r.neighbours] for r in alone]
        assert metrics.batch_sizes.sum == 5 and metrics.batch_sizes.counts[1] == metrics.batch_sizes.count  # <= 2
        assert metrics.cnn_batch_sizes.sum == 5

        async def broken_then_good():
            bad = batcher.search(3, pixels=np.zeros((64, 64, 4), np.uint8))  # not RGB: the CNN pass fails
            return await asyncio.gather(bad, return_exceptions=True), await batcher.search(3, pixels=pixels[0])

        (failed,), (_, I) = asyncio.run(broken_then_good())
        assert isinstance(failed, Exception) and I.tolist() == answers[0][1].tolist()
    assert not any(t.is_alive() for t in batcher._threads)
