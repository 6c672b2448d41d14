"""lookalike on a Dask cluster: distributed feature extraction and exact sharded search.

`import lookalike` does not load this package, and this package loads Dask only when one of
its names is used (`pip install 'lookalike[dask]'`; without it, a one-line `ClusterError`).

- `cluster.py`: `connect(scheduler)`, a client for `local:N` (a LocalCluster of N worker
  processes on 127.0.0.1, closed at the end) or `tcp://HOST:PORT` (a running scheduler,
  reached within a time-out).
- `embed.py`: `ClusterEmbedder`, an `Embedder` whose chunks run as tasks on the cluster,
  each writing its own chunk file; the same output as the local run.
- `shards.py`: the base of a search, in row shards that workers read from storage.
- `neighbors.py`: `NearestNeighbors`, shaped like `cuml.dask.neighbors.NearestNeighbors`.
- `merge.py`: the exact merge of per-shard results (ties to the lower global index).
"""

from __future__ import annotations

import importlib

_PUBLIC = {
    "ClusterEmbedder": "lookalike.dask.embed",
    "NearestNeighbors": "lookalike.dask.neighbors",
    "connect": "lookalike.dask.cluster",
    "merge_results": "lookalike.dask.merge",
}

__all__ = sorted(_PUBLIC)


def __getattr__(name: str):
    if name in _PUBLIC:
        return getattr(importlib.import_module(_PUBLIC[name]), name)
    raise AttributeError(f"module 'lookalike.dask' has no attribute {name!r}")


def __dir__() -> list[str]:
    return __all__
