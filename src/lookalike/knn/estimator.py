"""`NearestNeighbors`: scikit-learn's estimator contract (which cuML mirrors) over the engine."""

from __future__ import annotations

import numbers
from typing import Any

import numpy as np
import scipy.sparse as sp

from .backends import BACKENDS, Backend, select
from .metrics import ALIASES, METRICS, get_metric
from .validation import check_array, check_k


def _is_int(v) -> bool:
    return isinstance(v, numbers.Integral) and not isinstance(v, bool)


# One table of parameter constraints: (test, what the value must be).
_CONSTRAINTS: dict[str, tuple[Any, str]] = {
    "n_neighbors": (lambda v: _is_int(v) and v >= 1, "an int >= 1"),
    "metric": (lambda v: isinstance(v, str) and (v.lower() in METRICS or v.lower() in ALIASES),
               f"one of {sorted(set(METRICS) | set(ALIASES))}"),
    "backend": (lambda v: v == "auto" or v in BACKENDS, f"one of {['auto', *BACKENDS]}"),
    "working_memory": (lambda v: v is None or (isinstance(v, numbers.Real) and not isinstance(v, bool) and v > 0),
                       "None or a number of MiB > 0"),
    "device": (lambda v: isinstance(v, str) and (v in ("auto", "cpu") or v.startswith("cuda")),
               "'auto', 'cpu' or 'cuda[:N]'"),
    "precision": (lambda v: v in ("auto", "fp32", "bf16", "int8"), "one of ['auto', 'fp32', 'bf16', 'int8']"),
}


