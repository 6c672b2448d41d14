"""What an operator may set, declared once: name, default, bound and help.

`lookalike serve` makes one flag of each (`cli/serve.py`), the README's "Serve" section
documents each (a test checks it), and the app reads them from one `Settings` object.
Defaults are those a careful operator would choose: loopback only, 10 MB uploads, 40
megapixels, one image per search, bounded concurrency and queue, a time-out per request.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from ..errors import InvalidParameter


@dataclass(frozen=True)
class Setting:
    """One operator setting: its flag, default, inclusive bounds (numbers) and help."""

    name: str
    default: object
    help: str
    lo: float | None = None
    hi: float | None = None

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")


SETTINGS: tuple[Setting, ...] = (
    Setting("host", "127.0.0.1", "address to listen on (default 127.0.0.1: this machine only)"),
    Setting("port", 8000, "TCP port (default 8000; 0: any free port, printed at start)", 0, 65535),
    Setting("api_key_file", None, "file of 'SCOPE KEY' lines (scope read or write); without one, "
                                  "reads are open and writes are refused"),
    Setting("cors_origin", (), "an origin allowed to call the API from a browser (repeatable; default: none)"),
    Setting("max_upload_bytes", 10_000_000, "largest image file accepted, in bytes (default 10 MB)", 1, 2**29),
    Setting("max_pixels", 40_000_000, "largest image accepted, in pixels (default 40 megapixels)", 1, 64_000_000),
    Setting("max_add_images", 16, "images in one add request (default 16)", 1, 1000),
    Setting("max_k", 100, "largest k a client may ask (default 100)", 1, 10_000),
    Setting("max_concurrency", 32, "requests worked on at once (default 32)", 1, 4096),
    Setting("max_queue", 64, "requests waiting for a slot; beyond them: 503 (default 64)", 0, 100_000),
    Setting("timeout", 30.0, "seconds a request may take before 503 (default 30)", 0.1, 3600),
    Setting("backend", "auto", "kNN backend: auto (lookalike's exact engine), lookalike, faiss, torch or sklearn"),
    Setting("runtime", "auto", "what runs the CNN: auto (default: the fastest installed, measured once per "
                               "machine), torch, onnxruntime or openvino (the last two CPU only; "
                               "pip install 'lookalike[onnx]' or 'lookalike[openvino]')"),
    Setting("batch_size", 32, "queries that go through the CNN and the kNN search together (default 32)", 1, 1024),
    Setting("threads", None, "CPU threads of each of the two compute stages, the CNN and the kNN search, which "
                             "work at the same time (default: half the cores, at least 1)", 1, 1024),
    Setting("batch_wait_ms", 5.0, "how long the first query of a batch waits for others when the kNN search is idle "
                                  "(default 5 ms; while it is busy, until a CNN pass would end as it does)", 0, 1000),
    Setting("access_log", False, "log one line per request (method, path, status; never a header or a key)"),
    Setting("upload_dir", None, "where added images are kept (default: INDEX.uploads beside the index)"),
)
BY_NAME = {s.name: s for s in SETTINGS}


@dataclass(frozen=True)
class Settings:
    """The service's settings; `Settings.make(index, **values)` checks each against its bound."""

    index: Path
    host: str = "127.0.0.1"
    port: int = 8000
    api_key_file: Path | None = None
    cors_origin: tuple[str, ...] = ()
    max_upload_bytes: int = 10_000_000
    max_pixels: int = 40_000_000
    max_add_images: int = 16
    max_k: int = 100
    max_concurrency: int = 32
    max_queue: int = 64
    timeout: float = 30.0
    backend: str = "auto"
    runtime: str = "auto"
    batch_size: int = 32
    threads: int | None = None
    batch_wait_ms: float = 5.0
    access_log: bool = False
    upload_dir: Path | None = None

    @classmethod
    def make(cls, index, **values) -> Settings:
        for name, value in values.items():
            setting = BY_NAME.get(name)
            if setting is None:
                raise InvalidParameter(f"unknown service setting {name!r}")
            if setting.lo is not None and value is not None and not setting.lo <= value <= setting.hi:
                raise InvalidParameter(f"{setting.flag} {value} is out of range: {setting.lo:g} to {setting.hi:g}")
        if values.get("api_key_file") is not None:
            values["api_key_file"] = Path(values["api_key_file"])
        if values.get("upload_dir") is not None:
            values["upload_dir"] = Path(values["upload_dir"])
        values["cors_origin"] = tuple(values.get("cors_origin") or ())
        return cls(Path(index), **values)

    @property
    def stage_threads(self) -> int:
        """`threads`, or its default: half the cores, at least 1."""
        return self.threads or max(1, (os.cpu_count() or 2) // 2)

    @property
    def uploads(self) -> Path:
        """The folder added images are written to."""
        return self.upload_dir or self.index.with_name(self.index.name + ".uploads")
