"""lookalike: search by image. Images -> CNN features -> exact nearest neighbours."""

__version__ = "0.1.0"

from .errors import LookalikeError  # noqa: E402
from .sources import open_source, read_stl10, split  # noqa: E402

__all__ = ["Embedder", "LookalikeError", "NearestNeighbors", "__version__", "open_source", "read_stl10",
           "split"]


def __getattr__(name: str):
    # torch-heavy names load on first use, so `import lookalike` stays fast.
    if name == "Embedder":
        from .features import Embedder

        return Embedder
    if name == "NearestNeighbors":
        from .knn import NearestNeighbors

        return NearestNeighbors
    raise AttributeError(f"module 'lookalike' has no attribute {name!r}")
