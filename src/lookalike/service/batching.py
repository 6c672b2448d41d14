"""Micro-batching: concurrent searches go through the CNN and the kNN search together.

Each request hands its query (decoded pixels, or a vector) to `MicroBatcher.search` and
awaits a future. One worker thread takes the first query waiting, then gathers others for up
to `wait_ms` milliseconds or until `batch_size` are in hand, embeds all the pixel queries in
one CNN pass, searches every query in one kNN call with the largest k asked, and answers each
with its own first k. A batch that fails answers each of its queries with that error.

The event loop never blocks: it only puts queries on a thread-safe queue and awaits.
"""

from __future__ import annotations

import asyncio
import queue
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass, field

import numpy as np

from ..index import Searcher
from .metrics import Metrics


@dataclass
class Query:
    k: int
    pixels: np.ndarray | None = None  # (size, size, 3) uint8, or
    vector: np.ndarray | None = None  # (dim,) float32
    future: Future = field(default_factory=Future)


def batch_shapes(batch_size: int) -> list[int]:
    """The batch sizes the CNN sees: powers of two up to `batch_size`, and `batch_size`."""
    sizes, n = [], 1
    while n < batch_size:
        sizes.append(n)
        n *= 2
    return [*sizes, batch_size]


def padded(pixels: np.ndarray, batch_size: int) -> np.ndarray:
    """`pixels` (n, h, w, 3) with black images added up to the next of `batch_shapes`.

    The CNN's frozen graph is specialised, and compiled again, for each new batch shape it
    meets (seconds each on a CPU); a few fixed shapes, warmed at start, keep every search
    away from that."""
    n = len(pixels)
    size = next(s for s in batch_shapes(batch_size) if s >= n)
    if size == n:
        return pixels
    return np.concatenate([pixels, np.zeros((size - n, *pixels.shape[1:]), pixels.dtype)])


class MicroBatcher:
    """Gathers concurrent queries into batches for `searcher`; `close` stops its thread."""

    def __init__(self, searcher: Searcher, *, batch_size: int = 32, wait_ms: float = 5.0,
                 metrics: Metrics | None = None):
        self.searcher = searcher
        self.batch_size = batch_size
        self.wait = wait_ms / 1000
        self.metrics = metrics
        self._queue: queue.Queue[Query | None] = queue.Queue()
        self._thread = threading.Thread(target=self._run, name="lookalike-batcher", daemon=True)
        self._thread.start()

    async def search(self, k: int, *, pixels: np.ndarray | None = None,
                     vector: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(D, I) of one query, each of shape (k,)."""
        query = Query(k, pixels, vector)
        self._queue.put(query)
        return await asyncio.wrap_future(query.future)

    def close(self) -> None:
        self._queue.put(None)
        self._thread.join(timeout=30)

    def _run(self) -> None:
        while True:
            first = self._queue.get()
            if first is None:
                return
            batch = [first]
            deadline = time.monotonic() + self.wait
            stop = False
            while len(batch) < self.batch_size:
                left = deadline - time.monotonic()
                try:
                    nxt = self._queue.get(timeout=left) if left > 0 else self._queue.get_nowait()
                except queue.Empty:
                    break
                if nxt is None:
                    stop = True
                    break
                batch.append(nxt)
            self._answer([q for q in batch if q.future.set_running_or_notify_cancel()])
            if stop:
                return

    def _answer(self, batch: list[Query]) -> None:
        if not batch:
            return
        start = time.perf_counter()
        try:
            D, I = self.search_batch(batch)
        except BaseException as exc:  # every query of the batch gets the error; the thread goes on
            for q in batch:
                q.future.set_exception(exc)
            return
        finally:
            if self.metrics is not None:
                self.metrics.batch(len(batch), time.perf_counter() - start)
        for j, q in enumerate(batch):
            q.future.set_result((D[j, : q.k], I[j, : q.k]))

    def search_batch(self, batch: list[Query]) -> tuple[np.ndarray, np.ndarray]:
        """(D, I) for every query of `batch`, with the largest k of them: one CNN pass for the
        pixel queries, one kNN call for all."""
        dim = int(self.searcher.index.manifest["dim"])
        vectors = np.empty((len(batch), dim), dtype=np.float32)
        images = [j for j, q in enumerate(batch) if q.pixels is not None]
        if images:
            pixels = np.stack([batch[j].pixels for j in images])
            vectors[images] = self.searcher.embedder.embed_array(padded(pixels, self.batch_size))[: len(images)]
        for j, q in enumerate(batch):
            if q.pixels is None:
                vectors[j] = q.vector
        return self.searcher.search_vectors(vectors, max(q.k for q in batch))
