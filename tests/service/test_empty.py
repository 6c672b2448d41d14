"""An empty index is served as any other: ready, searches say it is empty, and the first add
makes it searchable (an index whose every image was deleted, or one about to be filled
through the API)."""

from __future__ import annotations

import httpx

from lookalike.index import Index

from .conftest import WRITE_KEY, ThreadServer, copy_index, write_headers


def test_an_empty_index_is_ready_and_fills_through_the_api(built_index, tmp_path, photos):
    from lookalike.service.settings import Settings

    index = copy_index(built_index, tmp_path)
    Index(index).remove(ids=list(range(40)))
    keys = tmp_path / "keys"
    keys.write_text(f"write {WRITE_KEY}\n")
    server = ThreadServer(Settings.make(index, api_key_file=keys, upload_dir=tmp_path / "up", batch_size=4))
    try:
        with httpx.Client(base_url=server.url, timeout=60) as c:
            assert c.get("/readyz").json() == {"status": "ready", "count": 0}
            r = c.post("/v1/search", files={"image": ("q.jpg", photos[0], "image/jpeg")})
            assert r.status_code == 400 and r.json()["error"]["code"] == "empty_index"
            assert "no images yet" in r.json()["error"]["message"]
            added = c.post("/v1/images", headers=write_headers(),
                           files=[("images", (f"{i}.jpg", photos[i], "image/jpeg")) for i in range(3)])
            assert added.status_code == 200, added.text
            ids = [a["id"] for a in added.json()["added"]]
            hit = c.post("/v1/search", params={"k": 3}, files={"image": ("q.jpg", photos[1], "image/jpeg")}).json()
            assert hit["neighbours"][0]["id"] == ids[1] and sorted(n["id"] for n in hit["neighbours"]) == sorted(ids)
            for i in ids:
                assert c.delete(f"/v1/images/{i}", headers=write_headers()).status_code == 200
            assert c.get("/readyz").json()["count"] == 0
            assert not [p for p in (tmp_path / "up").rglob("*") if p.is_file()]
    finally:
        server.stop()
