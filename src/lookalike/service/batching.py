"""Micro-batching: concurrent searches go through the CNN and the kNN search together, in
two stages that work at the same time.

Each request hands its query (decoded pixels, or a vector) to `MicroBatcher.search` and
awaits a future. Two worker threads make a pipeline:

- the CNN stage takes the first query waiting, gathers others until `batch_size` are in
  hand or for `wait_ms` milliseconds, or, while the kNN stage is busy, until a pass over one
  more query would end after the kNN call in progress is expected to end (`gather_until`),
  embeds all their pixels in one CNN pass and hands the batch on;
- the kNN stage takes every batch the CNN stage has handed on by then (up to `batch_size`
  queries), searches them all in one kNN call with the largest k asked, and answers each
  query with its own first k.

So the CNN of the next queries runs while the kNN search of the last ones does, and is done
just in time for the next kNN call, in as few passes as that allows (a pass costs less per
image the more images it holds). Each stage has its own cores (`run.compute_threads`: a
stage's torch threads never wait on a core that the other stage, or the event loop, holds).
A kNN call costs a fixed scan of the whole index plus a little per query: while it runs,
the queries behind it gather, and the next call takes them all, so its batches grow with
the load. A batch that fails answers each of its
queries with that error; the others go on.

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


SLICE = 0.002  # s: how often a gathering CNN stage looks whether the kNN stage is free again
AVERAGING = 0.2  # weight of the newest time in the moving averages of the stages' times


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


def fixed_shapes(embedder) -> bool:
    """Whether `embedder` runs a TorchScript graph, which is specialised (and compiled again,
    seconds on a CPU) for each new batch shape it meets; ONNX Runtime, OpenVINO and eager
    torch take any batch size as it comes."""
    return embedder.choice.mode in ("frozen", "optimized")


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
    """Gathers concurrent queries into batches for `searcher`; `close` stops its threads.

    `pad`: pad each CNN batch to one of `batch_shapes`; None: decided after the first pass,
    by whether the embedder runs a graph specialised per batch shape (`fixed_shapes`; asked
    only then, since asking before its first pass would make it calibrate now)."""

    def __init__(self, searcher: Searcher, *, batch_size: int = 32, wait_ms: float = 5.0,
                 metrics: Metrics | None = None, pad: bool | None = None):
        self.searcher = searcher
        self.batch_size = batch_size
        self.wait = wait_ms / 1000
        self.metrics = metrics
        self.pad = pad
        self._queue: queue.Queue[Query | None] = queue.Queue()
        self._embedded: queue.Queue[list[Query] | None] = queue.Queue()
        self._knn_ends = 0.0  # when the kNN call in progress is expected to end (monotonic; 0: none)
        self._knn_seconds = 0.0  # a kNN call's time (a moving average)
        self._cnn_seconds = 0.0  # a CNN pass's time per image query (a moving average)
        self._threads = [threading.Thread(target=self._embed_stage, name="lookalike-cnn", daemon=True),
                         threading.Thread(target=self._search_stage, name="lookalike-knn", daemon=True)]
        for thread in self._threads:
            thread.start()

    async def search(self, k: int, *, pixels: np.ndarray | None = None,
                     vector: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(D, I) of one query, each of shape (k,)."""
        query = Query(k, pixels, vector)
        self._queue.put(query)
        return await asyncio.wrap_future(query.future)

    def close(self) -> None:
        self._queue.put(None)  # the CNN stage passes it on to the kNN stage when it stops
        for thread in self._threads:
            thread.join(timeout=30)

    # -- the CNN stage -----------------------------------------------------------------------
    def _embed_stage(self) -> None:
        stop = False
        while not stop:
            first = self._queue.get()
            if first is None:
                break
            batch = [first]
            deadline = time.monotonic() + self.wait
            while len(batch) < self.batch_size:
                left = max(deadline, self.gather_until(len(batch))) - time.monotonic()
                try:  # in slices: the kNN call may end before it was expected to
                    nxt = self._queue.get(timeout=min(left, SLICE)) if left > 0 else self._queue.get_nowait()
                except queue.Empty:
                    if left > SLICE:
                        continue
                    break
                if nxt is None:
                    stop = True
                    break
                batch.append(nxt)
            batch = [q for q in batch if q.future.set_running_or_notify_cancel()]
            if batch and self._embed(batch):
                self._embedded.put(batch)
        self._embedded.put(None)

    def gather_until(self, n: int) -> float:
        """Until when (monotonic) the CNN stage, holding `n` queries, may gather more: the
        expected end of the kNN call in progress less a pass over n + 1 queries (0: no call)."""
        ends = self._knn_ends
        return ends - self._cnn_seconds * (n + 1) if ends else 0.0

    def _embed(self, batch: list[Query]) -> bool:
        """Set the vector of every pixel query of `batch` (one CNN pass); False if it failed
        (each query then has the error)."""
        images = [q for q in batch if q.pixels is not None]
        if not images:
            return True
        start = time.perf_counter()
        try:
            pixels = np.stack([q.pixels for q in images])
            if self.pad:
                pixels = padded(pixels, self.batch_size)
            vectors = self.searcher.embedder.embed_array(pixels)
            if self.pad is None:
                self.pad = fixed_shapes(self.searcher.embedder)
        except BaseException as exc:  # every query of the batch gets the error; the stage goes on
            for q in batch:
                q.future.set_exception(exc)
            return False
        finally:
            took = time.perf_counter() - start
            self._cnn_seconds = _average(self._cnn_seconds, took / len(images))
            if self.metrics is not None:
                self.metrics.cnn_batch(len(images), took)
        for q, v in zip(images, vectors):
            q.vector = v
        return True

    # -- the kNN stage -----------------------------------------------------------------------
    def _search_stage(self) -> None:
        carried: list[Query] = []  # queries over the last call's `batch_size`: first in the next
        stop = False
        while carried or not stop:
            batch, carried = carried, []
            if not batch:
                first = self._embedded.get()
                if first is None:
                    return
                batch = first
            while len(batch) < self.batch_size and not stop:  # what the CNN stage finished meanwhile
                try:
                    more = self._embedded.get_nowait()
                except queue.Empty:
                    break
                if more is None:
                    stop = True
                else:
                    batch += more
            batch, carried = batch[: self.batch_size], batch[self.batch_size :]
            self._answer(batch)

    def _answer(self, batch: list[Query]) -> None:
        start = time.perf_counter()
        self._knn_ends = time.monotonic() + self._knn_seconds
        try:
            D, I = self.searcher.search_vectors(np.stack([q.vector for q in batch]), max(q.k for q in batch))
        except BaseException as exc:  # every query of the batch gets the error; the stage goes on
            for q in batch:
                q.future.set_exception(exc)
            return
        finally:
            took = time.perf_counter() - start
            self._knn_ends = 0.0
            self._knn_seconds = _average(self._knn_seconds, took)
            if self.metrics is not None:
                self.metrics.batch(len(batch), took)
        for j, q in enumerate(batch):
            q.future.set_result((D[j, : q.k], I[j, : q.k]))


def _average(old: float, new: float) -> float:
    return new if old == 0 else old + AVERAGING * (new - old)
