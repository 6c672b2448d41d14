"""Exact k-nearest-neighbour search on arrays; knows nothing of images.

The engine's stages, one module each: `blocks` (ranges, working memory, SearchStats) ->
`screen` (rows prepared and screened, with their error bound) -> `window` (each query's
candidates; `selection`, its small-size path compiled) -> `refine` (fp32 refinement, float64
rerank, pick) -> `engine.knn`, the one entry point. `radius` searches by radius on the same
stages. `backends` adapts other libraries beside the engine; `estimator.NearestNeighbors` is
scikit-learn's contract over them.
"""

from .backends import BACKENDS, available
from .blocks import SearchStats
from .engine import knn
from .estimator import NearestNeighbors, NotFittedError
from .metrics import METRICS, get_metric
from .screen import PreparedBase
from .verify import compare, reference_knn

__all__ = ["BACKENDS", "METRICS", "NearestNeighbors", "NotFittedError", "PreparedBase", "SearchStats", "available",
           "compare", "get_metric", "knn", "reference_knn"]
