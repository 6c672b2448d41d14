"""`Index`: build once from a source, add images later, search by image, by id or by vector.

Searches go through a `Searcher` (`index.searcher()`), made once per backend and kept: it
holds the embedder and the fitted estimator, and notices images added later, by this
object or any other. An `Index` may be shared between threads.
"""

from __future__ import annotations

import os
import shutil
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..atomic import check_writable_folder, check_writable_parent, make_own_folder, remove_own_folder, renamed
from ..errors import BadIndex, InvalidParameter, SearchError, SourceError, WriteError
from ..features.embed import Embedder
from ..features.files import image_digests
from ..features.models import DEFAULT_MODEL, MODELS, get_spec
from ..features.mid import NONE as NO_MID
from ..features.views import SINGLE
from ..features.weights import file_digest_short
from ..knn.metrics import get_metric
from ..sources.base import Source
from .duplicates import find_duplicates, same_vectors
from .results import Neighbour, QueryResult, k_out_of_range, results
from .searcher import Searcher
from .staging import Staging, work_key
from .store import ImageMeta, IndexStore

__all__ = ["Added", "Index", "Neighbour", "QueryResult", "Searcher"]

STAGING = "staging"  # the kind of lookalike's own work folders (see `atomic.make_own_folder`)
STAGED = (".features.npy.partial", "features.npy", "features.json", "index")  # what a staging folder holds


