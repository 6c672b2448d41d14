"""The gate: a full queue and a slow request are 503 with Retry-After; writes are off without
keys; CORS only for the origins given."""

from __future__ import annotations

import socket
import threading

import httpx

from lookalike.service.settings import BY_NAME, SETTINGS, Settings


def test_overload_timeout_writes_off_and_cors(thread_server, photos):
    # one slot, no queue, and a batch that waits 1 s for company (longer than the 0.5 s time-out):
    # the second search finds no room
    s = thread_server(max_concurrency=1, max_queue=0, batch_wait_ms=1000, timeout=0.5,
                      cors_origin=["https://photos.example"])
    files = {"image": ("a.jpg", photos[0], "image/jpeg")}
    answers = {}

    def slow():
        answers["first"] = httpx.post(s.url + "/v1/search", files=files, timeout=30)

    worker = threading.Thread(target=slow)
    worker.start()
    with httpx.Client(base_url=s.url, timeout=30) as c:
        for _ in range(200):  # wait until the first search holds the slot
            if "lookalike_requests_in_flight 1" in c.get("/metrics").text:
                break
            threading.Event().wait(0.01)
        busy = c.post("/v1/search", files=files)
        assert busy.status_code == 503 and busy.headers["retry-after"] == "1"
        assert busy.json()["error"]["code"] == "overloaded"
        assert c.get("/healthz").status_code == 200  # never queued
        worker.join(30)
        timed_out = answers["first"]
        assert timed_out.status_code == 503 and timed_out.json()["error"]["code"] == "timeout"
        assert "lookalike_rejected_total 1" in c.get("/metrics").text

        r = c.post("/v1/images", files={"images": ("a.jpg", photos[0], "image/jpeg")})
        assert r.status_code == 403 and "--api-key-file" in r.json()["error"]["message"]

        port = int(s.url.rsplit(":", 1)[1])  # a body that never finishes arriving (slowloris)
        with socket.create_connection(("127.0.0.1", port)) as raw:
            raw.sendall(b"POST /v1/search HTTP/1.1\r\nHost: t\r\nContent-Type: multipart/form-data; boundary=b\r\n"
                        b"Content-Length: 1000\r\n\r\n--b\r\n")
            raw.settimeout(20)
            head = raw.recv(65536).split(b"\r\n")[0]
        assert head == b"HTTP/1.1 408 Request Timeout", head

        allowed = c.get("/v1/index", headers={"Origin": "https://photos.example"})
        assert allowed.headers["access-control-allow-origin"] == "https://photos.example"
        other = c.get("/v1/index", headers={"Origin": "https://evil.example"})
        assert "access-control-allow-origin" not in other.headers


def test_not_ready_yet_is_503_with_retry_after(thread_server, photos):
    s = thread_server(load=False)  # the model never loads: the state of the first seconds
    with httpx.Client(base_url=s.url, timeout=30) as c:
        assert c.get("/healthz").status_code == 200
        for r in (c.get("/readyz"), c.post("/v1/search", files={"image": ("a.jpg", photos[0], "image/jpeg")}),
                  c.get("/v1/images/3/similar")):
            assert r.status_code == 503 and r.headers["retry-after"] == "2", r.text
            assert r.json()["error"]["code"] == "starting" and "loading" in r.json()["error"]["message"]
        assert c.get("/v1/index").json()["ready"] is False


def test_no_cors_by_default(client):
    r = client.get("/v1/index", headers={"Origin": "https://photos.example"})
    assert r.status_code == 200 and "access-control-allow-origin" not in r.headers


def test_settings_are_bounded_and_documented():
    from pathlib import Path

    import pytest

    from lookalike.errors import InvalidParameter

    with pytest.raises(InvalidParameter, match="--max-upload-bytes 0 is out of range"):
        Settings.make("ix", max_upload_bytes=0)
    assert Settings.make("ix").host == "127.0.0.1" and BY_NAME["max_upload_bytes"].default == 10_000_000
    readme = (Path(__file__).parents[2] / "README.md").read_text()
    for s in SETTINGS:
        assert s.flag in readme, f"{s.flag} is not in the README"
        assert getattr(Settings, s.name, ()) == s.default or s.name == "cors_origin"
