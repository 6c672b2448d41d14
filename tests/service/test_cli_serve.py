"""`lookalike serve` as a command: one-line errors before anything listens, and a graceful
stop (SIGTERM lets the request in flight finish, then exit status 0)."""

from __future__ import annotations

import signal
import socket
import threading
import time

import httpx
import pytest

from lookalike.cli import main

from .conftest import Served, copy_index


def _one_line(capsys, code: int, argv: list[str], *words: str) -> None:
    assert main(argv) == code
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    for word in words:
        assert word in err, err


def test_errors_before_listening(capsys, built_index, tmp_path):
    _one_line(capsys, 2, ["serve", str(tmp_path / "nope")], "no such index folder")
    keys = tmp_path / "keys"
    keys.write_text("write tooshort\n")
    _one_line(capsys, 2, ["serve", str(built_index), "--api-key-file", str(keys)], "line 1", "16 or more")
    _one_line(capsys, 2, ["serve", str(built_index), "--runtime", "tensorrt"],
              "unknown runtime 'tensorrt'; use auto, torch, onnxruntime, openvino")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        _one_line(capsys, 2, ["serve", str(built_index), "--port", str(port)], "cannot listen on 127.0.0.1", "--port")
    with pytest.raises(SystemExit) as exited:
        main(["serve", str(built_index), "--max-upload-bytes", "0"])
    assert exited.value.code == 2 and "out of range" in capsys.readouterr().err


@pytest.mark.slow
def test_sigterm_finishes_the_request_in_flight(built_index, tmp_path, photos):
    served = Served(copy_index(built_index, tmp_path), tmp_path / "log", "--batch-wait-ms", "1000",
                    "--batch-size", "2").wait_ready()
    answer = {}

    def search():
        answer["r"] = httpx.post(served.url + "/v1/search", files={"image": ("a.jpg", photos[0], "image/jpeg")},
                                 timeout=60)

    worker = threading.Thread(target=search)
    worker.start()
    for _ in range(500):  # until the search is in flight (its batch waits 1 s for company)
        if "lookalike_requests_in_flight 1" in httpx.get(served.url + "/metrics").text:
            break
        time.sleep(0.01)
    assert served.stop(signal.SIGTERM) == 0
    worker.join(60)
    assert answer["r"].status_code == 200 and len(answer["r"].json()["neighbours"]) == 10
    log = served.log_path.read_text()
    assert "stopping (SIGTERM)" in log and "lookalike serve: stopped" in log


def test_a_model_that_cannot_load_stops_the_server(capsys, built_index, tmp_path):
    import json
    import sqlite3

    index = copy_index(built_index, tmp_path)
    with sqlite3.connect(index / "meta.sqlite") as db:
        db.execute("UPDATE manifest SET value=? WHERE key='weights'", (json.dumps("file:/gone/w.pth:0123abcd"),))
    assert main(["serve", str(index), "--port", "0"]) == 2
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last.startswith("lookalike: error: ") and "cannot be served" in last and "/gone/w.pth" in last


def test_a_truncated_segment_is_one_line_before_anything_listens(capsys, built_index, tmp_path):
    """A damaged index is refused in one line before the server starts (no uvicorn start and
    shutdown around it, no second copy of the error in the log)."""
    index = copy_index(built_index, tmp_path)
    seg = next((index / "vectors").iterdir())
    seg.write_bytes(seg.read_bytes()[:-100])
    assert main(["serve", str(index), "--port", "0"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"lookalike: error: {seg}: size ") and "truncated or damaged" in err[0]


def test_a_failed_load_is_said_once(capsys, built_index, tmp_path):
    """A load that fails after the start (a segment whose bytes decode to a NaN, its size kept)
    stops the server with the error in its last line, and the log does not say it again."""
    import numpy as np

    index = copy_index(built_index, tmp_path)
    seg = next((index / "vectors").iterdir())
    data = bytearray(seg.read_bytes())
    data[-4:] = np.array([np.nan], np.float32).tobytes()
    seg.write_bytes(bytes(data))
    assert main(["serve", str(index), "--port", "0"]) == 2
    err = capsys.readouterr().err
    last = err.strip().splitlines()[-1]
    assert last.startswith(f"lookalike: error: {index}: cannot be served: {seg}: holds vectors no index writes")
    assert err.count("holds vectors no index writes") == 1


def test_serving_leaves_torchs_thread_count_as_it_was(capsys, built_index, tmp_path):
    """The server runs each stage on its own share of the cores (torch.set_num_threads); a
    program that served (here a refused start, after the count was set) gets its own count
    back. In-process tests after a serve test ran on one thread before, and their calibrations
    were measured as another machine's."""
    import torch

    before = torch.get_num_threads()
    assert main(["serve", str(tmp_path / "nope"), "--threads", "1"]) == 2
    assert torch.get_num_threads() == before