class NearestNeighbors:
    """Exact k-nearest-neighbour search by brute force.

    Parameters
    ----------
    n_neighbors : int, default=5
        Neighbours returned by `kneighbors` when not given there.
    metric : str, default='euclidean'
        'euclidean' (true distances, not squared), 'sqeuclidean', 'cosine',
        'inner_product' (largest first), 'manhattan' ('l1', 'cityblock') or 'chebyshev'.
    backend : str, default='auto'
        'lookalike' (the exact engine), 'sklearn', 'faiss', 'torch', 'cuml', 'cuvs', or
        'auto' for the best one usable here.
    working_memory : float, default=None
        MiB for blocks of scores and base rows (None: 1024). The full n_queries x n_samples
        matrix is never built.
    device : str, default='auto'
        'cpu', 'cuda[:N]', or 'auto' (CUDA when present).
    precision : str, default='auto'
        Screen precision of the lookalike engine: 'fp32', 'bf16', 'int8', or 'auto' (bf16 on
        CUDA and AMX/AVX-512-BF16 CPUs, int8 on VNNI CPUs for 50,000 or more samples of 512 or
        more features, else fp32). Results are exact whatever it is: a lower precision widens the error bound,
        an fp32 refinement and the float64 rerank decide.

    Attributes
    ----------
    backend_ : str, the backend chosen by `fit`.
    n_samples_fit_ : int
    n_features_in_ : int
    """

    def __init__(self, n_neighbors: int = 5, *, metric: str = "euclidean", backend: str = "auto",
                 working_memory: float | None = None, device: str = "auto", precision: str = "auto"):
        self.n_neighbors = n_neighbors
        self.metric = metric
        self.backend = backend
        self.working_memory = working_memory
        self.device = device
        self.precision = precision

    # -- scikit-learn's parameter protocol -------------------------------------------------
    def get_params(self, deep: bool = True) -> dict[str, Any]:
        return {name: getattr(self, name) for name in _CONSTRAINTS}

    def set_params(self, **params) -> NearestNeighbors:
        for name, value in params.items():
            if name not in _CONSTRAINTS:
                raise ValueError(f"Invalid parameter {name!r} for estimator {self!r}. "
                                 f"Valid parameters are: {sorted(_CONSTRAINTS)}.")
            setattr(self, name, value)
        return self

    def __repr__(self) -> str:
        defaults = NearestNeighbors().get_params()
        changed = ", ".join(f"{k}={v!r}" for k, v in self.get_params().items() if v != defaults[k])
        return f"NearestNeighbors({changed})"

    def _validate_params(self) -> None:
        for name, (test, need) in _CONSTRAINTS.items():
            value = getattr(self, name)
            if not test(value):
                raise ValueError(f"The {name!r} parameter of NearestNeighbors must be {need}. Got {value!r} instead.")

    # -- fitting ---------------------------------------------------------------------------
    def fit(self, X, y=None) -> NearestNeighbors:
        """Keep the base `X` (n_samples, n_features) and prepare the backend. Returns self."""
        self._validate_params()
        X = check_array(X, name="X")
        self._metric = get_metric(self.metric)
        self._backend = self._make_backend()
        self.backend_ = self._backend.name
        self._fit_X = X
        self.n_samples_fit_, self.n_features_in_ = X.shape
        self._state = self._backend.fit(X, self._metric, self._device(), self.working_memory)
        return self

    def _device(self):
        from ..hardware import resolve_device

        return resolve_device(self.device)

    def _make_backend(self) -> Backend:
        backend = select(self.backend, get_metric(self.metric), self.device)
        if backend.name == "lookalike":
            backend.precision = self.precision  # type: ignore[attr-defined]
        return backend

    def _check_fitted(self) -> None:
        if not hasattr(self, "_fit_X"):
            raise RuntimeError("This NearestNeighbors instance is not fitted yet. Call 'fit' with "
                               "appropriate arguments before using this estimator.")  # sklearn's NotFittedError text
        if getattr(self, "_state", None) is None:  # after unpickling
            self._backend = self._make_backend()
            self._state = self._backend.fit(self._fit_X, self._metric, self._device(), self.working_memory)

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state.pop("_state", None)  # backend indexes (FAISS, GPU memory) are rebuilt on first use
        state.pop("_backend", None)
        return state

    # -- queries ---------------------------------------------------------------------------
    def _query_array(self, X) -> np.ndarray:
        """The fitted base for X=None, else X checked against it."""
        self._check_fitted()
        if X is None:
            return self._fit_X
        Xq = check_array(X, name="X")
        if Xq.shape[1] != self.n_features_in_:
            raise ValueError(f"X has {Xq.shape[1]} features, but NearestNeighbors is expecting "
                             f"{self.n_features_in_} features as input.")
        return Xq

    def _queries(self, X, n_neighbors) -> tuple[np.ndarray, int, bool]:
        Xq = self._query_array(X)
        k = check_k(self.n_neighbors if n_neighbors is None else n_neighbors, self.n_samples_fit_, X is None)
        return Xq, k, X is None

    def kneighbors(self, X=None, n_neighbors: int | None = None, return_distance: bool = True):
        """The k nearest fitted points of each query.

        Parameters
        ----------
        X : array-like of shape (n_queries, n_features), or None for every fitted point
            against the others (a point is not its own neighbour).
        n_neighbors : int, default: the `n_neighbors` given at construction.

        Returns
        -------
        distances : ndarray of shape (n_queries, k), float32, increasing (inner products:
            decreasing). Only when `return_distance`.
        indices : ndarray of shape (n_queries, k), int64; ties go to the lower index.
        """
        Xq, k, exclude_self = self._queries(X, n_neighbors)
        D, I = self._backend.kneighbors(self._state, Xq, k, exclude_self)
        return (D, I) if return_distance else I

    def kneighbors_graph(self, X=None, n_neighbors: int | None = None, mode: str = "connectivity") -> sp.csr_matrix:
        """Sparse graph (n_queries, n_samples_fit) of each query's k neighbours: ones, or distances."""
        if mode not in ("connectivity", "distance"):
            raise ValueError(f"Unsupported mode, must be one of 'connectivity', or 'distance' but got {mode!r} instead")
        D, I = self.kneighbors(X, n_neighbors)
        nq, k = I.shape
        data = np.ones(nq * k, dtype=np.float32) if mode == "connectivity" else D.ravel()
        return sp.csr_matrix((data, I.ravel(), np.arange(0, nq * k + 1, k)), shape=(nq, self.n_samples_fit_))

    def radius_neighbors(self, X=None, radius: float | None = None, return_distance: bool = True,
                         sort_results: bool = False):
        """Every fitted point within `radius` of each query (inner products: at least `radius`).

        Returns object arrays of shape (n_queries,), each item an array, as scikit-learn does.
        Distances are exact (float64 rerank of the boundary). Memory grows with the number of
        points returned.
        """
        if isinstance(radius, bool) or not isinstance(radius, numbers.Real) or not np.isfinite(radius):
            raise ValueError(f"radius must be a finite number, got {radius!r}")
        Xq = self._query_array(X)
        from .radius import radius_search

        dists, inds = radius_search(Xq, self._fit_X, float(radius), self._metric, exclude_self=X is None,
                                    sort_results=sort_results, working_memory=self.working_memory)
        return (dists, inds) if return_distance else inds
