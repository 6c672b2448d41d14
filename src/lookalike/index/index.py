"""`Index`: build once from a source, add images later, search by image, by id or by vector.

Searches go through a `Searcher` (`index.searcher()`), made once per backend and kept: it
holds the embedder and the fitted estimator, and notices images added later, by this
object or any other. An `Index` may be shared between threads.
"""

from __future__ import annotations

import os
import shutil
import threading
from pathlib import Path

import numpy as np

from ..errors import BadIndex, SearchError, SourceError
from ..features.embed import Embedder
from ..features.models import DEFAULT_MODEL
from ..features.weights import file_digest_short
from ..knn.metrics import get_metric
from ..sources.base import Source
from .results import Neighbour, QueryResult, results
from .searcher import Searcher
from .store import ImageMeta, IndexStore

__all__ = ["Index", "Neighbour", "QueryResult", "Searcher"]


def _metas(source: Source) -> list[dict]:
    spec = source.spec
    if spec is None:
        raise SourceError(f"{source.name}: an in-memory image set cannot be indexed; save it as .npy first")
    return [{"key": source.ids[i], "source": spec, "position": source.position(i),
             "location": source.location(i), "label": source.label(i)} for i in range(len(source))]


def _weights_arg(identity: str) -> str:
    """The `weights=` value that reproduces a recorded weights identity."""
    if identity.startswith("imagenet:"):
        return "imagenet"
    if identity.startswith("random:"):
        return "none"
    if identity.startswith("file:"):
        path, digest = identity[5:].rsplit(":", 1)
        if not Path(path).is_file():
            raise BadIndex(f"the index's weights file {path} is gone; it is needed to embed new images")
        if file_digest_short(path) != digest:
            raise BadIndex(f"the index's weights file {path} has changed since the index was built")
        return path
    raise BadIndex(f"unknown weights identity {identity!r} in the manifest")


