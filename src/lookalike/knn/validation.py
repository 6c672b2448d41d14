"""Input checks in scikit-learn's style: the message names the offending value."""

from __future__ import annotations

import numbers

import numpy as np


def check_array(X, *, name: str = "X", allow_memmap: bool = True) -> np.ndarray:
    """A 2-D float array with no NaN or inf. float16/32/64 are kept; ints become float32."""
    if X is None:
        raise ValueError(f"Expected 2D array for {name}, got None instead.")
    if not isinstance(X, np.ndarray):
        try:
            X = np.asarray(X)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"{name} cannot be converted to an array: {exc}") from None
    if X.dtype.kind == "c":
        raise ValueError(f"Complex data not supported in {name} (dtype {X.dtype}).")
    if X.dtype.kind not in "fiub":
        raise ValueError(f"{name} has dtype {X.dtype}; expected numbers (float16, float32 or float64).")
    if X.ndim != 2:
        raise ValueError(
            f"Expected 2D array for {name}, got {X.ndim}D array of shape {X.shape} instead. "
            "Reshape your data with X.reshape(-1, 1) for a single feature or X.reshape(1, -1) for one sample."
        )
    if X.shape[0] == 0:
        raise ValueError(f"Found array with 0 sample(s) (shape={X.shape}) in {name}; a minimum of 1 is required.")
    if X.shape[1] == 0:
        raise ValueError(f"Found array with 0 feature(s) (shape={X.shape}) in {name}; a minimum of 1 is required.")
    if X.dtype.kind != "f":
        X = X.astype(np.float32)
    elif not (allow_memmap and isinstance(X, np.memmap)) and not X.flags.c_contiguous:
        X = np.ascontiguousarray(X)
    _check_finite(X, name)
    return X


def _check_finite(X: np.ndarray, name: str, block: int = 65536) -> None:
    for lo in range(0, len(X), block):
        part = X[lo : lo + block]
        if not np.isfinite(part).all():
            bad = lo + int(np.flatnonzero(~np.isfinite(part).all(axis=1))[0])
            what = "NaN" if np.isnan(X[bad]).any() else "infinity"
            raise ValueError(f"Input {name} contains {what} (first at row {bad}).")


def check_k(k, n_samples: int, exclude_self: bool) -> int:
    if isinstance(k, bool) or not isinstance(k, numbers.Integral):
        raise TypeError(f"n_neighbors does not take {type(k).__name__} value, enter integer value")
    if k < 1:
        raise ValueError(f"Expected n_neighbors > 0. Got {k}")
    limit = n_samples - 1 if exclude_self else n_samples
    if k > limit:
        raise ValueError(
            f"Expected n_neighbors <= n_samples_fit"
            f"{' - 1 (X=None excludes each point itself)' if exclude_self else ''}, "
            f"but n_neighbors = {k}, n_samples_fit = {n_samples}"
        )
    return int(k)
