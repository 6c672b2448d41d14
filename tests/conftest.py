"""Shared fixtures: a real HTTP server on 127.0.0.1 (with Range and cut-off support), sample data."""

from __future__ import annotations

import http.server
import os
import socket
import threading
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("LOOKALIKE_CACHE", str(Path(__file__).parent / ".cache-unused"))


class RangeHandler(http.server.BaseHTTPRequestHandler):
    """Serves files from `root`; honours `Range: bytes=N-`; can cut a response short."""

    root: Path
    cut_after: dict[str, int]  # path -> bytes to send before dropping the connection (once)
    log: list

    def do_GET(self):  # noqa: N802
        path = self.root / self.path.lstrip("/")
        self.log.append((self.path, self.headers.get("Range")))
        if not path.is_file():
            self.send_error(404)
            return
        data = path.read_bytes()
        start = 0
        rng = self.headers.get("Range")
        if rng and rng.startswith("bytes="):
            start = int(rng[6:].split("-")[0])
            if start >= len(data):
                self.send_response(416)
                self.end_headers()
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        else:
            self.send_response(200)
        body = data[start:]
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        cut = self.cut_after.pop(self.path, None)
        if cut is not None:
            self.wfile.write(body[:cut])
            self.wfile.flush()
            self.connection.shutdown(socket.SHUT_RDWR)
            return
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def http_server(tmp_path):
    """Yields (base_url, root_dir, cut_after dict, request log)."""
    root = tmp_path / "www"
    root.mkdir()
    handler = type("H", (RangeHandler,), {"root": root, "cut_after": {}, "log": []})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}", root, handler.cut_after, handler.log
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def closed_port_url():
    """A URL on 127.0.0.1 where nothing listens: what an offline machine sees."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return f"http://127.0.0.1:{port}/file.tar.gz"


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("LOOKALIKE_CACHE", str(tmp_path / "cache"))


def stl10_pattern(n: int) -> np.ndarray:
    """Images whose pixel (y, x, c) = (7*y + 3*x + 101*c + 13*i) % 256: differs along every axis."""
    i, y, x, c = np.ogrid[:n, :96, :96, :3]
    return ((7 * y + 3 * x + 101 * c + 13 * i) % 256).astype(np.uint8)


def write_stl10(path: Path, images: np.ndarray) -> Path:
    """Write images (n, 96, 96, 3) in STL-10's layout: per record, channel planes, column-major."""
    path.parent.mkdir(parents=True, exist_ok=True)
    images.transpose(0, 3, 2, 1).tofile(path)
    return path
