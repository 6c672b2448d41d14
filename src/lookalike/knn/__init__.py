"""Exact k-nearest-neighbour search on arrays; knows nothing of images."""

from .backends import BACKENDS, available
from .engine import PreparedBase, SearchStats, knn
from .estimator import NearestNeighbors
from .metrics import METRICS, get_metric
from .verify import compare, reference_knn

__all__ = ["BACKENDS", "METRICS", "NearestNeighbors", "PreparedBase", "SearchStats", "available", "compare",
           "get_metric", "knn", "reference_knn"]