@dataclass
class Added:
    """What `Index.add_images` did: images `added`, and `duplicates` skipped (already in the
    index: same place, same pixels); `ids`: the ids the added images got, in the order of
    the source's images that were added."""

    added: int
    duplicates: int
    ids: list[int] = field(default_factory=list)


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
    if out.exists() and IndexStore(out).db_path.is_file():  # an index, as opening one decides it
        raise BadIndex(f"{out} exists already; add images with `lookalike index add {out} SOURCE`")
    if out.exists():  # a folder of photos, or anything else: not an index to add to
        raise BadIndex(f"{out}: a folder that exists and is not an index; give the name of a new index folder")
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

    Every image has an id, given when it is committed and never changed (not by `remove`,
    not by `compact`). `count` is the number of live (not removed) images.

    Parameters
    ----------
    path : the index folder.
    verify : also check every vector segment's CRC-32 when the vectors are first read (reads
        every byte; sizes and shapes are always checked). `problems()` checks everything.
    lock_timeout : seconds a change (add, remove, compact) waits for another writer's
        commit before it gives up with `IndexBusy` (default: $LOOKALIKE_LOCK_TIMEOUT, else 120).
    """

    def __init__(self, path: str | os.PathLike, *, verify: bool = False, lock_timeout: float | None = None):
        self.path = Path(path)
        self.store = IndexStore(self.path, lock_timeout=lock_timeout)
        self.manifest = self.store.manifest()
        self.verify = verify
        self._vectors = None
        self._searchers: dict[str, Searcher] = {}
        self._lock = threading.Lock()  # guards the two caches above

    # -- building --------------------------------------------------------------------------
    @classmethod
    def build(cls, source: Source, out: str | os.PathLike, *, model: str = DEFAULT_MODEL, weights: str = "imagenet",
              pooling: str | None = None, metric: str | None = None, embedder: Embedder | None = None,
              progress: bool = True, thumbnails: bool = True, **embed_options) -> Index:
        """Embed every image of `source` and write a new index folder `out`.

        `pooling` and `metric` default to the model's own (`ModelSpec.pooling`, `.metric`).

        Work happens in a hidden folder beside `out` (resumable: run the same call again
        after an interruption); `out` appears, complete, in one rename at the end. Images
        that cannot be decoded are left out and listed in `source.skipped`. With
        `thumbnails`, a small picture of each image is stored too (see `thumbnail`).
        """
        out = check_new_index(out)
        _indexable(source)
        embedder = embedder or Embedder(model, weights=weights, pooling=pooling, progress=progress, **embed_options)
        metric = get_metric(get_spec(embedder.model).metric if metric is None else metric).name
        staging = _staging(out)
        try:
            done = embedder.embed_rows(source, staging / "features.npy", keep_empty=True)
        except WriteError as exc:  # name the index asked for, not the hidden folder it is made in
            raise renamed(exc, out) from exc.__cause__
        try:
            readable = _readable(source, done.kept)
        except SourceError:  # nothing decoded: nothing to resume either, so no staging folder is left
            remove_own_folder(staging, STAGING)
            raise
        thumbs = _thumbnails(readable, embedder.batch_size) if thumbnails else None
        # how the CNN ran, and why (`index info` shows it): not part of the vectors' identity
        config = {**embedder.config(), "embedded_with": embedder.explain()}
        return cls.from_features(done.features, readable, config, out,
                                 metric=metric, staging=staging, digests=done.digests, thumbnails=thumbs)

    @classmethod
    def from_features(cls, features: np.ndarray, source: Source, config: dict, out: str | os.PathLike, *,
                      metric: str | None = None, staging: Path | None = None,
                      digests: list[str] | None = None,
                      thumbnails: list[tuple[bytes, str] | None] | None = None) -> Index:
        """A new index `out` from features already computed for `source` with `config`
        (`digests`: the content digest of each image, as `Embedder.embed_rows` gives them;
        `metric`: by default the model's own, euclidean for a model lookalike does not know;
        `thumbnails`: (bytes, media type) or None for each image)."""
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
            store.append(np.asarray(features, dtype=np.float32), _metas(source, digests), thumbnails or (),
                         lock=False)
            os.replace(building, out)
        except WriteError as exc:
            raise renamed(exc, out) from exc.__cause__
        remove_own_folder(staging, STAGING)
        return cls(out)

    def embedder(self, model: str | None = None, progress: bool = True, **options) -> Embedder:
        """An embedder that makes vectors comparable with this index's (same model, weights,
        pooling, views, input size, preprocessing)."""
        m = self.manifest
        if model is not None and model != m["model"]:
            raise BadIndex(f"{self.path} was built with model {m['model']}, not {model}; "
                           "vectors of different models cannot be compared")
        # an index built before views (or mid-level features) were recorded was built with the
        # single view (and the final feature map alone)
        e = Embedder(m["model"], weights=_weights_arg(m["weights"]), pooling=m["pooling"],
                     views=m.get("views", SINGLE), mid=m.get("mid", NO_MID), input_size=m["input_shape"][0],
                     progress=progress, **options)
        if e.weights_id != m["weights"] or e.dim != m["dim"]:
            raise BadIndex(f"{self.path} was built with weights {m['weights']} ({m['dim']}-d); "
                           f"this machine gives {e.weights_id} ({e.dim}-d)")
        return e

    def add(self, source: Source, *, model: str | None = None, progress: bool = True,
            keep_duplicates: bool = False, thumbnails: bool = True) -> int:
        """Embed and append every image of `source` that decodes and is not in the index
        already; returns how many were added (see `add_images`)."""
        return self.add_images(source, model=model, progress=progress, keep_duplicates=keep_duplicates,
                               thumbnails=thumbnails).added

    def add_images(self, source: Source, *, model: str | None = None, progress: bool = True,
                   keep_duplicates: bool = False, thumbnails: bool = True) -> Added:
        """Embed and append every image of `source` that decodes; their ids are in the result.

        An image the index holds already (from the same file, or the same source and
        position, with the same pixels) is skipped unless `keep_duplicates`, also one that
        another writer committed while this one was embedding. Any number of writers
        (processes or threads) may add at once: each embeds in a staging folder of its own
        (resumable: the same call, run again after an interruption, picks up its own
        finished work and nobody else's), and only the commit is serialised by the index's
        lock. The index changes in one commit at the end or not at all. With `thumbnails`,
        a small picture of each image is stored in the same commit. Searchers of this
        index, in this process or another, see the new images on their next search.

        To add a few given files (uploads): `add_images(files_source(paths, size))`
        (`lookalike.sources.files_source`).
        """
        check_writable_folder(self.path)  # a read-only index: said now, not after the work
        _indexable(source)
        self.store.check()  # a damaged index is said now, and is not changed
        embedder = self.embedder(model, progress=progress)
        metas = _metas(source)
        dups, unknown = ((set(), {}) if keep_duplicates else
                         find_duplicates(self.store, source, metas, embedder.batch_size))
        if len(dups) == len(source):
            return Added(0, len(dups), [])
        keep = np.array([i for i in range(len(source)) if i not in dups], dtype=np.int64)
        todo = source if not dups else source.subset(keep, source.name)
        remove_own_folder(self.path / ".adding", STAGING)  # the shared staging folder of lookalike < 0.3
        key = work_key(str(source.spec), list(todo.ids), embedder.config())
        try:
            with Staging(self.path, key) as stage:
                done = embedder.embed_rows(todo, stage.folder / "features.npy", keep_empty=True)
                if dups and not len(done.kept):  # the new images all failed to decode (listed in
                    stage.done()  # `source.skipped`), the others are in the index: nothing to add
                    return Added(0, len(dups), [])
                readable = _readable(todo, done.kept)
                rows = np.arange(len(readable))
                if unknown:  # images of a format-1 index, whose digests are not known: compared by vector
                    vectors = self.store.vectors()
                    rows = np.array([r for r, i in enumerate(keep[done.kept]) if not (
                        i in unknown and same_vectors(done.features[r], np.asarray(vectors[unknown[i]])))],
                        np.int64)
                new_metas = _metas(readable, done.digests)
                thumbs = _thumbnails(readable, embedder.batch_size) if thumbnails else []
                ids, present = [], 0
                if len(rows):
                    ids, present = self.store.append(
                        done.features[rows], [new_metas[r] for r in rows],
                        [thumbs[r] for r in rows] if thumbs else (), skip_present=not keep_duplicates)
                stage.done()
        except WriteError as exc:  # name the index, not the hidden folder or the new segment
            raise renamed(exc, self.path) from exc.__cause__
        self._refresh()
        return Added(len(ids), len(dups) + len(readable) - len(rows) + present, ids)

    def _refresh(self) -> None:
        with self._lock:
            self.manifest = self.store.manifest()
            self._vectors = None

    # -- changing ----------------------------------------------------------------------------
    def remove(self, *, ids: Sequence[int] | None = None, keys: Sequence[str] | None = None,
               sources: Sequence[str] | None = None) -> list[int]:
        """Mark images removed, in one transaction: those with these `ids`, those whose
        source key is in `keys`, and those that came from `sources` (a spec as given to
        `add`, or a folder). Returns the ids removed, ascending. An id, key or source that
        names no live image raises `UnknownImage` before anything changes. Searches never
        return a removed image; its vector stays on disk until `compact`."""
        if isinstance(ids, (int, np.integer)) or isinstance(keys, str) or isinstance(sources, str):
            raise InvalidParameter("ids, keys and sources are lists (remove(ids=[3]), not remove(ids=3))")
        if not (ids or keys or sources):
            raise InvalidParameter("nothing to remove: give ids, keys or sources")
        check_writable_folder(self.path)
        removed = self.store.remove(list(ids or ()), list(keys or ()), list(sources or ()))
        self._refresh()
        return removed

    def compact(self) -> tuple[int, int]:
        """Rewrite the vectors without those of removed images (atomically: a crash leaves
        the old or the new index whole); ids do not change. Returns (vectors before, after)."""
        check_writable_folder(self.path)
        done = self.store.compact()
        self._refresh()
        return done

    def problems(self) -> list[str]:
        """Every problem of the index, one line each (empty: it is whole): SQLite's integrity,
        each segment's size, shape and CRC-32, the counts, the manifest, the thumbnails."""
        from .verify import problems

        return problems(self.store)

    # -- reading ---------------------------------------------------------------------------
    @property
    def count(self) -> int:
        """Live images (not removed) as of this object's opening or its last change."""
        return int(self.manifest["count"])

    @property
    def metric(self) -> str:
        return str(self.manifest["metric"])

    def vectors(self):
        """The vectors of the live images (count, dim), in the order of their ids, as of this
        object's opening or last change: memory-mapped while no image was removed."""
        with self._lock:
            if self._vectors is None:
                state = self.store.committed()
                vectors = self.store.vectors(verify=self.verify, state=state)
                if len(state.rows) != len(vectors):
                    order = np.argsort(state.ids, kind="stable")
                    vectors = vectors[state.rows[order]]
                self._vectors = vectors
            return self._vectors

    def ids(self) -> list[int]:
        """The ids of the live images, ascending."""
        return sorted(int(i) for i in self.store.committed().ids)

    def images(self, ids: list[int] | None = None) -> list[ImageMeta]:
        """The metadata of images `ids` (default: every live image, by id); an id that is
        unknown or removed raises `UnknownImage` (a `SearchError`)."""
        return self.store.images(ids)

    def image(self, i: int) -> ImageMeta:
        """The metadata of image `i` (see `images`)."""
        return self.store.images([i])[0]

    def thumbnail(self, i: int) -> tuple[bytes, str] | None:
        """(bytes, media type) of image `i`'s thumbnail, None when the index has none for it
        (added with thumbnails off, by an older lookalike, or removed)."""
        return self.store.thumbnail(i)

    def check(self, checksums: bool = False) -> None:
        """Raise `BadIndex` if a vector file is missing, truncated or of the wrong shape (with
        `checksums`, also if one's CRC-32 differs), or the image rows do not fit the vectors."""
        self.store.check(checksums)

    def info(self) -> dict:
        segs = self.store.segments()
        thumbs, thumb_bytes = self.store.thumbnail_stats()
        return {**self.manifest, "views": self.manifest.get("views", SINGLE),
                "mid": self.manifest.get("mid", NO_MID), "path": str(self.path),
                "segments": len(segs),
                "vector_bytes": sum(s[2] for s in segs), "labels": self.store.label_count(),
                "removed": int(self.manifest["rows"]) - self.count if "rows" in self.manifest else 0,
                "thumbnails": thumbs, "thumbnail_bytes": thumb_bytes}

    def read_pixels(self, ids: list[int]) -> np.ndarray:
        """The images themselves (uint8, input size), re-read from where they came from. An
        image that is gone, or whose pixels are no longer those it was indexed with, is drawn
        from its stored thumbnail; black when there is none."""
        from .thumbnails import decode

        size = int(self.manifest["input_shape"][0])
        metas = self.images(ids)
        digests = self.store.digests(sorted(set(ids)))
        out = np.zeros((len(ids), size, size, 3), dtype=np.uint8)
        opened: dict[str, Source | None] = {}
        for j, m in enumerate(metas):
            img = _reread(m, size, opened)
            if img is None or (digests.get(m.id) and image_digests(img[None])[0] != digests[m.id]):
                thumb = self.thumbnail(m.id)  # the original is gone or changed
                if thumb is not None:
                    out[j] = decode(thumb[0], size)
                continue
            out[j] = img if img.shape[0] == size else _resize(img, size)
        return out

    # -- searching -------------------------------------------------------------------------
    def check_k(self, k: int, by_id: bool = False) -> int:
        """`k` if a search can give that many neighbours (`by_id`: the query itself left out),
        counting live images as of the latest commit."""
        count = self.searcher().count
        most = count - 1 if by_id else count
        if not 1 <= k <= most:
            raise SearchError(k_out_of_range(k, count, by_id))
        return k

    def searcher(self, backend: str = "auto") -> Searcher:
        """The searcher of this index for `backend`, made on first use and kept (see `Searcher`;
        for other embedder options, make one: `Searcher(index, device="cuda")`)."""
        with self._lock:
            if backend not in self._searchers:
                self._searchers[backend] = Searcher(self, backend=backend)
            return self._searchers[backend]

    def close(self) -> None:
        """Close the searchers made so far and the kept read connections (`store.keep_readers`);
        all close by themselves when collected."""
        with self._lock:
            for searcher in self._searchers.values():
                searcher.close()
            self._searchers = {}
        self.store.close_readers()

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


def _thumbnails(source: Source, batch_size: int) -> list[tuple[bytes, str] | None]:
    """(bytes, media type) of a thumbnail of each image of `source` (None: unreadable now)."""
    from .thumbnails import MEDIA_TYPE, of_source

    return [None if t is None else (t, MEDIA_TYPE) for t in of_source(source, batch_size)]


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
