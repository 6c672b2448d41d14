"""`Index`: build once from a source, add images later, search by image, by id or by vector.

Searches go through a `Searcher` (`index.searcher()`), made once per backend and kept: it
holds the embedder and the fitted estimator, and notices images added later, by this
object or any other. An `Index` may be shared between threads.
"""

from __future__ import annotations

import os
import shutil
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..atomic import check_writable_folder, check_writable_parent, make_own_folder, remove_own_folder, renamed
from ..errors import BadIndex, SearchError, SourceError, WriteError
from ..features.embed import Embedder
from ..features.files import image_digests
from ..features.models import DEFAULT_MODEL, MODELS, get_spec
from ..features.weights import file_digest_short
from ..knn.metrics import get_metric
from ..sources.base import Source
from .duplicates import find_duplicates, same_vectors
from .results import Neighbour, QueryResult, k_out_of_range, results
from .searcher import Searcher
from .store import ImageMeta, IndexStore

__all__ = ["Added", "Index", "Neighbour", "QueryResult", "Searcher"]

STAGING = "staging"  # the kind of lookalike's own work folders (see `atomic.make_own_folder`)
STAGED = (".features.npy.partial", "features.npy", "features.json", "index")  # what a staging folder holds


@dataclass
class Added:
    """What `Index.add_images` did: images `added`, and `duplicates` skipped (already in the
    index: same place, same pixels)."""

    added: int
    duplicates: int


def _indexable(source: Source) -> None:
    """An index records where each image came from: an in-memory set has no such place."""
    if source.spec is None:
        raise SourceError(f"{source.name}: an in-memory image set cannot be indexed; save it as .npy first")


def _metas(source: Source, digests: list[str] | None = None) -> list[dict]:
    _indexable(source)
    spec = source.spec
    return [{"key": source.ids[i], "source": spec, "position": source.position(i),
             "location": source.location(i), "label": source.label(i),
             "digest": None if digests is None else digests[i]} for i in range(len(source))]


