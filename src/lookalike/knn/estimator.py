"""`NearestNeighbors`: scikit-learn's estimator contract (which cuML mirrors) over the backends."""

from __future__ import annotations

import numbers
from typing import Any

import numpy as np
import scipy.sparse as sp
from sklearn.base import BaseEstimator
from sklearn.exceptions import NotFittedError as _SklearnNotFittedError
from sklearn.utils.validation import check_is_fitted

from ..errors import InvalidParameter
from .backends import BACKENDS, Backend, select
from .blocks import SearchStats
from .metrics import NAMES, get_metric
from .precision import SCREEN_PRECISIONS
from .validation import check_array, check_k, check_radius, check_result_size


class NotFittedError(_SklearnNotFittedError, RuntimeError):
    """scikit-learn's NotFittedError (a ValueError and an AttributeError); a RuntimeError too,
    which lookalike raised before it was an estimator of scikit-learn's kind."""


def _is_real(v) -> bool:
    return isinstance(v, numbers.Real) and not isinstance(v, bool)


# The one table of parameter constraints, in the order of `__init__`: (test, what the value must be).
_CONSTRAINTS: dict[str, tuple[Any, str]] = {
    "n_neighbors": (lambda v: isinstance(v, numbers.Integral) and not isinstance(v, bool) and v >= 1,
                    "an int >= 1"),
    "metric": (lambda v: isinstance(v, str) and v.lower() in NAMES, f"one of {NAMES}"),
    "backend": (lambda v: isinstance(v, str) and (v == "auto" or v in BACKENDS), f"one of {['auto', *BACKENDS]}"),
    "working_memory": (lambda v: v is None or (_is_real(v) and 1 <= v < float("inf")),
                       "None or a finite number of MiB >= 1 (smaller blocks only run slower)"),
    "device": (lambda v: isinstance(v, str) and (v in ("auto", "cpu") or v.startswith("cuda")),
               "'auto', 'cpu' or 'cuda[:N]'"),
    "precision": (lambda v: isinstance(v, str) and v in SCREEN_PRECISIONS, f"one of {list(SCREEN_PRECISIONS)}"),
}


