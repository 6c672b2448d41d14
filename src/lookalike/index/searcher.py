"""`Searcher`: one index searched by a long-lived program (a web service, a notebook).

It holds what a search needs, made once: the index's embedder (model, weights, pooling,
input size) and a fitted `NearestNeighbors` over the committed vectors. Before each search
it asks the index whether anything was committed since (`CommitWatch`: SQLite's
`data_version`, no read of the vectors); if so, it maps the new segments and fits a new
estimator, once, under a lock, then swaps it in. A search works on the state it started
with, so searches in flight finish on the old vectors while the new ones are prepared.

Every method may be called from several threads at once.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import BadIndex, InvalidParameter, SearchError, SourceError, UnknownImage
from ..features.embed import Embedder
from ..knn import NearestNeighbors
from ..sources.decode import ImageInput, describe_input, load_image
from .results import QueryResult, k_out_of_range, results
from .segments import SegmentedArray

if TYPE_CHECKING:
    from .index import Index


OVERFETCH = 256  # removed images a search steps over; with more, the live vectors are fitted alone


@dataclass(frozen=True)
class _State:
    """What one commit of the index gives to search: never changed, only replaced.

    `row_ids[r]` is the id of the image of vector row r (-1: removed); the estimator is
    fitted on every row (`fitted` None; `extra` of them removed, fetched and dropped) or on
    the live rows only (`fitted`: the row of each fitted vector, `extra` 0).
    """

    version: int
    count: int
    vectors: np.ndarray | SegmentedArray
    estimator: NearestNeighbors | None
    ids: np.ndarray
    rows: np.ndarray
    row_ids: np.ndarray
    fitted: np.ndarray | None
    extra: int
    segments: tuple


class Searcher:
    """Search `index` by images, by ids or by vectors, from any number of threads.

    Parameters
    ----------
    index : the `Index` to search (usually reached as `index.searcher()`).
    backend : the kNN backend, as `NearestNeighbors(backend=...)`.
    embedder : an `Embedder` to use instead of building the index's own.
    **embed_options : passed to `index.embedder` when the embedder is built (device,
        precision, batch_size, ...).
    """

    def __init__(self, index: Index, *, backend: str = "auto", embedder: Embedder | None = None,
                 **embed_options: Any):
        self.index = index
        self.backend = backend
        self._embed_options = embed_options
        self._embedder = embedder
        self._state: _State | None = None
        self._opened: dict[str, np.ndarray] = {}  # segments mapped and checked so far
        self._lock = threading.Lock()  # one refit at a time
        self._embedder_lock = threading.Lock()
        self._watch = index.store.watch()

    # -- state -------------------------------------------------------------------------------
    @property
    def embedder(self) -> Embedder:
        """The index's embedder, built on first use (once, whatever the threads)."""
        if self._embedder is None:
            with self._embedder_lock:
                if self._embedder is None:
                    self._embedder = self.index.embedder(progress=False, **self._embed_options)
        return self._embedder

    @property
    def count(self) -> int:
        """Live images in the index as of its latest commit."""
        return self._current().count

    def refresh(self) -> bool:
        """Take in new commits now (a search does it by itself); True if there were some."""
        before = self._state
        return self._current() is not before

    def warm(self) -> Searcher:
        """Build the embedder and fit the estimator now rather than on the first search."""
        self._current()
        _ = self.embedder
        return self

    def _current(self) -> _State:
        version = self._watch.version()
        state = self._state
        if state is not None and state.version == version:
            return state
        with self._lock:
            state = self._state
            if state is None or state.version != version:
                state = self._state = self._load(version, state)
        return state

    def _load(self, version: int, old: _State | None) -> _State:
        state = self.index.store.committed()
        vectors = self.index.store.vectors(verify=self.index.verify, opened=self._opened, state=state)
        row_ids = np.full(len(vectors), -1, np.int64)
        row_ids[state.rows] = state.ids
        dead = len(vectors) - len(state.ids)
        segments = tuple(state.segments)
        common = {"version": version, "count": len(state.ids), "vectors": vectors, "ids": state.ids,
                  "rows": state.rows, "row_ids": row_ids}
        if not len(state.ids):  # nothing live: every search is refused by its k
            return _State(**common, estimator=None, fitted=None, extra=dead, segments=segments)
        if dead <= OVERFETCH:
            if old is not None and old.estimator is not None and old.fitted is None and old.segments == segments:
                return replace(old, **common, extra=dead)  # a commit that removed a few images: no refit
            estimator = self._fit(vectors, segments)
            return _State(**common, estimator=estimator, fitted=None, extra=dead, segments=segments)
        live = np.asarray(vectors[state.rows])  # many removed: fit the live vectors alone (compact to map them)
        estimator = self._fit(live, segments)
        return _State(**common, estimator=estimator, fitted=state.rows, extra=0, segments=segments)

    def _fit(self, vectors, segments: tuple) -> NearestNeighbors:
        """The estimator over `vectors`. Vectors the index wrote are finite float32 values (each
        checked when added): one that is not (a NaN, an infinity, a value beyond float32's
        range) is damage to its segment file, named, whose size the load checks but not every
        byte (`lookalike index verify` does)."""
        try:
            return NearestNeighbors(metric=self.index.metric, backend=self.backend).fit(vectors)
        except InvalidParameter as exc:
            damaged = self._damaged(segments)
            if damaged is None:  # not the vectors (a backend that cannot run here, say): as it is
                raise
            raise BadIndex(f"{damaged}: holds vectors no index writes ({exc}); the vector file "
                           f"is damaged (`lookalike index verify {self.index.path}` checks every file)") from None

    def _damaged(self, segments: tuple) -> str | None:
        """The first segment file holding a value no index writes, by the fit's own check of
        values (None: none does)."""
        from ..knn.validation import check_values

        folder = self.index.path / "vectors"
        for name, *_ in segments:
            try:
                check_values(np.load(folder / name, mmap_mode="r"), name)
            except (OSError, ValueError, IndexError):  # InvalidParameter is a ValueError
                return str(folder / name)
        return None

    def close(self) -> None:
        """Let go of the index's database (done by itself when the searcher is collected)."""
        self._watch.close()

    def __enter__(self) -> Searcher:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- searching ---------------------------------------------------------------------------
    def search_vectors(self, queries: np.ndarray, k: int = 3, *, exclude: np.ndarray | None = None):
        """(D, I), each of shape (n_queries, k): the k nearest indexed images of each query
        vector; `exclude[q]` is an index id that query q must not return (itself)."""
        return self._search(self._current(), queries, k, exclude)

    def search_ids(self, ids: Sequence[int], k: int = 3) -> list[QueryResult]:
        """Search with images already in the index; each is left out of its own results."""
        state = self._current()
        self._check_k(k, state, by_id=True)
        ids = np.asarray(ids, dtype=np.int64).reshape(-1)
        at = np.searchsorted(state.ids, ids)
        for i, j in zip(ids, at):
            if j >= len(state.ids) or state.ids[j] != i:
                self.index.store.images([int(i)])  # raises UnknownImage, saying why
                raise UnknownImage(f"no image with id {i} in {self.index.path}")  # added since: not yet seen
        D, I = self._search(state, np.asarray(state.vectors[state.rows[at]]), k, ids)
        return results(self.index.store, [f"id {i}" for i in ids], D, I)

    def search_images(self, images: Sequence[ImageInput], k: int = 3, *, names: Sequence[str] | None = None,
                      embedder: Embedder | None = None) -> list[QueryResult]:
        """Search with images: paths, encoded bytes, binary files or uint8 arrays (as
        `load_image` takes). One that cannot be read gets a result with its `error` and no
        neighbours; the others answer. `names` title the results (default: the path, or
        <bytes>, <file>, <array>); `embedder` replaces the searcher's for this call."""
        state = self._current()
        self._check_k(k, state)
        embedder = embedder or self.embedder
        names = [describe_input(x) for x in images] if names is None else list(names)
        if len(names) != len(images):
            raise InvalidParameter(f"{len(names)} names for {len(images)} images")
        pixels, ok, answers = [], [], {}
        for j, (image, name) in enumerate(zip(images, names)):
            try:
                pixels.append(load_image(image, embedder.input_size))
                ok.append(j)
            except SourceError as exc:
                answers[j] = QueryResult(name, [], error=str(exc))
        if ok:
            D, I = self._search(state, embedder.embed_array(np.stack(pixels)), k)
            answers |= dict(zip(ok, results(self.index.store, [names[j] for j in ok], D, I)))
        return [answers[j] for j in range(len(names))]

    def _check_k(self, k: int, state: _State, by_id: bool = False) -> None:
        if not 1 <= k <= state.count - by_id:
            raise SearchError(k_out_of_range(k, state.count, by_id))

    def _search(self, state: _State, queries, k: int, exclude: np.ndarray | None = None):
        """(D, I) of the k nearest live images: I holds image ids."""
        queries = np.asarray(queries)
        dim = int(self.index.manifest["dim"])
        if queries.ndim != 2 or queries.shape[1] != dim:
            raise SearchError(f"queries of shape {queries.shape}; this index holds {dim}-d vectors, "
                              f"so give (n_queries, {dim})")
        self._check_k(k, state, by_id=exclude is not None)
        fetch = k + state.extra + (exclude is not None)
        D, I = state.estimator.kneighbors(queries, n_neighbors=min(fetch, state.estimator.n_samples_fit_))
        rows = I if state.fitted is None else state.fitted[I]
        ids = state.row_ids[rows]
        keep = ids >= 0
        if exclude is not None:
            keep &= ids != np.asarray(exclude, dtype=np.int64)[:, None]
        order = np.argsort(~keep, axis=1, kind="stable")[:, :k]  # the kept ones first, in rank order
        return np.take_along_axis(D, order, 1), np.take_along_axis(ids, order, 1)