def check_new_index(out: str | os.PathLike) -> Path:
    """`out` as the folder of a new index, before any work: it must not exist, and its
    parent must be a folder that can be written."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise BadIndex(f"{out}: is a file; give the name of a new index folder")
    if out.exists():
        raise BadIndex(f"{out} exists already; add images with `lookalike index add {out} SOURCE`")
    check_writable_parent(out)
    return out


def _staging(out: Path) -> Path:
    return make_own_folder(out.with_name(f".{out.name}.building"), STAGING, known=STAGED)


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
              pooling: str | None = None, metric: str | None = None, embedder: Embedder | None = None,
              progress: bool = True, **embed_options) -> Index:
        """Embed every image of `source` and write a new index folder `out`.

        `pooling` and `metric` default to the model's own (`ModelSpec.pooling`, `.metric`).

        Work happens in a hidden folder beside `out` (resumable: run the same call again
        after an interruption); `out` appears, complete, in one rename at the end. Images
        that cannot be decoded are left out and listed in `source.skipped`.
        """
        out = check_new_index(out)
        _indexable(source)
        embedder = embedder or Embedder(model, weights=weights, pooling=pooling, progress=progress, **embed_options)
        metric = get_metric(get_spec(embedder.model).metric if metric is None else metric).name
        staging = _staging(out)
        try:
            done = embedder.embed_rows(source, staging / "features.npy")
        except WriteError as exc:  # name the index asked for, not the hidden folder it is made in
            raise renamed(exc, out) from exc.__cause__
        return cls.from_features(done.features, _readable(source, done.kept), embedder.config(), out,
                                 metric=metric, staging=staging, digests=done.digests)

    @classmethod
    def from_features(cls, features: np.ndarray, source: Source, config: dict, out: str | os.PathLike, *,
                      metric: str | None = None, staging: Path | None = None,
                      digests: list[str] | None = None) -> Index:
        """A new index `out` from features already computed for `source` with `config`
        (`digests`: the content digest of each image, as `Embedder.embed_rows` gives them;
        `metric`: by default the model's own, euclidean for a model lookalike does not know)."""
        out = check_new_index(out)
        if metric is None:
            metric = MODELS[config["model"]].metric if config.get("model") in MODELS else "euclidean"
        if len(features) != len(source) or (digests is not None and len(digests) != len(source)):
            raise BadIndex(f"{len(features)} feature vectors for {len(source)} images")
        staging = staging or _staging(out)
        building = staging / "index"
        if building.exists():
            shutil.rmtree(building)  # an earlier try's: the staging folder is lookalike's own (marked)
        manifest = {**config, "metric": get_metric(metric).name, "count": 0}
        try:
            store = IndexStore.create(building, manifest)
            store.append(np.asarray(features, dtype=np.float32), _metas(source, digests))
            os.replace(building, out)
        except WriteError as exc:
            raise renamed(exc, out) from exc.__cause__
        remove_own_folder(staging, STAGING)
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

    def add(self, source: Source, *, model: str | None = None, progress: bool = True,
            keep_duplicates: bool = False) -> int:
        """Embed and append every image of `source` that decodes and is not in the index
        already; returns how many were added (see `add_images`)."""
        return self.add_images(source, model=model, progress=progress, keep_duplicates=keep_duplicates).added

    def add_images(self, source: Source, *, model: str | None = None, progress: bool = True,
                   keep_duplicates: bool = False) -> Added:
        """Embed and append every image of `source` that decodes.

        An image the index holds already (from the same file, or the same source and
        position, with the same pixels) is skipped unless `keep_duplicates`. Resumable like
        `build`; the index changes in one commit at the end or not at all. Searchers of this
        index, in this process or another, see the new images on their next search.
        """
        check_writable_folder(self.path)  # a read-only index: said now, not after the work
        _indexable(source)
        embedder = self.embedder(model, progress=progress)
        metas = _metas(source)
        dups, unknown = ((set(), {}) if keep_duplicates else
                         find_duplicates(self.store, source, metas, embedder.batch_size))
        if len(dups) == len(source):
            return Added(0, len(dups))
        keep = np.array([i for i in range(len(source)) if i not in dups], dtype=np.int64)
        todo = source if not dups else source.subset(keep, source.name)
        staging = make_own_folder(self.path / ".adding", STAGING, known=STAGED)
        try:
            done = embedder.embed_rows(todo, staging / "features.npy")
            readable = _readable(todo, done.kept)
            rows = np.arange(len(readable))
            if unknown:  # images of a format-1 index, whose digests are not known: compared by vector
                vectors = self.vectors()
                rows = np.array([r for r, i in enumerate(keep[done.kept]) if not (
                    i in unknown and same_vectors(done.features[r], np.asarray(vectors[unknown[i]])))], np.int64)
            new_metas = _metas(readable, done.digests)
            if len(rows):
                self.store.append(done.features[rows], [new_metas[r] for r in rows])
        except WriteError as exc:  # name the index, not the hidden folder or the new segment
            raise renamed(exc, self.path) from exc.__cause__
        remove_own_folder(staging, STAGING)
        with self._lock:
            self.manifest = self.store.manifest()
            self._vectors = None
        return Added(len(rows), len(dups) + len(readable) - len(rows))

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

    def check(self, checksums: bool = True) -> None:
        """Raise `BadIndex` if a vector file is missing, truncated or of the wrong shape (with
        `checksums`, also if one's CRC-32 differs), or metadata rows are missing."""
        self.store.check(checksums)

    def info(self) -> dict:
        segs = self.store.segments()
        return {**self.manifest, "path": str(self.path), "segments": len(segs),
                "vector_bytes": sum(s[2] for s in segs), "labels": self.store.label_count()}

    def read_pixels(self, ids: list[int]) -> np.ndarray:
        """The images themselves (uint8, input size), re-read from where they came from. An
        image that is gone, or whose pixels are no longer those it was indexed with, is black."""
        size = int(self.manifest["input_shape"][0])
        metas = self.images(ids)
        digests = self.store.digests(sorted(set(ids)))
        out = np.zeros((len(ids), size, size, 3), dtype=np.uint8)
        opened: dict[str, Source | None] = {}
        for j, m in enumerate(metas):
            img = _reread(m, size, opened)
            if img is None or (digests.get(m.id) and image_digests(img[None])[0] != digests[m.id]):
                continue  # the original is gone or changed: a black tile stands in for it
            out[j] = img if img.shape[0] == size else _resize(img, size)
        return out

    # -- searching -------------------------------------------------------------------------
    def check_k(self, k: int, by_id: bool = False) -> int:
        """`k` if a search can give that many neighbours (`by_id`: the query itself left out)."""
        most = self.count - 1 if by_id else self.count
        if not 1 <= k <= most:
            raise SearchError(k_out_of_range(k, self.count, by_id))
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


def _reread(m: ImageMeta, size: int, opened: dict) -> np.ndarray | None:
    """Image `m` read again from where it came from; None if it cannot be."""
    from ..sources import load_image, open_source

    try:
        if Path(m.source).is_dir():
            return load_image(m.location, size)
        if m.source not in opened:
            opened[m.source] = open_source(m.source, size=size, progress=False)
        source = opened[m.source]
        if m.position is None or not 0 <= m.position < len(source):
            return None  # the file holds fewer images now
        return source.read([m.position])[0]
    except (SourceError, OSError):
        return None


def _resize(img: np.ndarray, size: int) -> np.ndarray:
    from PIL import Image

    from ..sources.decode import resize_crop

    return np.asarray(resize_crop(Image.fromarray(img), size))
