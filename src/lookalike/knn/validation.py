"""Input checks in scikit-learn's style: the message names the offending value, in scikit-learn's
words where its estimator checks match on them. Every error is an `InvalidParameter` (a
ValueError and a TypeError), which the CLI prints as one line."""

from __future__ import annotations

import numbers

import numpy as np
import scipy.sparse as sp

from ..errors import InvalidParameter
from ..hardware import free_memory
from .blocks import MAX_VALUE


def check_array(X, *, name: str = "X", estimator: str = "NearestNeighbors", allow_memmap: bool = True) -> np.ndarray:
    """A 2-D float array with no NaN or inf and no value beyond float32's range (+-3.4e38).
    float16/32/64 are kept (in native byte order); ints and bools become float32 when float32
    holds them exactly (|x| <= 2**24), else float64; longer floats and numbers held as objects
    float64. SciPy sparse input is made dense (the search is brute force over dense rows), if
    the dense copy fits in half the memory free."""
    if X is None:
        raise InvalidParameter(f"Expected 2D array for {name}, got None instead.")
    if sp.issparse(X):
        X = _densify(X, name)
    elif isinstance(X, np.ma.MaskedArray):
        raise InvalidParameter(f"{name} is a masked array; fill or drop its masked values first")
    elif type(X) is not np.ndarray and not (allow_memmap and isinstance(X, np.memmap)):
        try:
            X = np.asarray(X)
        except (TypeError, ValueError, OverflowError) as exc:
            raise InvalidParameter(f"{name} cannot be converted to an array: {exc}") from None
    X = _as_float(X, name)
    if X.ndim != 2:
        raise InvalidParameter(
            f"Expected 2D array for {name}, got {X.ndim}D array of shape {X.shape} instead. "
            "Reshape your data with X.reshape(-1, 1) for a single feature or X.reshape(1, -1) for one sample."
        )
    for axis, what in ((0, "sample"), (1, "feature")):
        if X.shape[axis] == 0:
            raise InvalidParameter(f"Found array with 0 {what}(s) (shape={X.shape}) while a minimum of 1 is "
                                   f"required by {estimator}.")
    if not (allow_memmap and isinstance(X, np.memmap)) and not X.flags.c_contiguous:
        X = np.ascontiguousarray(X)
    check_values(X, name)
    return X


def _as_float(X: np.ndarray, name: str) -> np.ndarray:
    """X as float16, float32 or float64 in native byte order, exactly where that type holds it."""
    kind, size = X.dtype.kind, X.dtype.itemsize
    if kind == "c":
        raise InvalidParameter(f"Complex data not supported in {name} (dtype {X.dtype}).")
    if kind == "O":
        try:
            return X.astype(np.float64)
        except (TypeError, ValueError, OverflowError) as exc:
            raise InvalidParameter(f"{name} has dtype object and cannot be converted to numbers: {exc}") from None
    if kind not in "fiub":
        raise InvalidParameter(f"{name} has dtype {X.dtype}; expected numbers (float16, float32 or float64).")
    if kind in "iu":  # float32 holds every integer up to 2**24 exactly; float64 the rest as NumPy casts it
        exact32 = X.size == 0 or (int(X.min()) >= -(2**24) and int(X.max()) <= 2**24)
        return X.astype(np.float32 if exact32 else np.float64)
    if kind == "b":
        return X.astype(np.float32)
    if size > 8:  # long double: first refuse what float64 could not hold
        if X.size:
            _check_magnitude(np.abs(X).max(), name)
        return X.astype(np.float64)
    if not X.dtype.isnative:
        return X.astype(X.dtype.newbyteorder("="))
    return X


def _densify(X, name: str) -> np.ndarray:
    """A sparse matrix or array as a dense ndarray of its own dtype, refused (before any
    allocation) when it would take more than half the memory free."""
    need = X.shape[0] * X.shape[1] * X.dtype.itemsize
    free = free_memory()
    if free is not None and need > free / 2:
        raise InvalidParameter(
            f"sparse {name} of shape {X.shape} would take {need / 2**30:.1f} GiB dense, more than half of the "
            f"{free / 2**30:.1f} GiB of memory free; lookalike searches dense rows: reduce the dimension first")
    return X.toarray()


def check_values(X: np.ndarray, name: str, block_bytes: int = 1 << 24) -> None:
    """No NaN, no infinity, nothing beyond float32's range (lookalike screens and returns
    distances in float32; see `lookalike.knn.screen`). Read in blocks of `block_bytes`."""
    block = max(1, block_bytes // max(1, X.shape[1] * X.itemsize))
    for lo in range(0, len(X), block):
        part = np.abs(X[lo : lo + block])
        if not np.isfinite(part).all():
            bad = lo + int(np.flatnonzero(~np.isfinite(part).all(axis=1))[0])
            what = "NaN" if np.isnan(X[bad]).any() else "infinity"
            raise InvalidParameter(f"Input {name} contains {what} (first at row {bad}).")
        if part.size and float(part.max()) > MAX_VALUE:
            bad = lo + int(np.flatnonzero((part > MAX_VALUE).any(axis=1))[0])
            _check_magnitude(part.max(), f"{name} (first at row {bad})")


def _check_magnitude(amax, name: str) -> None:
    if not amax <= MAX_VALUE:
        raise InvalidParameter(
            f"Input {name} holds values up to {np.format_float_scientific(amax, precision=2, trim='-')} in "
            "magnitude; lookalike searches values within "
            f"+-{MAX_VALUE:.3g} (float32's range): scale the data down first")


def check_k(k, n_samples: int, exclude_self: bool) -> int:
    """`n_neighbors` of a query: an int in [1, n_samples] ([1, n_samples - 1] with X=None)."""
    if isinstance(k, bool) or not isinstance(k, numbers.Integral):
        raise InvalidParameter(f"n_neighbors does not take {type(k).__name__} value, enter integer value")
    if k < 1:
        raise InvalidParameter(f"Expected n_neighbors > 0. Got {k}")
    limit = n_samples - 1 if exclude_self else n_samples
    if k > limit:
        raise InvalidParameter(
            f"Expected n_neighbors <= n_samples_fit"
            f"{' - 1 (X=None excludes each point itself)' if exclude_self else ''}, "
            f"but n_neighbors = {k}, n_samples_fit = {n_samples}"
        )
    return int(k)


def check_result_size(nq: int, k: int) -> None:
    """Refuse, before any work, a result of nq x k neighbours (float32 distances, int64
    indices, and the sort that picks them: about 40 bytes each) larger than half the memory free."""
    need = nq * k * 40
    free = free_memory()
    if free is not None and need > free / 2:
        raise InvalidParameter(
            f"{nq} queries x {k} neighbours would take about {need / 2**30:.1f} GiB, more than half of the "
            f"{free / 2**30:.1f} GiB of memory free: ask for fewer neighbours or search fewer queries at a time")


def check_radius(radius) -> float:
    """A finite real radius."""
    if isinstance(radius, bool) or not isinstance(radius, numbers.Real) or not np.isfinite(radius):
        raise InvalidParameter(f"radius must be a finite number, got {radius!r}")
    return float(radius)
