"""lookalike: search by image. Images -> CNN features -> exact nearest neighbours.

Public names load on first use, so that `import lookalike` stays fast and `import
lookalike.knn` loads nothing of images (no PIL, no sources, no models).
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

# public name -> the module that defines it
_PUBLIC = {
    "Embedder": "lookalike.features",
    "Index": "lookalike.index",
    "LookalikeError": "lookalike.errors",
    "NearestNeighbors": "lookalike.knn",
    "Searcher": "lookalike.index",
    "load_image": "lookalike.sources",
    "open_source": "lookalike.sources",
    "read_stl10": "lookalike.sources",
    "split": "lookalike.sources",
}

__all__ = [*sorted(_PUBLIC), "__version__"]


def __getattr__(name: str):
    if name in _PUBLIC:
        return getattr(importlib.import_module(_PUBLIC[name]), name)
    raise AttributeError(f"module 'lookalike' has no attribute {name!r}")


def __dir__() -> list[str]:
    return __all__
