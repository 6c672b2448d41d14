"""Metric definitions and their reduction to the exact-search core.

Every metric is searched the same way: a cheap *screen* score that ranks like the metric,
with a bound on its rounding error, then an exact float64 *rerank* of the candidates.

- euclidean, sqeuclidean: screen |y-m|^2 - 2 (x-m).(y-m) on data centred by the base mean m
  (a GEMM); rerank sum((x - y)^2).
- cosine: screen -x^.y^ on unit rows (a GEMM); rerank 1 - x.y / (|x||y|). A zero row has
  distance 1 to everything, as in scikit-learn.
- inner_product: screen -x.y (a GEMM); results are the inner products, largest first.
- manhattan (l1, cityblock), chebyshev: screen and rerank with float64 cdist.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..errors import LookalikeError

ALIASES = {"l2": "euclidean", "l1": "manhattan", "cityblock": "manhattan", "ip": "inner_product",
           "dot": "inner_product", "linf": "chebyshev"}


@dataclass(frozen=True)
class Metric:
    name: str
    gemm: bool            # screened with a matrix product
    centred: bool         # translation invariant: screen on data centred by the base mean
    normalised: bool      # rows scaled to unit length before the screen
    largest_first: bool   # results sorted by decreasing value (inner products)


METRICS = {
    "euclidean": Metric("euclidean", True, True, False, False),
    "sqeuclidean": Metric("sqeuclidean", True, True, False, False),
    "cosine": Metric("cosine", True, False, True, False),
    "inner_product": Metric("inner_product", True, False, False, True),
    "manhattan": Metric("manhattan", False, False, False, False),
    "chebyshev": Metric("chebyshev", False, False, False, False),
}


def get_metric(name: str) -> Metric:
    key = ALIASES.get(str(name).lower(), str(name).lower())
    if key not in METRICS:
        names = sorted(set(METRICS) | set(ALIASES))
        raise LookalikeError(f"unknown metric {name!r}; choose one of {', '.join(names)}")
    return METRICS[key]


def exact_distances(metric: Metric, a: np.ndarray | torch.Tensor, b: np.ndarray | torch.Tensor) -> torch.Tensor:
    """float64 distances between matching rows of `a` and `b` (broadcast over leading axes).

    Inner products for `inner_product`. Each pair is computed on its own, so equal rows
    give equal distances and ties stay ties.
    """
    a = torch.as_tensor(np.asarray(a) if not isinstance(a, torch.Tensor) else a)
    b = torch.as_tensor(np.asarray(b) if not isinstance(b, torch.Tensor) else b)
    if metric.name in ("euclidean", "sqeuclidean", "manhattan", "chebyshev"):
        diff = b.to(torch.float64, copy=True)
        diff.sub_(a)  # float64 differences of float32 inputs are exact
        if metric.name == "manhattan":
            return diff.abs_().sum(-1)
        if metric.name == "chebyshev":
            return diff.abs_().amax(-1)
        d2 = torch.linalg.vecdot(diff, diff)
        return d2.sqrt_() if metric.name == "euclidean" else d2
    a, b = a.double(), b.double()
    dots = torch.linalg.vecdot(a, b)
    if metric.name == "inner_product":
        return dots
    norms = torch.linalg.vector_norm(a, dim=-1) * torch.linalg.vector_norm(b, dim=-1)
    cos = torch.where(norms > 0, dots / torch.where(norms > 0, norms, 1.0), 0.0)
    return 1.0 - cos
