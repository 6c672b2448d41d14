"""Bad uploads and bad requests: each gets its status and a message that names the problem;
the server stays up and the index is unchanged."""

from __future__ import annotations

import pytest

from .conftest import WRITE_KEY, png_bomb, write_headers


@pytest.fixture
def unchanged(client):
    """Checks, after the test, that the server still answers and the index holds what it held."""
    before = client.get("/v1/index").json()["count"]
    yield
    assert client.get("/healthz").status_code == 200
    assert client.get("/readyz").status_code == 200
    assert client.get("/v1/index").json()["count"] == before


def _error(r, status: int, code: str, *words: str) -> dict:
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/json")
    error = r.json()["error"]
    assert error["code"] == code, error
    for word in words:
        assert word in error["message"], error
    assert "Traceback" not in r.text
    return error


def test_text_file_named_jpg(client, unchanged):
    r = client.post("/v1/search", files={"image": ("cat.jpg", b"just some text, not a photo\n" * 10, "image/jpeg")})
    _error(r, 415, "not_an_image", "cat.jpg", "not an image", "content")


def test_truncated_jpeg(client, unchanged, photos):
    r = client.post("/v1/search", files={"image": ("cut.jpg", photos[0][: len(photos[0]) // 2], "image/jpeg")})
    _error(r, 415, "corrupt_image", "cut.jpg", "truncated")


def test_eleven_megabytes(client, unchanged, photos):
    big = photos[0] + b"\0" * 11_000_000
    r = client.post("/v1/search", files={"image": ("big.jpg", big, "image/jpeg")})
    _error(r, 413, "too_large", "10,000,000 bytes")


def test_png_bomb_is_refused_before_decoding(client, unchanged):
    bomb = png_bomb(20_000)
    assert len(bomb) < 200_000
    r = client.post("/v1/search", files={"image": ("bomb.png", bomb, "image/png")})
    _error(r, 413, "too_large", "bomb.png", "refused before decoding", "400,000,000 pixels", "40,000,000")


def test_empty_body_and_empty_file(client, unchanged):
    _error(client.post("/v1/search"), 400, "missing_image", "empty request", "'image'")
    r = client.post("/v1/search", files={"image": ("none.jpg", b"", "image/jpeg")})
    _error(r, 400, "empty_upload", "none.jpg", "0 bytes")
    r = client.post("/v1/search", files={"photo": ("a.jpg", b"x", "image/jpeg")})
    _error(r, 400, "missing_image", "no field 'image'")
    r = client.post("/v1/search", content=b'{"image": 1}', headers={"content-type": "application/json"})
    _error(r, 415, "not_multipart", "multipart/form-data")


def test_two_images_to_search(client, unchanged, photos):
    r = client.post("/v1/search", files=[("image", ("a.jpg", photos[0], "image/jpeg")),
                                         ("image", ("b.jpg", photos[1], "image/jpeg"))])
    _error(r, 400, "too_many_images", "one image per search", "got 2")


@pytest.mark.parametrize("k", [0, 101, -3])
def test_k_out_of_range(client, unchanged, photos, k):
    r = client.post("/v1/search", params={"k": k}, files={"image": ("a.jpg", photos[0], "image/jpeg")})
    _error(r, 400, "bad_parameter", f"k={k}", "1 to 100")
    _error(client.get("/v1/images/3/similar", params={"k": k}), 400, "bad_parameter", f"k={k}", "1 to 100")


def test_k_larger_than_the_index(client, unchanged):
    _error(client.get("/v1/images/3/similar", params={"k": 100}), 400, "bad_parameter", "k=100", "besides the query")


def test_k_not_a_number(client, unchanged):
    _error(client.get("/v1/images/3/similar", params={"k": "ten"}), 400, "bad_parameter", "k=")


@pytest.mark.parametrize("path", ["/v1/images/999", "/v1/images/999/thumbnail", "/v1/images/999/similar"])
def test_unknown_id(client, unchanged, path):
    _error(client.get(path), 404, "unknown_id", "999")


def test_unknown_id_on_delete(client, unchanged):
    _error(client.delete("/v1/images/999", headers=write_headers()), 404, "unknown_id", "999")


def test_bad_ids(client, unchanged):
    _error(client.get("/v1/images/abc"), 400, "bad_parameter", "image_id")
    _error(client.get("/v1/images/-1"), 400, "bad_parameter", "image_id=-1")
    _error(client.get(f"/v1/images/{2**64}"), 400, "bad_parameter", "image_id")


def test_writes_without_a_key_or_with_a_wrong_one(client, unchanged, photos):
    files = {"images": ("a.jpg", photos[0], "image/jpeg")}
    error = _error(client.post("/v1/images", files=files), 401, "key_required", "Authorization: Bearer")
    assert WRITE_KEY not in error["message"]
    r = client.post("/v1/images", files=files, headers={"Authorization": "Bearer not-the-key-at-all"})
    assert r.headers["www-authenticate"] == "Bearer"
    _error(r, 401, "bad_key", "not valid")
    r = client.post("/v1/images", files=files, headers={"Authorization": f"Basic {WRITE_KEY}"})
    _error(r, 401, "bad_key", "not valid")
    _error(client.delete("/v1/images/3"), 401, "key_required")
    _error(client.delete("/v1/images/3", headers={"Authorization": "Bearer wrong"}), 401, "bad_key")


def test_an_add_with_one_bad_file_adds_nothing(client, unchanged, photos):
    files = [("images", ("good.jpg", photos[4], "image/jpeg")), ("images", ("bad.jpg", b"GIF89a broken", "image/gif"))]
    _error(client.post("/v1/images", files=files, headers=write_headers()), 415, "not_an_image", "bad.jpg")
    truncated = [("images", ("good.jpg", photos[4], "image/jpeg")),
                 ("images", ("cut.jpg", photos[5][: len(photos[5]) // 2], "image/jpeg"))]
    _error(client.post("/v1/images", files=truncated, headers=write_headers()), 415, "corrupt_image", "cut.jpg")


def test_too_many_images_in_one_add(client, unchanged, photos):
    files = [("images", (f"{i}.jpg", photos[0], "image/jpeg")) for i in range(17)]
    _error(client.post("/v1/images", files=files, headers=write_headers()), 400, "too_many_images", "at most 16")


def test_bad_vectors(client, unchanged):
    _error(client.post("/v1/search/vector", json={"vector": [1.0, 2.0]}), 400, "wrong_dimension", "1472-d")
    _error(client.post("/v1/search/vector", json={"vector": [1e39] * 1472}), 400, "bad_parameter", "float32")
    _error(client.post("/v1/search/vector", json={"vector": "x"}), 422, "invalid_body", "vector")
    r = client.post("/v1/search/vector", content=b'{"vector": [NaN]}', headers={"content-type": "application/json"})
    _error(r, 422, "invalid_body", "vector")
    _error(client.post("/v1/search/vector", content=b"{", headers={"content-type": "application/json"}),
           422, "invalid_body")
    _error(client.post("/v1/search/vector", json={"vector": [0.0] * 1472, "k": 0}), 422, "invalid_body", "k")


def test_unknown_routes_and_methods(client, unchanged):
    _error(client.get("/v2/search"), 404, "not_found", "/v2/search")
    _error(client.put("/v1/index"), 405, "method_not_allowed", "PUT")
