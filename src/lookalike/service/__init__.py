"""The HTTP service: search by image over one index, as an API and a web page.

A shell over the library, as `cli/` is (it may import every layer below it). Modules follow
a request: `settings` (what an operator sets, declared once), `limits` (the gate: slots,
queue, body size, time-out), `auth` (API keys), `uploads` (files judged by their bytes,
stored under names the server chooses), `batching` (concurrent searches through one CNN
pass and one kNN call, the two as pipelined stages), `state` (`Service`: the index, its searcher, the batcher), `routes`
and `models` (the endpoints and their JSON), `errors` (every error as JSON with its status),
`metrics` (Prometheus text), `app` (`create_app`), `run` (`serve`: the stages' threads, uvicorn until a signal),
and `static/` (the page: plain HTML, CSS and JavaScript).

FastAPI and uvicorn are an optional extra: `pip install 'lookalike[serve]'`.
"""

from __future__ import annotations

__all__ = ["Settings", "create_app", "serve"]


def __getattr__(name: str):
    if name == "Settings":
        from .settings import Settings

        return Settings
    if name == "create_app":
        from .app import create_app

        return create_app
    if name == "serve":
        from .run import serve

        return serve
    raise AttributeError(f"module 'lookalike.service' has no attribute {name!r}")
