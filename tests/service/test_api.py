"""Every endpoint of a real `lookalike serve` process, as a client sees it."""

from __future__ import annotations

import io

import httpx
import numpy as np
from PIL import Image

from lookalike.index import Index

from .conftest import WRITE_KEY, encoded, write_headers


def test_health_ready_and_index(client, server):
    assert client.get("/healthz").json() == {"status": "ok", "count": None}
    assert client.get("/readyz").json() == {"status": "ready", "count": 40}
    about = client.get("/v1/index").json()
    assert about["name"] == "ix" and about["count"] == 40 and about["model"] == "efficientnet_lite0"
    assert about["dim"] == 1472 and about["input_size"] == 64 and about["writes"] is True
    assert about["mid"] == "5:gem:1+8:gem:1.25" and about["views"] == "full+centre"  # the default's, as built
    assert about["reads_need_key"] is False


def test_search_by_upload_matches_the_library(client, server, photos):
    r = client.post("/v1/search", params={"k": 5}, files={"image": ("query.jpg", photos[0], "image/jpeg")})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["query"] == "query.jpg" and body["k"] == 5 and body["took_ms"] > 0
    got = [(n["rank"], n["id"]) for n in body["neighbours"]]
    expected = Index(server.index).search_images([photos[0]], k=5)[0]
    assert got == [(n.rank, n.id) for n in expected.neighbours]
    assert np.allclose([n["distance"] for n in body["neighbours"]], [n.distance for n in expected.neighbours],
                       rtol=1e-4)
    first = body["neighbours"][0]
    assert first["thumbnail"] == f"/v1/images/{first['id']}/thumbnail"
    assert first["key"].startswith("sample/") and first["label"]


def test_search_default_k_is_ten_and_png_works(client, photos):
    png = encoded(np.asarray(Image.open(io.BytesIO(photos[1]))), "PNG")
    r = client.post("/v1/search", files={"image": ("q.png", png, "application/octet-stream")})
    assert r.status_code == 200 and len(r.json()["neighbours"]) == 10


def test_search_by_vector_finds_the_indexed_image_first(client, server):
    vector = np.asarray(Index(server.index).vectors()[7], dtype=float)
    r = client.post("/v1/search/vector", json={"vector": vector.tolist(), "k": 3})
    assert r.status_code == 200, r.text
    neighbours = r.json()["neighbours"]
    assert neighbours[0]["id"] == 7 and neighbours[0]["distance"] < 1e-3 and len(neighbours) == 3


def test_image_metadata_thumbnail_and_similar(client, server):
    meta = client.get("/v1/images/5").json()
    expected = Index(server.index).images([5])[0]
    assert meta["id"] == 5 and meta["key"] == expected.key and meta["label"] == expected.label
    assert "location" not in meta  # the server's file paths are its own
    r = client.get(meta["thumbnail"])
    assert r.status_code == 200 and r.headers["content-type"].startswith("image/")
    assert Image.open(io.BytesIO(r.content)).size[0] >= 32
    similar = client.get("/v1/images/5/similar", params={"k": 4}).json()
    ids = [n["id"] for n in similar["neighbours"]]
    assert len(ids) == 4 and 5 not in ids
    assert ids == [n.id for n in Index(server.index).search_ids([5], k=4)[0].neighbours]


def test_page_openapi_and_metrics(client):
    page = client.get("/")
    assert page.status_code == 200 and "<title>lookalike" in page.text
    assert "default-src 'self'" in page.headers["content-security-policy"]
    assert page.headers["referrer-policy"] == "no-referrer" and page.headers["x-content-type-options"] == "nosniff"
    for asset in ("/static/app.js", "/static/style.css"):
        got = client.get(asset)
        assert got.status_code == 200 and "default-src 'self'" in got.headers["content-security-policy"]
    api = client.get("/v1/images/999999")  # an error answered inside the app: nosniff, no page policy
    assert api.status_code == 404 and api.headers["x-content-type-options"] == "nosniff"
    assert "content-security-policy" not in api.headers and len(api.headers.get_list("x-content-type-options")) == 1
    assert "http://" not in page.text and "https://" not in client.get("/static/app.js").text  # no CDN
    spec = client.get("/openapi.json").json()
    assert {"/v1/search", "/v1/search/vector", "/v1/images", "/v1/images/{image_id}",
            "/v1/images/{image_id}/thumbnail", "/v1/images/{image_id}/similar", "/v1/index"} <= set(spec["paths"])
    docs = client.get("/docs")
    assert docs.status_code == 200 and "/openapi.json" in docs.text
    assert "cdn" not in docs.text.lower() and "https://" not in docs.text  # Swagger UI from this server
    for asset in ("/docs-assets/swagger-ui-bundle.js", "/docs-assets/swagger-ui.css"):
        assert client.get(asset).status_code == 200
    text = client.get("/metrics").text
    assert 'lookalike_requests_total{route="/v1/search",method="POST",status="200"}' in text
    assert "lookalike_request_seconds_bucket" in text and "lookalike_index_images " in text
    assert "lookalike_queue_depth 0" in text and "lookalike_batch_queries_count" in text


