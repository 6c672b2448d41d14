"""`Index`: build once from a source, add images later, search by image, by id or by vector."""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import BadIndex, SearchError, SourceError
from ..features.embed import Embedder
from ..features.models import DEFAULT_MODEL
from ..features.weights import file_digest_short
from ..knn.backends import drop_excluded
from ..knn.metrics import get_metric
from ..sources.base import Source
from .store import ImageMeta, IndexStore


@dataclass
class Neighbour:
    rank: int
    distance: float
    id: int
    key: str
    label: str | None
    location: str

    def as_dict(self) -> dict:
        return dict(self.__dict__)


@dataclass
class QueryResult:
    query: str
    neighbours: list[Neighbour]
    error: str | None = None

    def as_dict(self) -> dict:
        return {"query": self.query, "error": self.error, "neighbours": [n.as_dict() for n in self.neighbours]}


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
        self._searchers: dict = {}

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
        """
        embedder = self.embedder(model, progress=progress)
        staging = self.path / ".adding"
        staging.mkdir(exist_ok=True)
        features, kept = embedder.embed(source, staging / "features.npy", return_kept=True)
        readable = _readable(source, kept)
        self.store.append(features, _metas(readable))
        shutil.rmtree(staging, ignore_errors=True)
        self.manifest = self.store.manifest()
        self._vectors = None
        self._searchers = {}
        return len(readable)

    # -- reading ---------------------------------------------------------------------------
    @property
    def count(self) -> int:
        return int(self.manifest["count"])

    @property
    def metric(self) -> str:
        return str(self.manifest["metric"])

    def vectors(self):
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

    def search_vectors(self, queries: np.ndarray, k: int = 3, *, exclude: np.ndarray | None = None,
                       backend: str = "auto"):
        """(D, I) of the k nearest indexed images of each query vector; `exclude[i]` is an
        index id that query i must not return (itself, when searching by id)."""
        from ..knn import NearestNeighbors

        self.check_k(k)
        extra = 0 if exclude is None else 1
        if k + extra > self.count:
            raise SearchError(f"k={k} is out of range: the index holds {self.count} image(s) besides the query")
        if backend not in self._searchers:  # fitting prepares a copy of the base: once per Index
            self._searchers[backend] = NearestNeighbors(metric=self.metric, backend=backend).fit(self.vectors())
        D, I = self._searchers[backend].kneighbors(queries, n_neighbors=k + extra)
        return (D, I) if exclude is None else drop_excluded(D, I, exclude, k)

    def _results(self, names: list[str], D: np.ndarray, I: np.ndarray) -> list[QueryResult]:
        metas = {m.id: m for m in self.images(sorted({int(i) for i in I.ravel()}))}
        return [QueryResult(name, [Neighbour(r + 1, float(d), int(i), metas[int(i)].key, metas[int(i)].label,
                                             metas[int(i)].location) for r, (d, i) in enumerate(zip(drow, irow))])
                for name, drow, irow in zip(names, D, I)]

    def search_images(self, paths: list[str], k: int = 3, embedder: Embedder | None = None) -> list[QueryResult]:
        """Search with image files; an unreadable one gets an error result, the others answer."""
        from ..sources import load_image

        self.check_k(k)
        embedder = embedder or self.embedder(progress=False)
        images, ok, results = [], [], {}
        for p in paths:
            try:
                images.append(load_image(p, embedder.input_size))
                ok.append(p)
            except SourceError as exc:
                results[p] = QueryResult(p, [], error=str(exc))
        if ok:
            D, I = self.search_vectors(embedder.embed_array(np.stack(images)), k)
            results |= {r.query: r for r in self._results(ok, D, I)}
        return [results[p] for p in paths]

    def search_ids(self, ids: list[int], k: int = 3) -> list[QueryResult]:
        """Search with images already in the index; each is left out of its own results."""
        self.check_k(k)
        self.images(ids)  # every id must exist
        queries = np.asarray(self.vectors()[np.asarray(ids, dtype=np.int64)])
        D, I = self.search_vectors(queries, k, exclude=np.asarray(ids))
        return self._results([f"id {i}" for i in ids], D, I)


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
