"""The on-disk image index: vectors + SQLite metadata + manifest, atomic commits."""

from .index import Index
from .results import Neighbour, QueryResult
from .searcher import Searcher
from .segments import SegmentedArray
from .store import IndexStore

__all__ = ["Index", "IndexStore", "Neighbour", "QueryResult", "SegmentedArray", "Searcher"]