def test_add_is_found_by_the_next_search_and_delete_is_gone(client, server, photos):
    before = client.get("/v1/index").json()["count"]
    r = client.post("/v1/images", headers=write_headers(),
                    files=[("images", ("mine.jpg", photos[2], "image/jpeg")),
                           ("images", ("../../etc/passwd.png", photos[3], "image/jpeg"))])
    assert r.status_code == 200, r.text
    added = r.json()["added"]
    assert [a["name"] for a in added] == ["mine.jpg", "../../etc/passwd.png"] and r.json()["count"] == before + 2
    stored = [p for p in (server.index.parent / "uploads").rglob("*") if p.is_file()]
    assert len(stored) == 2 and all("passwd" not in str(p) and "mine" not in str(p) for p in stored)
    new_id = added[0]["id"]
    hit = client.post("/v1/search", params={"k": 1}, files={"image": ("q.jpg", photos[2], "image/jpeg")}).json()
    assert hit["neighbours"][0]["id"] == new_id and hit["neighbours"][0]["distance"] < 1e-3
    assert client.get(f"/v1/images/{new_id}/thumbnail").status_code == 200
    gone = client.delete(f"/v1/images/{new_id}", headers=write_headers())
    assert gone.status_code == 200, gone.text
    assert gone.json() == {"deleted": new_id, "count": before + 1}
    after = client.post("/v1/search", params={"k": 5}, files={"image": ("q.jpg", photos[2], "image/jpeg")}).json()
    assert new_id not in [n["id"] for n in after["neighbours"]]
    assert client.get(f"/v1/images/{new_id}").status_code == 404
    assert client.delete(f"/v1/images/{added[1]['id']}", headers=write_headers()).status_code == 200
    assert client.get("/v1/index").json()["count"] == before
    assert not [p for p in (server.index.parent / "uploads").rglob("*")], "a deleted image's upload stayed on disk"


def test_writes_by_another_process_are_seen_by_the_next_search(client, server):
    """The server reads metadata through connections it keeps open (one per thread): an add
    and a delete committed by another process (this test's) show in its very next answers."""
    from lookalike.index import IndexStore

    before = client.get("/v1/index").json()
    vector = np.random.default_rng(5).normal(size=before["dim"]).astype(np.float32)
    for _ in range(3):  # the worker threads' kept connections have all read the index before the add
        assert client.get("/v1/images/0").status_code == 200
        assert client.post("/v1/search/vector", json={"vector": vector.tolist(), "k": 2}).status_code == 200
    store = IndexStore(server.index)
    (new_id,), _ = store.append(vector[None], [{"key": "added-elsewhere", "source": "elsewhere", "position": 0,
                                                "location": "", "label": "other", "digest": None}])
    hit = client.post("/v1/search/vector", json={"vector": vector.tolist(), "k": 1}).json()
    assert hit["neighbours"][0]["id"] == new_id and hit["neighbours"][0]["key"] == "added-elsewhere", hit
    assert client.get(f"/v1/images/{new_id}").json()["label"] == "other"
    assert client.get("/v1/index").json()["count"] == before["count"] + 1
    store.remove([new_id], [], [])
    after = client.post("/v1/search/vector", json={"vector": vector.tolist(), "k": 3}).json()
    assert new_id not in [n["id"] for n in after["neighbours"]]
    gone = client.get(f"/v1/images/{new_id}")
    assert gone.status_code == 404 and "removed" in gone.json()["error"]["message"], gone.text
    assert client.get("/v1/index").json()["count"] == before["count"]


def test_an_add_that_fails_keeps_no_upload(thread_server, tmp_path, photos, monkeypatch):
    from lookalike.index.lock import CommitLock

    keys = tmp_path / "keys"
    keys.write_text(f"write {WRITE_KEY}\n")
    s = thread_server(api_key_file=keys)
    index = tmp_path / "s0" / "ix"
    monkeypatch.setenv("LOOKALIKE_LOCK_TIMEOUT", "0.3")
    files = [("images", ("a.jpg", photos[4], "image/jpeg"))]
    with httpx.Client(base_url=s.url, timeout=60) as c:
        with CommitLock(index):  # another writer holds the index: the add cannot commit
            r = c.post("/v1/images", headers=write_headers(), files=files)
        assert r.status_code == 503 and r.json()["error"]["code"] == "index_busy", r.text
        assert not [p for p in (tmp_path / "uploads0").rglob("*") if p.is_file()], "a failed add left its upload"
        assert c.post("/v1/images", headers=write_headers(), files=files).status_code == 200
        assert len([p for p in (tmp_path / "uploads0").rglob("*") if p.is_file()]) == 1


def test_a_body_that_is_not_json_and_a_zero_vector_are_named(client, server):
    """Truncated JSON is said as such, with where it broke (it read "10: JSON decode error");
    an all-zero vector on a cosine index (every image at distance 1) is a 400, not an answer."""
    r = client.post("/v1/search/vector", content=b'{"vector":', headers={"content-type": "application/json"})
    assert r.status_code == 422
    assert r.json()["error"]["message"].startswith("the body is not valid JSON at character 10 (")
    assert Index(server.index).metric == "cosine"
    r = client.post("/v1/search/vector", json={"vector": [0.0] * Index(server.index).vectors().shape[1], "k": 3})
    assert r.status_code == 400 and r.json()["error"]["code"] == "zero_vector"
    assert "all zeros" in r.json()["error"]["message"]
    tiny = client.post("/v1/search/vector", json={"vector": [1e-50] * Index(server.index).vectors().shape[1]})
    assert tiny.status_code == 400 and tiny.json()["error"]["code"] == "zero_vector"  # zeros in float32


def test_the_page_names_its_icon(client):
    page = client.get("/").text
    assert '<link rel="icon" href="/static/favicon.svg"' in page
    icon = client.get("/static/favicon.svg")
    assert icon.status_code == 200 and icon.headers["content-type"].startswith("image/svg+xml")
