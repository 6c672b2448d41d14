"""One way to say a result: a `QueryResult` per query, holding its `Neighbour`s."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .store import IndexStore


@dataclass
class Neighbour:
    rank: int
    distance: float
    id: int
    key: str
    label: str | None
    location: str

    def as_dict(self) -> dict:
        return dict(self.__dict__)


@dataclass
class QueryResult:
    query: str
    neighbours: list[Neighbour]
    error: str | None = None

    def as_dict(self) -> dict:
        return {"query": self.query, "error": self.error, "neighbours": [n.as_dict() for n in self.neighbours]}


def results(store: IndexStore, names: list[str], D: np.ndarray, I: np.ndarray) -> list[QueryResult]:
    """One `QueryResult` per query: `names[q]` and its neighbours `I[q]` at distances `D[q]`,
    with their metadata read from `store`."""
    # include_removed: an image removed after this search's commit was read is still named
    metas = {m.id: m for m in store.images(sorted({int(i) for i in I.ravel()}), include_removed=True)}
    return [QueryResult(name, [Neighbour(r + 1, float(d), int(i), metas[int(i)].key, metas[int(i)].label,
                                         metas[int(i)].location) for r, (d, i) in enumerate(zip(drow, irow))])
            for name, drow, irow in zip(names, D, I)]


def k_out_of_range(k: int, count: int, by_id: bool) -> str:
    """The one message for a k that the index cannot answer."""
    if not by_id:
        return f"k={k} is out of range: this index holds {count} image(s), so 1 <= k <= {count}"
    if count <= 1:
        return f"k={k} is out of range: this index holds {count} image(s), none besides the query"
    return (f"k={k} is out of range: this index holds {count} image(s), {count - 1} besides the query, "
            f"so 1 <= k <= {count - 1} when searching by id")
