"""`Service`: what the routes share, made once per server: the index, its searcher (one
embedder, one fitted estimator), the micro-batcher, the keys, the metrics and the settings.

The index is opened when the service is made (a missing or damaged index stops the start
with one line); the model and the fitted search are loaded by `load` in a thread after the
server is listening, so that `/healthz` answers at once and `/readyz` says 503 until both
are loaded. Searches before that get 503 with Retry-After, not a long wait.
"""

from __future__ import annotations

import io
import logging
import threading
from collections import OrderedDict
from pathlib import Path

import numpy as np
import torch

from ..errors import LookalikeError
from ..features import Embedder
from ..features.runtimes import check_runtime
from ..index import Index, QueryResult, Searcher
from ..index.results import results
from ..knn.backends import select
from ..sources import files_source
from .auth import Keys
from .batching import MicroBatcher, batch_shapes, fixed_shapes
from .errors import BadParameter, Unavailable
from .metrics import Metrics
from .settings import Settings
from .uploads import Upload, discard_uploads, store_uploads

log = logging.getLogger("lookalike.service")
THUMBNAILS_KEPT = 4096  # thumbnails made on the fly and kept, least recently used first out


class ServedIndex(Index):
    """The served index: its searcher and its adds share one embedder, built once, so that an
    add neither loads the model's weights again nor traces its graph again; its metadata is
    read through a connection kept per thread (`IndexStore.keep_readers`), not one opened
    per answer."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.store.keep_readers()
        self._embedder = None
        self._embedder_made = threading.Lock()

    def embedder(self, model: str | None = None, progress: bool = True, **options) -> Embedder:
        if options or (model is not None and model != self.manifest["model"]):
            return super().embedder(model, progress=progress, **options)  # its own (or the error)
        with self._embedder_made:
            if self._embedder is None:
                self._embedder = super().embedder(progress=False)
        return self._embedder


class Service:
    def __init__(self, settings: Settings):
        self.settings = settings
        self.keys = Keys.load(settings.api_key_file)
        self.index = ServedIndex(settings.index)
        select(settings.backend, self.index.metric)  # an unknown or missing backend: said now, in one line
        check_runtime(settings.runtime, torch.device("cpu"), "auto", "auto")  # the same for the runtime
        self.metrics = Metrics()
        self.metrics.index_size = lambda: self.searcher.count if self.ready else self.index.count
        self.searcher: Searcher | None = None
        self._own_searcher: Searcher | None = None
        self.batcher: MicroBatcher | None = None
        self.failed: str | None = None
        self._loaded = threading.Event()
        self._write_lock = threading.Lock()  # one add or delete at a time from this server
        self._thumbs: OrderedDict[int, tuple[bytes, str]] = OrderedDict()
        self._thumbs_lock = threading.Lock()

    # -- life ------------------------------------------------------------------------------
    @property
    def ready(self) -> bool:
        return self._loaded.is_set()

    def load(self) -> None:
        """Build the embedder and fit the search (blocking: run it in a thread)."""
        try:
            if self.settings.runtime == "auto":  # the index's own searcher embeds with runtime auto
                searcher = self.index.searcher(self.settings.backend).warm()
            else:  # a searcher of its own, closed with the service
                self._own_searcher = searcher = Searcher(self.index, backend=self.settings.backend,
                                                         runtime=self.settings.runtime).warm()
            self._warm_up(searcher)
            self.batcher = MicroBatcher(searcher, batch_size=self.settings.batch_size,
                                        wait_ms=self.settings.batch_wait_ms, metrics=self.metrics,
                                        pad=fixed_shapes(searcher.embedder))  # calibrated by the warm-up
            self.searcher = searcher
            self._loaded.set()
            log.info("ready: %s, %d images, %s", self.index.path, searcher.count, self.index.manifest["model"])
        except LookalikeError as exc:  # told by the caller (`app._load`), once
            self.failed = str(exc)
            raise

    def _warm_up(self, searcher: Searcher) -> None:
        """The CNN run three times at each batch shape the batcher uses (`batch_shapes`), and
        one search: the first passes at a new shape cost seconds (the frozen graph is profiled
        and specialised), which the first users would otherwise wait for. Before them, how the
        CNN runs is decided by measuring (once per machine: `Embedder.calibrate`), since each
        of the service's jobs is too small to decide it."""
        searcher.embedder.calibrate()
        size = self.input_size
        for n in batch_shapes(self.settings.batch_size):
            for _ in range(3):
                vectors = searcher.embedder.embed_array(np.zeros((n, size, size, 3), np.uint8))
        if searcher.count:  # an empty index is served too: images can be added to it
            searcher.search_vectors(vectors[:1], 1)

    def close(self) -> None:
        if self.batcher is not None:
            self.batcher.close()
        if self._own_searcher is not None:
            self._own_searcher.close()
        self.index.close()

    def require_ready(self) -> Searcher:
        if self.failed:
            raise Unavailable(f"the index could not be loaded: {self.failed}", code="load_failed", retry_after=60)
        if not self.ready:
            raise Unavailable("the model and the index are still loading; try again in a few seconds",
                              code="starting", retry_after=2)
        return self.searcher

    # -- reading ---------------------------------------------------------------------------
    @property
    def input_size(self) -> int:
        return int(self.index.manifest["input_shape"][0])

    @property
    def dim(self) -> int:
        return int(self.index.manifest["dim"])

    def about(self) -> dict:
        m = self.index.manifest
        return {"name": self.index.path.name, "count": self.searcher.count if self.ready else self.index.count,
                "model": m["model"], "weights": m["weights"], "pooling": m["pooling"],
                "views": m.get("views", "full"), "mid": m.get("mid", "none"), "dim": m["dim"],
                "metric": m["metric"], "backend": self.settings.backend, "input_size": self.input_size,
                "format_version": m.get("format_version"),
                "ready": self.ready, "max_k": self.settings.max_k,
                "writes": bool(self.keys.write), "reads_need_key": self.keys.reads_need_key}

    def check_k(self, k: int, by_id: bool = False) -> int:
        count = self.require_ready().count - by_id
        if count <= 0 and not by_id:
            raise BadParameter("the index holds no images yet: add some first (POST /v1/images, write scope)",
                               code="empty_index")
        if not 1 <= k <= min(self.settings.max_k, max(count, 1)):
            if k > self.settings.max_k or k < 1:
                raise BadParameter(f"k={k} is out of range: 1 <= k <= {self.settings.max_k}")
            raise BadParameter(f"k={k} is out of range: the index holds {count} image(s)"
                               f"{' besides the query' if by_id else ''}, so 1 <= k <= {count}")
        return k

    def results(self, name: str, D: np.ndarray, I: np.ndarray) -> QueryResult:
        return results(self.index.store, [name], D[None], I[None])[0]

    def image(self, image_id: int) -> dict:
        meta = self.index.images([image_id])[0]
        return {"id": meta.id, "key": meta.key, "label": meta.label, "source": meta.source,
                "location": meta.location, "added": meta.added}

    def thumbnail(self, image_id: int) -> tuple[bytes, str]:
        """The stored thumbnail of an image (bytes, media type); made from its pixels (re-read
        from where it came from, black if gone) when the index keeps none for it."""
        with self._thumbs_lock:
            if image_id in self._thumbs:
                self._thumbs.move_to_end(image_id)
                return self._thumbs[image_id]
        found = self.index.thumbnail(image_id) or self._thumbnail_from_pixels(image_id)
        with self._thumbs_lock:
            self._thumbs[image_id] = found
            while len(self._thumbs) > THUMBNAILS_KEPT:
                self._thumbs.popitem(last=False)
        return found

    def _thumbnail_from_pixels(self, image_id: int) -> tuple[bytes, str]:
        from PIL import Image

        self.index.images([image_id])  # an unknown id is 404 here
        pixels = self.index.read_pixels([image_id])[0]
        buf = io.BytesIO()
        Image.fromarray(pixels).save(buf, "PNG")
        return buf.getvalue(), "image/png"

    def forget_thumbnails(self, ids: list[int]) -> None:
        with self._thumbs_lock:
            for i in ids:
                self._thumbs.pop(i, None)

    # -- writing ---------------------------------------------------------------------------
    def add(self, uploads: list[Upload]) -> tuple[list[dict], int]:
        """Store `uploads`, embed them with the index's model and commit them in one commit;
        returns a record per image added, in upload order (its id, key and the client's name
        for it), and how many were skipped as already indexed."""
        self.require_ready()
        with self._write_lock:
            paths = [p.resolve() for p in store_uploads(uploads, self.settings.uploads)]
            try:
                added = self.index.add_images(files_source(paths, self.input_size), progress=False)
            except BaseException:
                discard_uploads(paths)
                raise
            metas = self.index.images(list(added.ids)) if added.ids else []
            kept = {m.location for m in metas}
            discard_uploads([p for p in paths if str(p) not in kept])  # duplicates of indexed images
        names = {str(p): u.name for p, u in zip(paths, uploads)}
        return [{"id": m.id, "key": m.key, "name": names.get(m.location, m.key)} for m in metas], added.duplicates

    def remove(self, image_id: int) -> None:
        self.require_ready()
        with self._write_lock:
            (meta,) = self.index.images([image_id])  # an unknown id is 404 here
            self.index.remove(ids=[image_id])
            if meta.location and Path(meta.location).is_relative_to(self.uploads_root):
                discard_uploads([Path(meta.location)])  # only a file this server stored
        self.forget_thumbnails([image_id])

    @property
    def uploads_root(self) -> Path:
        return self.settings.uploads.resolve()

