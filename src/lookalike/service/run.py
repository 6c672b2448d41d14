"""`serve(settings)`: run the app on uvicorn until SIGINT or SIGTERM.

The listening socket is bound here, before anything else, so that a port in use is one line
(`cannot listen on ...`), and port 0 picks a free port that is printed. On SIGINT/SIGTERM
uvicorn stops accepting, finishes the requests in flight (for at most the request time-out
and a few seconds), runs the shutdown (the batcher's threads end) and returns.

The process is the server's own, so its torch threads are set here (`compute_threads`).
"""

from __future__ import annotations

import ipaddress
import logging
import signal
import socket
import sys

from ..errors import BadIndex, LookalikeError
from ..text import printable
from .settings import Settings

log = logging.getLogger("lookalike.service")


def listen(host: str, port: int) -> socket.socket:
    """A listening TCP socket on `host:port`, or a one-line `LookalikeError`."""
    try:
        family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
        sock = socket.create_server((host, port), family=family, backlog=2048)
    except (OSError, UnicodeError) as exc:
        reason = getattr(exc, "strerror", None) or str(exc)
        raise LookalikeError(f"cannot listen on {printable(host)}:{port} ({reason}); choose another --host "
                             "or --port") from None
    sock.set_inheritable(True)
    return sock


def is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def _server_class(uvicorn):
    """uvicorn's server, except that a stop by SIGINT or SIGTERM ends in a normal return (exit
    status 0, "stopped") after the graceful shutdown, rather than the signal raised again."""

    class Server(uvicorn.Server):
        def handle_exit(self, sig, frame) -> None:
            super().handle_exit(sig, frame)
            log.info("stopping (%s): finishing the requests in flight", signal.Signals(sig).name)
            getattr(self, "_captured_signals", []).clear()

    return Server


def compute_threads(settings: Settings) -> int:
    """Set torch's threads (which ONNX Runtime and OpenVINO follow) to `settings.stage_threads`
    and return them. The micro-batcher runs the CNN and the kNN search as two stages at the
    same time; with all the cores each, a stage's threads would wait at every step for a core
    that the other stage, or the event loop, holds (measured in docs/benchmarks.md)."""
    import torch

    threads = settings.stage_threads
    torch.set_num_threads(threads)
    return threads


def serve(settings: Settings) -> int:
    """Serve until stopped; returns 0, or raises a `LookalikeError` when the index cannot be
    opened or loaded or the address cannot be used. torch's thread count, set per stage while
    it serves, is what it was again when it returns (a program that serves, then goes on)."""
    import torch

    before = torch.get_num_threads()
    try:
        return _serve(settings)
    finally:
        torch.set_num_threads(before)


def _serve(settings: Settings) -> int:
    import uvicorn

    from .app import create_app

    logging.basicConfig(level=logging.INFO, format="lookalike serve: %(message)s", stream=sys.stderr)
    failed: list[str] = []
    server: uvicorn.Server | None = None
    compute_threads(settings)

    def load_failed(message: str) -> None:
        failed.append(message)
        if server is not None:
            server.should_exit = True

    app = create_app(settings, on_load_failure=load_failed)  # a missing or damaged index: raised here
    # every vector segment there with its recorded size, before anything listens: a truncated or
    # missing file is one error line, not a server that starts and stops (the values are checked
    # by the load, which fits the search)
    try:
        app.state.service.index.store.vectors()
        sock = listen(settings.host, settings.port)
    except BaseException:  # refused before serving: the index's database let go now, not at exit
        app.state.service.close()
        raise
    host, port = sock.getsockname()[:2]
    # log_config=None: uvicorn's lines go through the handler set above ("lookalike serve: ..."), and
    # it does not reconfigure logging, which closes every handler of the process, other libraries'
    # too (absl's closes the stream it was given when that is no longer sys.stderr)
    config = uvicorn.Config(app, log_level="info", access_log=settings.access_log, lifespan="on", log_config=None,
                            timeout_graceful_shutdown=int(settings.timeout) + 5, server_header=False,
                            h11_max_incomplete_event_size=64 * 1024)
    server = _server_class(uvicorn)(config)
    shown = f"[{host}]" if ":" in host else host
    print(f"lookalike serve: {printable(str(settings.index))} on http://{shown}:{port}/ "
          "(loading the model; /readyz says when it is ready; Ctrl-C stops)", file=sys.stderr, flush=True)
    if not is_loopback(settings.host):
        print(f"lookalike serve: warning: listening on {printable(settings.host)}, reachable from other machines"
              + ("" if app.state.service.keys.reads_need_key else "; reads need no key (add 'read KEY' lines "
                 "to --api-key-file to require one)"), file=sys.stderr, flush=True)
    try:
        server.run(sockets=[sock])
    finally:
        sock.close()
    if failed:
        raise BadIndex(f"{printable(str(settings.index))}: cannot be served: {failed[0]}")
    print("lookalike serve: stopped", file=sys.stderr, flush=True)
    return 0
