"""`NearestNeighbors` on a Dask cluster, shaped like `cuml.dask.neighbors.NearestNeighbors`.

`fit` keeps the base in row shards on storage (`shards.py`); `kneighbors` makes one task per
(query block, shard), each running lookalike's exact engine on the shard it reads, and one
merge task per query block (`merge.py`). Tasks are pure functions of what storage holds, so
Dask reruns those of a lost worker elsewhere (`distributed.scheduler.allowed-failures`) and
the result is still exact.
"""

from __future__ import annotations

import numbers
import operator
import os
import shutil
import tempfile
import threading
import weakref
from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ClusterError, InvalidParameter
from ..knn.metrics import NAMES, get_metric
from ..knn.precision import SCREEN_PRECISIONS
from ..knn.validation import check_array, check_k
from . import shards as _shards
from .cluster import require
from .merge import merge_results

BATCH_SIZE = 4096  # query rows per task


def _int_at_least(lo: int):
    return lambda v: isinstance(v, numbers.Integral) and not isinstance(v, bool) and v >= lo


_CONSTRAINTS: dict[str, tuple[Any, str]] = {
    "n_neighbors": (_int_at_least(1), "an int >= 1"),
    "metric": (lambda v: isinstance(v, str) and v.lower() in NAMES, f"one of {NAMES}"),
    "batch_size": (_int_at_least(1), "an int >= 1 (query rows per task)"),
    "shard_rows": (lambda v: v is None or _int_at_least(1)(v), "None or an int >= 1"),
    "storage": (lambda v: v is None or isinstance(v, (str, os.PathLike)), "None or a folder path"),
    "device": (lambda v: isinstance(v, str) and (v in ("auto", "cpu") or v.startswith("cuda")),
               "'auto', 'cpu' or 'cuda[:N]'"),
    "working_memory": (lambda v: v is None or (isinstance(v, numbers.Real) and 1 <= v < float("inf")),
                       "None or a finite number of MiB >= 1"),
    "precision": (lambda v: isinstance(v, str) and v in SCREEN_PRECISIONS, f"one of {list(SCREEN_PRECISIONS)}"),
}


