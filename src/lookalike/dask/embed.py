"""Feature extraction on a Dask cluster: one task per chunk of images, the local run's output.

The source is cut into chunks of positions (`Source.pieces`); each chunk is one task that
reopens its piece of the source in the worker (`sources.open_piece`), embeds it with a model
built once per worker (`_MODELS`, keyed by the embedder's recipe), and writes its own chunk
file, atomically, into the work folder the local run uses (`features/files.py`). The driver
then joins the chunk files and writes FEATURES.npy and its sidecar exactly as
`Embedder.embed_rows` does; an index built with a `ClusterEmbedder` is an ordinary index.

A rerun (after an interruption, or a task rerun by Dask because its worker died) finds the
chunk file: the task re-reads that chunk's images and keeps the file when their digests
match, so a finished chunk is neither embedded nor written again. Dask reruns the tasks of a
worker that is lost (`distributed.scheduler.allowed-failures`, 3 by default).

Reopening a piece costs what opening its source costs: milliseconds for a folder (its files
are named in the piece), a `.npy` or STL-10 file; a `sample:N` set is rebuilt in each task.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..atomic import renamed
from ..errors import ClusterError, ModelError, WriteError
from ..features.embed import CHUNK, Embedded, Embedder, input_files
from ..features.files import (Chunk, check_decoded, check_features_out, clear_work, image_digests, load_done,
                              read_chunk, save_chunk, workdir, write_features)
from ..progress import counter
from ..sources.base import Source
from ..sources.pieces import Piece
from .cluster import require, workers

_MODELS: OrderedDict[str, Embedder] = OrderedDict()  # in each worker: recipe -> its embedder
_MODELS_LOCK = threading.Lock()
_MODELS_KEPT = 2  # embedders a worker keeps (the most recently used)


@dataclass
class ChunkRun:
    """What the last `embed_rows` did: `chunks` in all, `embedded` by the CNN this time,
    `kept` finished before (by an earlier run, or by a worker lost after writing it)."""

    chunks: int
    embedded: int
    kept: int


def default_chunk(n: int) -> int:
    """Images per task: the local run's CHUNK, smaller for small sources (about 32 tasks),
    at least 32. A function of `n` alone, so that a rerun finds the same chunks."""
    return min(CHUNK, max(32, -(-n // 32)))


class ClusterEmbedder:
    """An `Embedder` whose work runs on a Dask cluster, one task per chunk of images.

    Everything but `embed` and `embed_rows` is the wrapped embedder's (`model`, `dim`,
    `config()`, `input_size`, ...), so it goes wherever an embedder does (`Index.build`).

    Parameters
    ----------
    embedder : Embedder
        What to run; each worker builds its own copy once, from its recipe (model, weights,
        pooling, input size, precision, batch size), and checks that it gives the same
        `config()`. Weights files must be at the same path on every worker.
    client : distributed.Client
    chunk : int, default: `default_chunk(len(source))`
        Images per task.
    device : str, default: the embedder's device
        Where each worker runs the CNN, resolved on the worker ('cuda' with one worker per
        GPU under dask-cuda).
    """

    def __init__(self, embedder: Embedder, client, *, chunk: int | None = None, device: str | None = None):
        require()
        self.embedder = embedder
        self.client = client
        self.chunk = chunk
        self.device = device
        self.last_run: ChunkRun | None = None
        self.last_seconds = float("nan")

    def __getattr__(self, name: str):
        if name == "embedder":  # not set yet (unpickling): never recurse
            raise AttributeError(name)
        return getattr(self.embedder, name)

    def recipe(self) -> dict:
        """How a worker builds the same embedder."""
        e = self.embedder
        return {"model": e.model, "weights": e.weights, "pooling": e.pooling, "views": e.views,
                "mid": e.mid, "input_size": e.input_size,
                "device": self.device or str(e.device),
                "precision": {"bfloat16": "bf16"}.get(str(e.dtype).removeprefix("torch."), "fp32"),
                "fast": e.fast, "compile": e.compile is True, "batch_size": e.batch_size, "runtime": e.runtime}

    def embed(self, source: Source, out: str | os.PathLike | None = None, *, return_kept: bool = False):
        """What `Embedder.embed` computes, on the cluster."""
        done = self.embed_rows(source, out)
        return (done.features, done.kept) if return_kept else done.features

    def embed_rows(self, source: Source, out: str | os.PathLike | None = None, *,
                   keep_empty: bool = False) -> Embedded:
        """What `Embedder.embed_rows` computes and writes, on the cluster. Without `out`, the
        chunks go to a temporary folder on this machine (right for a LocalCluster only)."""
        from distributed import as_completed

        n = len(source)
        chunk = self.chunk or default_chunk(n)
        pieces = source.pieces(chunk=chunk) if n else []  # an in-memory set is refused here
        out = None if out is None else check_features_out(out, inputs=input_files(source))
        scratch = Path(tempfile.mkdtemp(prefix="lookalike-embed-")) if out is None else None
        work = workdir(out if out is not None else scratch / "features.npy")
        config = self.embedder.config()
        meta = {"config": config, "source": source.describe(), "chunk": chunk, "n": n}
        started = time.perf_counter()
        try:
            load_done(work, meta)  # a different job's leftovers cleared, job.json written
            futures = [self.client.submit(embed_chunk, self.recipe(), config, piece, str(work), pure=False,
                                          key=f"lookalike-embed-{lo:012d}-{os.urandom(4).hex()}")
                       for lo, piece in zip(range(0, n, chunk), pieces)]
            bar = counter(total=len(futures), desc=f"embed {self.model} on {workers(self.client)} worker(s)",
                          unit="chunk", enabled=self.embedder.progress)
            embedded = 0
            try:
                for future in as_completed(futures):
                    embedded += future.result()
                    bar.update(1)
            finally:
                bar.close()
                for future in futures:
                    future.cancel()
            done = load_done(work, meta)
            missing = sorted(set(range(0, n, chunk)) - done.keys())
            if missing:
                raise ClusterError(f"the chunk of images {missing[0]} to {min(missing[0] + chunk, n)} was reported "
                                   f"done but its file is not in {work}; do the workers see that folder?")
            result = Embedded.join([done[lo] for lo in sorted(done)], n, self.dim)
            for entry in result.failed.values():
                source.note_skipped(entry)
            self.last_run = ChunkRun(len(pieces), embedded, len(pieces) - embedded)
            self.last_seconds = time.perf_counter() - started
            if out is not None:
                if not keep_empty:
                    check_decoded(source.name, n, len(result.kept), work)
                skipped = [{"id": source.ids[i], "path": s.path, "reason": s.reason}
                           for i, s in result.failed.items()]
                write_features(out, result.features, {**config, "source": source.describe(),
                                                      "ids": [source.ids[i] for i in result.kept],
                                                      "skipped": skipped})
            clear_work(work)
            return result
        except WriteError as exc:
            raise renamed(exc, out) if out is not None else exc from exc.__cause__
        finally:
            if scratch is not None:
                shutil.rmtree(scratch, ignore_errors=True)


def worker_embedder(recipe: dict, config: dict) -> Embedder:
    """This worker's embedder for `recipe`, built on first use and kept; it must give the
    `config` the driver's embedder gives (same weights, same dimension, same precision)."""
    key = json.dumps(recipe, sort_keys=True)
    with _MODELS_LOCK:
        if key in _MODELS:
            _MODELS.move_to_end(key)
            return _MODELS[key]
        embedder = Embedder(**recipe, progress=False)
        if embedder.config() != config:
            theirs = {k: v for k, v in embedder.config().items() if config.get(k) != v}
            raise ModelError(f"a worker's {recipe['model']} differs from this machine's: {json.dumps(theirs)[:200]}; "
                             "the same weights must be at the same path on every worker")
        _MODELS[key] = embedder
        while len(_MODELS) > _MODELS_KEPT:
            _MODELS.popitem(last=False)
        return embedder


def embed_chunk(recipe: dict, config: dict, piece: Piece, work: str) -> int:
    """A task: embed images `piece.start` to `piece.stop` into the work folder's chunk file,
    unless a finished chunk of the same images is there already. Returns 1 if it ran the
    CNN, 0 if the chunk was kept."""
    path = Path(work) / f"{piece.start:012d}.npy"
    source = piece.open()
    batch_size = int(recipe["batch_size"])
    images, digests, failed = [], [], {}
    for batch in source.batches(batch_size):
        images.append(batch.images)
        digests += image_digests(batch.images)
        failed |= {piece.start + j: s for j, s in batch.failed.items()}
    known = read_chunk(path) if path.exists() else None
    if known is not None and known.digests == digests and known.failed.keys() == failed.keys():
        return 0
    embedder = worker_embedder(recipe, config)
    features = [embedder.embed_array(x) for x in images if len(x)]
    rows = np.concatenate(features) if features else np.empty((0, embedder.dim), np.float32)
    save_chunk(Path(work), piece.start, Chunk(rows, failed, digests))
    return 1
