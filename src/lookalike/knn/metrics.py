"""Metric definitions and their reduction to the exact-search core.

Every metric is searched the same way: a cheap *screen* score that ranks like the metric,
with a bound on its rounding error, then an exact float64 *rerank* of the candidates.

- euclidean, sqeuclidean: screen |y-m|^2 - 2 (x-m).(y-m) on data centred by the base mean m
  (a GEMM); rerank sum((x - y)^2).
- cosine: screen -x^.y^ on unit rows (a GEMM); rerank 1 - x.y / (|x||y|), the norms'
  product as sqrt(|x|^2 |y|^2), so that equal rows are exactly 0 apart. A zero row has
  distance 1 to everything, as in scikit-learn.
- inner_product: screen -x.y (a GEMM); results are the inner products, largest first.
- manhattan (l1, cityblock), chebyshev: screen and rerank with float64 cdist.

`METRICS` is the one table of what each metric is; code elsewhere asks a `Metric` for its
properties, never for its name.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from ..errors import InvalidParameter
from .scaling import pow2_scale

ALIASES = {"l2": "euclidean", "l1": "manhattan", "cityblock": "manhattan", "ip": "inner_product",
           "dot": "inner_product", "linf": "chebyshev"}


@dataclass(frozen=True)
class Metric:
    """One metric: how the engine screens it, how its distances are computed and ordered,
    and what the other libraries call it."""

    name: str
    gemm: bool            # screened with a matrix product
    centred: bool         # translation invariant: screen on data centred by the base mean
    normalised: bool      # rows scaled to unit length before the screen
    largest_first: bool   # results sorted by decreasing value (inner products)
    p: float | None       # Minkowski p of a metric of differences (1, 2, inf); None: of dot products
    squared: bool         # distances are squared L2 (sqeuclidean), not their root
    faiss: str            # FAISS metric type: faiss.METRIC_<faiss> (its L2 is squared)
    sklearn: str | None   # scikit-learn's name; None: scikit-learn has no such metric
    cuml: str             # cuML's name
    cuvs: str | None      # cuVS brute force's name (its sqeuclidean serves euclidean); None: none

    @property
    def power(self) -> int:
        """How distances grow with the data: scaled by s, they are scaled by s**power."""
        if self.normalised:
            return 0
        return 2 if self.squared or self.p is None else 1

    def sort_key(self, dist):
        """What sorts ascending in this metric's order: `dist`, or `-dist` for largest first."""
        return -dist if self.largest_first else dist

    def from_squared_l2(self, d2: np.ndarray) -> np.ndarray:
        """Squared L2 distances (what FAISS's and cuVS's L2 indexes return) as this metric's
        distances; for metrics with p == 2 only."""
        return d2 if self.squared else np.sqrt(np.maximum(d2, 0))


METRICS = {
    "euclidean": Metric("euclidean", gemm=True, centred=True, normalised=False, largest_first=False, p=2.0,
                        squared=False, faiss="L2", sklearn="euclidean", cuml="euclidean", cuvs="sqeuclidean"),
    "sqeuclidean": Metric("sqeuclidean", gemm=True, centred=True, normalised=False, largest_first=False, p=2.0,
                          squared=True, faiss="L2", sklearn="sqeuclidean", cuml="sqeuclidean", cuvs="sqeuclidean"),
    "cosine": Metric("cosine", gemm=True, centred=False, normalised=True, largest_first=False, p=None,
                     squared=False, faiss="INNER_PRODUCT", sklearn="cosine", cuml="cosine", cuvs="cosine"),
    "inner_product": Metric("inner_product", gemm=True, centred=False, normalised=False, largest_first=True, p=None,
                            squared=False, faiss="INNER_PRODUCT", sklearn=None, cuml="inner_product",
                            cuvs="inner_product"),
    "manhattan": Metric("manhattan", gemm=False, centred=False, normalised=False, largest_first=False, p=1.0,
                        squared=False, faiss="L1", sklearn="manhattan", cuml="l1", cuvs=None),
    "chebyshev": Metric("chebyshev", gemm=False, centred=False, normalised=False, largest_first=False, p=math.inf,
                        squared=False, faiss="Linf", sklearn="chebyshev", cuml="chebyshev", cuvs=None),
}
NAMES = sorted(set(METRICS) | set(ALIASES))  # every name `get_metric` takes


def get_metric(name: str | Metric) -> Metric:
    """The `Metric` called `name` (or an alias); a `Metric` is returned as it is."""
    if isinstance(name, Metric):
        return name
    key = ALIASES.get(str(name).lower(), str(name).lower())
    if key not in METRICS:
        raise InvalidParameter(f"unknown metric {name!r}; choose one of {', '.join(NAMES)}")
    return METRICS[key]


def exact_distances(metric: Metric, a: np.ndarray | torch.Tensor, b: np.ndarray | torch.Tensor,
                    scale: float = 1.0, comfortable: bool = False) -> torch.Tensor:
    """float64 distances between matching rows of `a` and `b` (broadcast over leading axes),
    of the rows times `scale`, a power of two: distances times scale**power, the same bits
    as unscaled ones where those neither overflow nor underflow, and apart where they would.

    Inner products for `inner_product`. Each pair is computed on its own, so equal rows
    give equal distances and ties stay ties. Cosine rows are each scaled by a power of two
    of their own first, so that no norm overflows or underflows; `comfortable` says that
    every row is float32 with its largest value within `scaling.COMFORT` (or zero): then
    that scaling would change no bit (float64 products of such values are normal numbers,
    and a power of two factors out of every rounding), and it is skipped.
    """
    a = torch.as_tensor(np.asarray(a) if not isinstance(a, torch.Tensor) else a)
    b = torch.as_tensor(np.asarray(b) if not isinstance(b, torch.Tensor) else b)
    if metric.p is not None:
        diff = b.to(torch.float64, copy=True)
        diff.sub_(a.to(torch.float64))  # exact for float32 inputs; one type: 1.3x a mixed-type sub_
        if scale != 1.0:
            diff.mul_(scale)
        if metric.p == 1:
            return diff.abs_().sum(-1)
        if metric.p == math.inf:
            return diff.abs_().amax(-1)
        d2 = torch.linalg.vecdot(diff, diff)
        return d2 if metric.squared else d2.sqrt_()
    a, b = a.double(), b.double()
    if not metric.normalised:
        return torch.linalg.vecdot(a * scale, b * scale) if scale != 1.0 else torch.linalg.vecdot(a, b)
    if not comfortable:
        a = a * pow2_scale(a.abs().amax(-1, keepdim=True)) if a.shape[-1] else a
        b = b * pow2_scale(b.abs().amax(-1, keepdim=True)) if b.shape[-1] else b
    dots = torch.linalg.vecdot(a, b)
    # |a| |b| as sqrt(|a|^2 |b|^2), each squared norm summed as the dot product is: for equal rows
    # all three sums are the same number s, and sqrt(s s) is s exactly in binary floating point,
    # so a row's distance to an equal one is 0 (sqrt(s) sqrt(s) can miss s by an ulp: an exact
    # copy then lay 1e-16 away, and `index duplicates --threshold 0` could miss it)
    norms = torch.sqrt(torch.linalg.vecdot(a, a) * torch.linalg.vecdot(b, b))
    cos = torch.where(norms > 0, dots / torch.where(norms > 0, norms, 1.0), 0.0)
    return 1.0 - cos