class NearestNeighbors(BaseEstimator):
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
        MiB for blocks of scores and base rows, at least 1 (None: 1024). The full
        n_queries x n_samples matrix is never built.
    device : str, default='auto'
        'cpu', 'cuda[:N]', or 'auto' (CUDA when present; the CPU for backends that run only
        there, scikit-learn and faiss-cpu).
    precision : str, default='auto'
        Screen precision of the lookalike engine: 'fp32', 'bf16', 'fp16' (float32 output of
        an fp16 GEMM: a GPU's; on the CPU no faster than fp32), 'int8', 'int16' (rows in two
        int8 levels: windows about as narrow as fp32's, on the int8 units), or 'auto' (the
        fastest of them measured on this device for this metric and dimension class, once per
        machine and cached: see `lookalike.knn.calibrate`; `screen_choice_` says why). With
        'auto', each search takes the screen predicted fastest for its own number of queries
        among those whose rows are no larger than the fitted one's (`search_stats_` says which
        and why).
        Results are exact whatever it is: a lower precision widens the error bound, an fp32
        refinement and the float64 rerank decide. Other backends compute in float32 and
        ignore it.

    Attributes
    ----------
    n_samples_fit_ : int
        Rows of the fitted base.
    n_features_in_ : int
        Features seen by `fit`.
    feature_names_in_ : ndarray of shape (n_features_in_,), dtype object
        Column names of X, when X had string column names (a DataFrame).
    effective_metric_ : str
        The metric's canonical name ('l2' -> 'euclidean').
    effective_metric_params_ : dict
        Always empty (no metric takes parameters), as in scikit-learn.
    backend_ : str
        The backend `fit` chose ('lookalike', 'faiss', ...).
    backend_config_ : str
        How that backend runs, in words (screen precision, library settings).
    screen_dtype_ : str or None
        The lookalike engine's screen precision as fitted, for the calibration's
        `PLAN_QUERIES` (64) queries ('float32', 'bfloat16', 'float16', 'int8', 'int16'); None for other
        backends.
    screen_choice_ : str or None
        Why the engine screens in that precision, in words (with `precision='auto'`: the
        calibration's predicted times); None for other backends.
    prepared_base_ : PreparedBase or None
        The base made ready for the engine's screen (lookalike backend), which every search
        reuses; None for other backends.
    radius_backend_ : str
        The backend `radius_neighbors` runs on: the fitted one where it has a radius search
        (lookalike, sklearn), else 'lookalike' (the exact engine on an fp32 base prepared on
        its first call).
    search_stats_ : SearchStats or None
        What the last `kneighbors` did, stage by stage (lookalike backend); None before any
        search, after a radius search and for other backends.
    """

    def __init__(self, n_neighbors: int = 5, *, metric: str = "euclidean", backend: str = "auto",
                 working_memory: float | None = None, device: str = "auto", precision: str = "auto"):
        self.n_neighbors = n_neighbors
        self.metric = metric
        self.backend = backend
        self.working_memory = working_memory
        self.device = device
        self.precision = precision

    # -- scikit-learn's protocols ----------------------------------------------------------
    def set_params(self, **params) -> NearestNeighbors:
        try:
            return super().set_params(**params)
        except ValueError as exc:  # an unknown name: a user's mistake, told on one line
            raise InvalidParameter(str(exc)) from None

    def __repr__(self, N_CHAR_MAX: int = 700) -> str:
        """The parameters that differ from their defaults, in the order of `__init__`."""
        defaults = type(self)().get_params()
        changed = ", ".join(f"{k}={getattr(self, k)!r}" for k in _CONSTRAINTS if getattr(self, k) != defaults[k])
        return f"{type(self).__name__}({changed})"

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.sparse = True  # made dense (see `check_array`)
        return tags

    def __getstate__(self) -> dict:
        state = dict(super().__getstate__())
        state.pop("_backend", None)  # backend indexes (FAISS, GPU memory) are rebuilt on loading
        state.pop("prepared_base_", None)
        return state

    def __setstate__(self, state: dict) -> None:
        super().__setstate__(state)
        if "_fit_X" in state:
            self._take(self._build_backend().fit(self._fit_X))

    def _check_params(self) -> None:
        for name, (test, need) in _CONSTRAINTS.items():
            value = getattr(self, name)
            if not test(value):
                raise InvalidParameter(f"The {name!r} parameter of {type(self).__name__} must be {need}. "
                                       f"Got {value!r} instead.")

    def _check_fitted(self) -> None:
        try:
            check_is_fitted(self, "n_samples_fit_")
        except _SklearnNotFittedError as exc:
            raise NotFittedError(str(exc)) from None

    # -- fitting ---------------------------------------------------------------------------
    def fit(self, X, y=None) -> NearestNeighbors:
        """Keep the base `X` (array-like or SciPy sparse, of shape (n_samples, n_features))
        and prepare the backend. `y` is ignored. Returns self."""
        self._check_params()
        names = _feature_names(X)
        X = check_array(X, name="X", estimator=type(self).__name__)
        self._take(self._build_backend().fit(X))
        self._fit_X = X
        self.n_samples_fit_, self.n_features_in_ = X.shape
        if names is not None:
            self.feature_names_in_ = names
        elif hasattr(self, "feature_names_in_"):
            del self.feature_names_in_
        self.effective_metric_ = get_metric(self.metric).name
        self.effective_metric_params_: dict = {}
        self.search_stats_: SearchStats | None = None
        return self

    def _build_backend(self) -> Backend:
        return select(self.backend, self.metric, self.device, working_memory=self.working_memory,
                      precision=self.precision)

    def _take(self, backend: Backend) -> None:
        """Keep a fitted backend, and what it says of itself as public attributes."""
        self._backend = backend
        self.backend_ = backend.name
        self.backend_config_ = backend.config
        dtype = backend.screen_dtype_
        self.screen_dtype_ = None if dtype is None else str(dtype).removeprefix("torch.")
        self.screen_choice_ = backend.screen_choice_
        self.prepared_base_ = backend.prepared_base_
        self.radius_backend_ = backend.radius_backend

    # -- queries ---------------------------------------------------------------------------
    def _query_array(self, X) -> np.ndarray:
        """The fitted base for X=None, else X checked against it."""
        self._check_fitted()
        if X is None:
            return self._fit_X
        names, fitted = _feature_names(X), getattr(self, "feature_names_in_", None)
        if names is not None and fitted is not None and not np.array_equal(names, fitted):
            raise InvalidParameter("The feature names should match those that were passed during fit.")
        Xq = check_array(X, name="X", estimator=type(self).__name__)
        if Xq.shape[1] != self.n_features_in_:
            raise InvalidParameter(f"X has {Xq.shape[1]} features, but {type(self).__name__} is expecting "
                                   f"{self.n_features_in_} features as input.")
        return Xq

    def kneighbors(self, X=None, n_neighbors: int | None = None, return_distance: bool = True):
        """The k nearest fitted points of each query.

        Parameters
        ----------
        X : array-like or sparse of shape (n_queries, n_features), or None for every fitted
            point against the others (a point is not its own neighbour).
        n_neighbors : int, default: the `n_neighbors` given at construction.

        Returns
        -------
        distances : ndarray of shape (n_queries, k), float32, increasing (inner products:
            decreasing). Only when `return_distance`.
        indices : ndarray of shape (n_queries, k), int64; ties go to the lower index.
        """
        Xq = self._query_array(X)
        k = check_k(self.n_neighbors if n_neighbors is None else n_neighbors, self.n_samples_fit_, X is None)
        check_result_size(len(Xq), k)
        stats = SearchStats() if self._backend.records_stats else None
        D, I = self._backend.kneighbors(Xq, k, X is None, stats)
        self.search_stats_ = stats
        return (D, I) if return_distance else I

    def kneighbors_graph(self, X=None, n_neighbors: int | None = None, mode: str = "connectivity") -> sp.csr_matrix:
        """Sparse graph (n_queries, n_samples_fit) of each query's k neighbours: ones, or distances."""
        if mode not in ("connectivity", "distance"):
            raise InvalidParameter(
                f"Unsupported mode, must be one of 'connectivity', or 'distance' but got {mode!r} instead")
        D, I = self.kneighbors(X, n_neighbors)
        nq, k = I.shape
        data = np.ones(nq * k, dtype=np.float32) if mode == "connectivity" else D.ravel()
        return sp.csr_matrix((data, I.ravel(), np.arange(0, nq * k + 1, k)), shape=(nq, self.n_samples_fit_))

    def radius_neighbors(self, X=None, radius: float | None = None, return_distance: bool = True,
                         sort_results: bool = False):
        """Every fitted point within `radius` of each query (inner products: at least `radius`).

        Runs on `radius_backend_`. Returns object arrays of shape (n_queries,), each item an
        array, as scikit-learn does; indices by base index, or by (distance, index) with
        `sort_results`. On lookalike's engine distances are exact (float64 rerank of the
        boundary). Memory grows with the number of points returned.
        """
        radius = check_radius(radius)
        Xq = self._query_array(X)
        dists, inds = self._backend.radius_neighbors(Xq, radius, X is None, sort_results)
        self.search_stats_ = None
        return (dists, inds) if return_distance else inds


def _feature_names(X) -> np.ndarray | None:
    """Column names of a DataFrame-like X when they are all strings (scikit-learn's rule)."""
    columns = getattr(X, "columns", None)
    if columns is None:
        return None
    names = np.asarray(list(columns), dtype=object)
    return names if len(names) and all(isinstance(n, str) for n in names) else None
