"""The on-disk image index: vectors + SQLite metadata + manifest, atomic commits."""

from .index import Index, Neighbour, QueryResult
from .store import IndexStore, SegmentedArray

__all__ = ["Index", "IndexStore", "Neighbour", "QueryResult", "SegmentedArray"]