class Index:
    """An index folder: vectors, per-image metadata and the manifest that says how they were made.

    Parameters
    ----------
    path : the index folder.
    verify : check every vector segment's CRC-32 when the vectors are first read.
    """

    def __init__(self, path: str | os.PathLike, *, verify: bool = True):
        self.path = Path(path)
        self.store = IndexStore(self.path)
        self.manifest = self.store.manifest()
        self.verify = verify
        self._vectors = None
        self._searchers: dict[str, Searcher] = {}
        self._lock = threading.Lock()  # guards the two caches above

    # -- building --------------------------------------------------------------------------
    @classmethod
    def build(cls, source: Source, out: str | os.PathLike, *, model: str = DEFAULT_MODEL, weights: str = "imagenet",
              pooling: str = "max", metric: str = "euclidean", embedder: Embedder | None = None,
              progress: bool = True, **embed_options) -> Index:
        """Embed every image of `source` and write a new index folder `out`.

        Work happens in a hidden folder beside `out` (resumable: run the same call again
        after an interruption); `out` appears, complete, in one rename at the end. Images
        that cannot be decoded are left out and listed in `source.skipped`.
        """
        out = Path(out)
        if out.exists():
            raise BadIndex(f"{out} exists already; add images with `lookalike index add {out} SOURCE`")
        metric = get_metric(metric).name
        embedder = embedder or Embedder(model, weights=weights, pooling=pooling, progress=progress, **embed_options)
        staging = out.with_name(f".{out.name}.building")
        staging.mkdir(parents=True, exist_ok=True)
        features, kept = embedder.embed(source, staging / "features.npy", return_kept=True)
        return cls.from_features(features, _readable(source, kept), embedder.config(), out, metric=metric,
                                 staging=staging)

    @classmethod
    def from_features(cls, features: np.ndarray, source: Source, config: dict, out: str | os.PathLike, *,
                      metric: str = "euclidean", staging: Path | None = None) -> Index:
        """A new index `out` from features already computed for `source` with `config`."""
        out = Path(out)
        if out.exists():
            raise BadIndex(f"{out} exists already")
        if len(features) != len(source):
            raise BadIndex(f"{len(features)} feature vectors for {len(source)} images")
        staging = staging or out.with_name(f".{out.name}.building")
        staging.mkdir(parents=True, exist_ok=True)
        building = staging / "index"
        if building.exists():
            shutil.rmtree(building)
        manifest = {**config, "metric": get_metric(metric).name, "count": 0}
        store = IndexStore.create(building, manifest)
        store.append(np.asarray(features, dtype=np.float32), _metas(source))
        os.replace(building, out)
        shutil.rmtree(staging, ignore_errors=True)
        return cls(out)

    def embedder(self, model: str | None = None, progress: bool = True, **options) -> Embedder:
        """An embedder that makes vectors comparable with this index's (same model, weights,
        pooling, input size, preprocessing)."""
        m = self.manifest
        if model is not None and model != m["model"]:
            raise BadIndex(f"{self.path} was built with model {m['model']}, not {model}; "
                           "vectors of different models cannot be compared")
        e = Embedder(m["model"], weights=_weights_arg(m["weights"]), pooling=m["pooling"],
                     input_size=m["input_shape"][0], progress=progress, **options)
        if e.weights_id != m["weights"] or e.dim != m["dim"]:
            raise BadIndex(f"{self.path} was built with weights {m['weights']} ({m['dim']}-d); "
                           f"this machine gives {e.weights_id} ({e.dim}-d)")
        return e

    def add(self, source: Source, *, model: str | None = None, progress: bool = True) -> int:
        """Embed and append every image of `source` that decodes; returns how many were added.

        Resumable like `build`; the index changes in one commit at the end or not at all.
        Searchers of this index, in this process or another, see the new images on their
        next search.
        """
        embedder = self.embedder(model, progress=progress)
        staging = self.path / ".adding"
        staging.mkdir(exist_ok=True)
        features, kept = embedder.embed(source, staging / "features.npy", return_kept=True)
        readable = _readable(source, kept)
        self.store.append(features, _metas(readable))
        shutil.rmtree(staging, ignore_errors=True)
        with self._lock:
            self.manifest = self.store.manifest()
            self._vectors = None
        return len(readable)

    # -- reading ---------------------------------------------------------------------------
    @property
    def count(self) -> int:
        return int(self.manifest["count"])

    @property
    def metric(self) -> str:
        return str(self.manifest["metric"])

    def vectors(self):
        """The committed vectors (n, dim) as of this object's opening or last `add`, memory-mapped."""
        with self._lock:
            if self._vectors is None:
                self._vectors = self.store.vectors(verify=self.verify)
            return self._vectors

    def images(self, ids: list[int] | None = None) -> list[ImageMeta]:
        try:
            return self.store.images(ids)
        except BadIndex as exc:
            raise SearchError(str(exc)) from None

    def info(self) -> dict:
        segs = self.store.segments()
        return {**self.manifest, "path": str(self.path), "segments": len(segs),
                "vector_bytes": sum(s[2] for s in segs), "labels": self.store.label_count()}

    def read_pixels(self, ids: list[int]) -> np.ndarray:
        """The images themselves (uint8, input size), re-read from where they came from."""
        from ..sources import load_image, open_source

        size = int(self.manifest["input_shape"][0])
        metas = self.images(ids)
        out = np.zeros((len(ids), size, size, 3), dtype=np.uint8)
        opened: dict[str, Source] = {}
        for j, m in enumerate(metas):
            try:
                if Path(m.source).is_dir():
                    out[j] = load_image(m.location, size)
                    continue
                if m.source not in opened:
                    opened[m.source] = open_source(m.source, size=size, progress=False)
                img = opened[m.source].read([m.position])[0]
                out[j] = img if img.shape[0] == size else _resize(img, size)
            except SourceError:
                pass  # the original is gone: a black tile stands in for it
        return out

    # -- searching -------------------------------------------------------------------------
    def check_k(self, k: int) -> int:
        if k < 1 or k > self.count:
            raise SearchError(f"k={k} is out of range: this index holds {self.count} image(s), "
                              f"so 1 <= k <= {self.count}")
        return k

    def searcher(self, backend: str = "auto") -> Searcher:
        """The searcher of this index for `backend`, made on first use and kept (see `Searcher`;
        for other embedder options, make one: `Searcher(index, device="cuda")`)."""
        with self._lock:
            if backend not in self._searchers:
                self._searchers[backend] = Searcher(self, backend=backend)
            return self._searchers[backend]

    def close(self) -> None:
        """Close the searchers made so far (they close by themselves when collected)."""
        with self._lock:
            for searcher in self._searchers.values():
                searcher.close()
            self._searchers = {}

    def search_vectors(self, queries: np.ndarray, k: int = 3, *, exclude: np.ndarray | None = None,
                       backend: str = "auto"):
        """(D, I) of the k nearest indexed images of each query vector; `exclude[i]` is an
        index id that query i must not return (itself, when searching by id)."""
        return self.searcher(backend).search_vectors(queries, k, exclude=exclude)

    def search_images(self, paths: list, k: int = 3, embedder: Embedder | None = None) -> list[QueryResult]:
        """Search with images (paths, bytes, files or arrays); an unreadable one gets an error
        result, the others answer. The index's embedder is built once and kept."""
        return self.searcher().search_images(paths, k, embedder=embedder)

    def search_ids(self, ids: list[int], k: int = 3) -> list[QueryResult]:
        """Search with images already in the index; each is left out of its own results."""
        return self.searcher().search_ids(ids, k)

    def _results(self, names: list[str], D: np.ndarray, I: np.ndarray) -> list[QueryResult]:
        return results(self.store, names, D, I)


def _readable(source: Source, kept: np.ndarray) -> Source:
    """`source` less the images that could not be decoded (`kept`: those that could)."""
    if len(kept) == len(source):
        return source
    if len(kept) == 0:
        raise SourceError(f"{source.name}: none of its {len(source)} image(s) could be decoded")
    return source.subset(kept, source.name)


def _resize(img: np.ndarray, size: int) -> np.ndarray:
    from PIL import Image

    from ..sources.decode import resize_crop

    return np.asarray(resize_crop(Image.fromarray(img), size))
