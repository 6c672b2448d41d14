"""A real server for the service's tests: `lookalike serve` in a subprocess on 127.0.0.1 (a
free port, chosen by the server and read from its first line), or uvicorn in a thread of
the test process for settings a test needs of its own; both stopped by their fixtures.

The index is small (40 images of the sample set at 64 pixels), built once per session."""

from __future__ import annotations

import io
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import threading
import time
import zlib
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image

from lookalike.index import Index
from lookalike.sources import SampleSource

START_TIMEOUT = 120  # s: torch and the model load in the server's process
WRITE_KEY = "write-" + secrets.token_urlsafe(16)
READ_KEY = "read-" + secrets.token_urlsafe(16)


@pytest.fixture(scope="session")
def built_index(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("service-index")
    Index.build(SampleSource(40, seed=1, size=64), root / "ix", input_size=64, progress=False)
    return root / "ix"


def copy_index(built: Path, folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copytree(built, folder / "ix")
    return folder / "ix"


def encoded(pixels: np.ndarray, fmt: str = "JPEG") -> bytes:
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, fmt)
    return buf.getvalue()


@pytest.fixture(scope="session")
def photos() -> list[bytes]:
    """Eight query photos as JPEG files, none of them in the index."""
    return [encoded(img) for img in SampleSource(8, seed=77, size=96).images]


def png_bomb(side: int = 20_000) -> bytes:
    """A valid 1-bit PNG of side x side pixels (400 million for 20,000) in about 60 KB."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return (len(data).to_bytes(4, "big") + kind + data
                + zlib.crc32(kind + data).to_bytes(4, "big"))

    row = b"\x00" * (1 + (side + 7) // 8)  # filter byte + packed bits
    compressor = zlib.compressobj(9)
    data = b"".join(compressor.compress(row * 1000) for _ in range(side // 1000)) + compressor.flush()
    header = side.to_bytes(4, "big") * 2 + bytes([1, 0, 0, 0, 0])  # 1 bit, grey
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", data) + chunk(b"IEND", b"")


class Served:
    """A `lookalike serve` process: its URL, its log, and a way to stop it."""

    def __init__(self, index: Path, log: Path, *args: str):
        self.index, self.log_path = index, log
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        self.log = open(log, "w")
        self.proc = subprocess.Popen([sys.executable, "-m", "lookalike", "serve", str(index), "--port", "0", *args],
                                     stdout=self.log, stderr=subprocess.STDOUT, env=env)
        self.url = self._wait_for_url()

    def _wait_for_url(self) -> str:
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            found = re.search(r"on (http://127\.0\.0\.1:\d+)/", self.log_path.read_text())
            if found:
                return found.group(1)
            if self.proc.poll() is not None:
                raise RuntimeError(f"the server exited ({self.proc.returncode}):\n{self.log_path.read_text()}")
            time.sleep(0.05)
        raise RuntimeError("the server did not start:\n" + self.log_path.read_text())

    def wait_ready(self) -> Served:
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the server exited ({self.proc.returncode}):\n{self.log_path.read_text()}")
            try:
                if httpx.get(self.url + "/readyz", timeout=5).status_code == 200:
                    return self
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        raise RuntimeError("the server never became ready:\n" + self.log_path.read_text())

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 60) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()
        return self.proc.returncode


@pytest.fixture(scope="session")
def server(built_index, tmp_path_factory):
    """A served copy of the index that accepts writes with WRITE_KEY (reads are open)."""
    root = tmp_path_factory.mktemp("served")
    index = copy_index(built_index, root)
    keys = root / "keys"
    keys.write_text(f"# scope key\nwrite {WRITE_KEY}\n")
    served = Served(index, root / "server.log", "--api-key-file", str(keys), "--upload-dir",
                    str(root / "uploads"), "--batch-size", "8").wait_ready()  # fewer shapes to warm
    yield served
    assert served.stop() == 0, served.log_path.read_text()


@pytest.fixture
def client(server):
    with httpx.Client(base_url=server.url, timeout=60) as c:
        yield c


def write_headers(key: str = WRITE_KEY) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


class ThreadServer:
    """uvicorn in a thread of this process, on a free port of 127.0.0.1, over `settings`."""

    def __init__(self, settings, load: bool = True):
        import uvicorn

        from lookalike.service.app import create_app
        from lookalike.service.run import listen

        self.app = create_app(settings, load=load)
        self.sock = listen("127.0.0.1", 0)
        self.url = "http://127.0.0.1:%d" % self.sock.getsockname()[1]
        self.server = uvicorn.Server(uvicorn.Config(self.app, log_level="warning", lifespan="on"))
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            try:
                if httpx.get(self.url + ("/readyz" if load else "/healthz"), timeout=5).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.05)
        self.stop()
        raise RuntimeError("the in-process server never became ready")

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(60)
        self.sock.close()


@pytest.fixture
def thread_server(built_index, tmp_path):
    """Start servers with settings of a test's own: `thread_server(**settings)`; all stopped after."""
    from lookalike.service.settings import Settings

    started = []

    def start(load: bool = True, **values) -> ThreadServer:
        index = copy_index(built_index, tmp_path / f"s{len(started)}")
        values.setdefault("upload_dir", tmp_path / f"uploads{len(started)}")
        values.setdefault("batch_size", 4)  # fewer CNN shapes to warm at start
        started.append(ThreadServer(Settings.make(index, **values), load=load))
        return started[-1]

    yield start
    for s in started:
        s.stop()