class NearestNeighbors:
    """Exact k-nearest-neighbour search over a base kept in shards, on a Dask cluster.

    Parameters
    ----------
    n_neighbors : int, default=5
        Neighbours returned by `kneighbors` when not given there.
    metric : str, default='euclidean'
        Any metric of `lookalike.NearestNeighbors` ('inner_product' is largest first).
    client : distributed.Client, default=None
        The cluster to run on; None: the current client (`distributed.get_client()`).
    batch_size : int, default=4096
        Query rows per task (numpy queries; a dask array keeps its own row chunks).
    shard_rows : int, default=None
        Rows per shard at most. None: a numpy base is cut into one shard per worker, a dask
        array keeps its row chunks, .npy files and index segments are one shard each.
    storage : str or path, default=None
        Folder in which `fit` makes a new folder for the shards of an array base; every
        worker must read it at the same path (a shared file system for several machines).
        None: the system's temporary folder (right for a LocalCluster). The shards' folder
        is removed with the estimator.
    device : str, default='auto'
        Where each worker's engine runs, resolved on the worker: 'auto' (its CUDA device when
        it has one), 'cpu', 'cuda[:N]'. With one worker per GPU (dask-cuda), 'auto' or
        'cuda' is that worker's own GPU.
    working_memory : float, default=None
        MiB for the engine's blocks in each task (None: the engine's default).
    precision : str, default='auto'
        The engine's screen precision, chosen on each worker for its device and shard as
        `lookalike.NearestNeighbors` chooses it; results are exact whatever it is.

    Attributes
    ----------
    n_samples_fit_ : int
    n_features_in_ : int
    effective_metric_ : str
    shards_ : list of Shard
        The base's shards: file, rows and global offset of each.
    storage_ : Path or None
        The folder `fit` wrote the shards to (None for .npy files and index folders).
    dtype_ : numpy dtype
        The base's dtype (float32 for index folders).
    """

    def __init__(self, n_neighbors: int = 5, *, metric: str = "euclidean", client=None,
                 batch_size: int = BATCH_SIZE, shard_rows: int | None = None,
                 storage: str | os.PathLike | None = None, device: str = "auto",
                 working_memory: float | None = None, precision: str = "auto"):
        self.n_neighbors = n_neighbors
        self.metric = metric
        self.client = client
        self.batch_size = batch_size
        self.shard_rows = shard_rows
        self.storage = storage
        self.device = device
        self.working_memory = working_memory
        self.precision = precision

    def __repr__(self) -> str:
        return f"{type(self).__name__}(n_neighbors={self.n_neighbors!r}, metric={self.metric!r})"

    def _check_params(self) -> None:
        for name, (test, need) in _CONSTRAINTS.items():
            value = getattr(self, name)
            if not test(value):
                raise InvalidParameter(f"The {name!r} parameter of {type(self).__name__} must be {need}. "
                                       f"Got {value!r} instead.")

    def _client(self):
        require()
        if self.client is not None:
            return self.client
        from distributed import get_client

        try:
            return get_client()
        except ValueError:
            raise ClusterError("no Dask client: pass client=distributed.Client(...) or create one first") from None

    # -- fitting ---------------------------------------------------------------------------
    def fit(self, X, y=None) -> NearestNeighbors:
        """Keep the base in shards on storage. Returns self.

        X : dask array or ndarray of shape (n_samples, n_features), an index folder (its
            vector segments are the shards, read where they are), or a list of .npy files
            (each a shard; all of the same width). `y` is ignored.
        """
        self._check_params()
        client = self._client()
        self.storage_ = None
        if isinstance(X, (str, os.PathLike)) and Path(X).is_dir():
            shards, d, dtype = _shards.from_index(X, self.shard_rows)
        elif isinstance(X, (list, tuple)) and X and all(isinstance(p, (str, os.PathLike)) for p in X):
            shards, d, dtype = _shards.from_files(list(X), self.shard_rows)
        elif isinstance(X, (str, os.PathLike)):
            shards, d, dtype = _shards.from_files([X], self.shard_rows)
        elif _is_dask_array(X):
            shards, d, dtype = self._write_dask(X, client)
        else:
            X = check_array(X, name="X", estimator=type(self).__name__)
            rows = self.shard_rows or -(-len(X) // max(1, _workers(client)))
            shards, d, dtype = _shards.write(X, self._folder(), rows), X.shape[1], X.dtype
        self.shards_ = shards
        self.n_samples_fit_ = sum(len(s) for s in shards)
        self.n_features_in_ = d
        self.dtype_ = np.dtype(dtype)
        self.effective_metric_ = get_metric(self.metric).name
        return self

    def _folder(self) -> Path:
        """A new folder for this fit's shards, in `storage` or a temporary one."""
        if self.storage is not None:
            Path(self.storage).mkdir(parents=True, exist_ok=True)
        folder = Path(tempfile.mkdtemp(prefix="lookalike-shards-", dir=self.storage))
        self.storage_ = folder
        weakref.finalize(self, shutil.rmtree, folder, ignore_errors=True)
        return folder

    def _write_dask(self, X, client):
        """Each row block of the dask array written to its shard file by a worker."""
        if X.ndim != 2:
            raise InvalidParameter(f"Expected 2D array for X, got {X.ndim}D array of shape {X.shape} instead.")
        X = X.rechunk({0: self.shard_rows or X.chunks[0], 1: -1})
        folder = self._folder()
        blocks = X.to_delayed().ravel()
        import dask

        paths = [str(folder / f"shard-{i:06d}.npy") for i in range(len(blocks))]
        written = client.compute([dask.delayed(_shards.write_block, pure=True)(b, p)
                                  for b, p in zip(blocks, paths)], sync=True)
        shards, offset = [], 0
        for path, (rows, d, _) in zip(paths, written):
            shards.append(_shards.Shard(path, 0, rows, offset))
            offset += rows
        if not offset:
            raise InvalidParameter(f"Found array with 0 sample(s) (shape={X.shape}) while a minimum of 1 is "
                                   f"required by {type(self).__name__}.")
        return shards, written[0][1], np.result_type(*(w[2] for w in written))

    # -- queries ---------------------------------------------------------------------------
    def kneighbors(self, X=None, n_neighbors: int | None = None, return_distance: bool = True):
        """The k nearest base rows of each query, as dask arrays.

        Parameters
        ----------
        X : dask array or ndarray of shape (n_queries, n_features), or None for every base
            row against the others (a row is not its own neighbour).
        n_neighbors : int, default: the `n_neighbors` given at construction; at most the
            number of base rows (less one with X=None), whatever the size of each shard.

        Returns
        -------
        distances : dask array of shape (n_queries, k), float32, in the metric's order;
            only when `return_distance`.
        indices : dask array of shape (n_queries, k), int64, global row indices; equal
            distances go to the lower index. Compute both at once (`dask.compute(D, I)`):
            they come from the same tasks.
        """
        if not hasattr(self, "shards_"):
            from ..knn.estimator import NotFittedError

            raise NotFittedError(f"This {type(self).__name__} instance is not fitted yet. Call 'fit' first.")
        self._check_params()
        k = check_k(self.n_neighbors if n_neighbors is None else n_neighbors, self.n_samples_fit_, X is None)
        import dask
        import dask.array as da

        metric = self.effective_metric_
        options = {"device": self.device, "working_memory": self.working_memory, "precision": self.precision}
        search = dask.delayed(search_shard, pure=True)
        merge = dask.delayed(merge_results, pure=True)
        if X is None:
            blocks = [(len(q), [search(q, s, k, metric, q == s, **options) for s in self.shards_])
                      for q in self.shards_]
        else:
            Xq = self._queries(X)
            sizes = Xq.chunks[0]
            blocks = [(n, [search(b, s, k, metric, False, **options) for s in self.shards_])
                      for n, b in zip(sizes, Xq.to_delayed().ravel())]
        D, I = [], []
        for n, parts in blocks:
            merged = merge(parts, k, metric)
            D.append(da.from_delayed(dask.delayed(operator.getitem)(merged, 0), (n, k), np.float32))
            I.append(da.from_delayed(dask.delayed(operator.getitem)(merged, 1), (n, k), np.int64))
        D, I = da.concatenate(D), da.concatenate(I)
        return (D, I) if return_distance else I

    def _queries(self, X):
        """X as a dask array of row blocks with every column in one chunk, checked against the base."""
        import dask.array as da

        if _is_dask_array(X):
            if X.ndim != 2:
                raise InvalidParameter(f"Expected 2D array for X, got {X.ndim}D array of shape {X.shape} instead.")
            if X.dtype.kind not in "fiub":
                raise InvalidParameter(f"X has dtype {X.dtype}; expected numbers (float16, float32 or float64).")
            Xq = X.rechunk({1: -1})
        else:
            Xq = check_array(X, name="X", estimator=type(self).__name__)
        if Xq.shape[1] != self.n_features_in_:
            raise InvalidParameter(f"X has {Xq.shape[1]} features, but {type(self).__name__} is expecting "
                                   f"{self.n_features_in_} features as input.")
        return Xq if _is_dask_array(Xq) else da.from_array(Xq, chunks=(self.batch_size, -1))


def search_shard(queries, shard: _shards.Shard, k: int, metric: str, itself: bool, *, device: str = "auto",
                 working_memory: float | None = None, precision: str = "auto") -> tuple[np.ndarray, np.ndarray]:
    """A task: the k best rows of `shard` for each query (all its rows when it has fewer),
    by lookalike's engine on the worker's `device`, as exact float64 distances and global
    indices. `queries` is an array, or a shard read from storage (X=None); `itself`: the
    queries are this very shard, and no row is its own neighbour."""
    from ..knn.engine import knn
    from ..knn.refine import pair_distances

    base = prepared(shard, metric, device, precision, working_memory)
    xb = base.xb
    xq = xb if itself else (queries.read() if isinstance(queries, _shards.Shard) else check_array(queries))
    if xq.shape[1] != xb.shape[1]:
        raise InvalidParameter(f"queries of {xq.shape[1]} dimensions for the shard {shard.path} of {xb.shape[1]}")
    kk = min(k, len(xb) - 1 if itself else len(xb))
    if kk < 1:
        return np.empty((len(xq), 0)), np.empty((len(xq), 0), dtype=np.int64)
    _, I = knn(xq, base, kk, exclude_self=itself)
    rows = np.repeat(np.arange(len(xq)), kk)
    D64 = pair_distances(base.metric, xq, xb, rows, I.ravel()).reshape(I.shape)
    return D64, I + shard.offset


# In each worker: shards read and prepared for the engine's screen, kept for the next query
# block (least recently used first out), within a share of the worker's memory limit: the
# Dask config key `lookalike.prepared-share` (set on the workers, e.g. the environment
# variable DASK_LOOKALIKE__PREPARED_SHARE=0.8 for workers that do nothing else), else 0.25.
_PREPARED: OrderedDict[tuple, Any] = OrderedDict()
_PREPARED_LOCK = threading.Lock()
PREPARED_SHARE = 0.25


def prepared(shard: _shards.Shard, metric: str, device: str, precision: str, working_memory: float | None):
    """The shard read from storage and prepared on this worker's device (a `PreparedBase`),
    from this worker's cache when the file has not changed since (same size, time, inode)."""
    from ..hardware import resolve_device
    from ..knn.precision import screen_dtype
    from ..knn.screen import PreparedBase

    stat = os.stat(shard.path)
    dev = resolve_device(device)
    key = (shard, stat.st_size, stat.st_mtime_ns, stat.st_ino, metric, str(dev), precision, working_memory)
    with _PREPARED_LOCK:
        if key in _PREPARED:
            _PREPARED.move_to_end(key)
            return _PREPARED[key]
    xb = shard.read()
    m = get_metric(metric)
    base = PreparedBase(xb, m, device=dev, working_memory=working_memory, materialise=True,
                        screen_dtype=screen_dtype(precision, dev, m, xb.shape[1], len(xb)))
    budget = _cache_budget()
    with _PREPARED_LOCK:
        _PREPARED[key] = base
        _PREPARED.move_to_end(key)
        while _PREPARED and sum(_bytes(b) for b in _PREPARED.values()) > budget:
            _PREPARED.popitem(last=False)
    return base


def _bytes(base) -> int:
    """About what a prepared shard holds: its rows and their screen copy."""
    return 2 * int(base.xb.nbytes)


def _cache_budget() -> float:
    try:
        import dask
        from distributed import get_worker

        limit = get_worker().memory_manager.memory_limit
        share = float(dask.config.get("lookalike.prepared-share", PREPARED_SHARE))
    except (ImportError, ValueError, AttributeError, TypeError):
        return 0.0  # not in a worker, or a share that is not a number: keep nothing
    return share * limit if limit else 0.0


def _is_dask_array(X) -> bool:
    return type(X).__module__.startswith("dask.") and hasattr(X, "chunks")


def _workers(client) -> int:
    from .cluster import workers

    return workers(client)
