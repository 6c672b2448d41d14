"""Images -> vectors with a pretrained CNN."""

from .embed import Embedder, read_features, write_features
from .models import DEFAULT_MODEL, MODELS, POOLINGS, build, get_spec

__all__ = ["DEFAULT_MODEL", "MODELS", "POOLINGS", "Embedder", "build", "get_spec", "read_features",
           "write_features"]
