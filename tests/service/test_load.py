"""A bounded load run on loopback: concurrent searches (gathered into micro-batches) and adds,
0 errors, and every search answered as it is when alone."""

from __future__ import annotations

import re
import threading
import time

import httpx
import pytest

from .conftest import write_headers

pytestmark = pytest.mark.slow
CLIENTS = 12
SECONDS = 3.0


def _batched(metrics: str) -> tuple[int, int]:
    """(batches, queries) of the micro-batch histogram."""
    count = int(re.search(r"^lookalike_batch_queries_count (\d+)", metrics, re.M).group(1))
    total = float(re.search(r"^lookalike_batch_queries_sum ([\d.]+)", metrics, re.M).group(1))
    return count, int(total)


def test_concurrent_searches_and_adds(server, client, photos):
    alone = {}
    for i in range(4):
        r = client.post("/v1/search", params={"k": 5}, files={"image": (f"{i}.jpg", photos[i], "image/jpeg")})
        alone[i] = [n["id"] for n in r.json()["neighbours"]]
    before_batches, before_queries = _batched(client.get("/metrics").text)
    count = client.get("/v1/index").json()["count"]
    errors, answered, added = [], [0], []
    seen: list[tuple[int, list[int]]] = []  # checked once the adds have answered: a commit is
    # visible to searches before the adder's response arrives
    stop = time.monotonic() + SECONDS

    def searcher(n: int) -> None:
        with httpx.Client(base_url=server.url, timeout=60) as c:
            while time.monotonic() < stop:
                i = n % 4
                r = c.post("/v1/search", params={"k": 5}, files={"image": (f"{i}.jpg", photos[i], "image/jpeg")})
                if r.status_code != 200:
                    errors.append(r.text)
                    continue
                seen.append((i, [x["id"] for x in r.json()["neighbours"]]))
                answered[0] += 1

    def adder() -> None:
        with httpx.Client(base_url=server.url, timeout=60) as c:
            for i in (6, 7):
                files = {"images": (f"{i}.jpg", photos[i], "image/jpeg")}
                r = c.post("/v1/images", headers=write_headers(), files=files)
                if r.status_code != 200:
                    errors.append(r.text)
                else:
                    added.extend(a["id"] for a in r.json()["added"])

    threads = [threading.Thread(target=searcher, args=(n,)) for n in range(CLIENTS)] + [threading.Thread(target=adder)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    errors += [f"query {i}: {ids} != {alone[i]}" for i, ids in seen
               if ids != alone[i] and not set(ids) - set(alone[i]) <= set(added)]
    assert not errors, errors[:3]
    assert answered[0] >= CLIENTS and len(added) == 2
    batches, queries = _batched(client.get("/metrics").text)
    assert queries - before_queries >= answered[0]
    assert batches - before_batches < queries - before_queries, "no two searches ever shared a batch"
    for i in added:  # leave the index as the other tests expect it
        assert client.delete(f"/v1/images/{i}", headers=write_headers()).status_code == 200
    assert client.get("/v1/index").json()["count"] == count
