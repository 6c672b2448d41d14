"""`create_app(settings)`: the FastAPI application of `lookalike serve`.

The index is opened here (so a bad index fails before the server binds); the model and the
fitted search load in a thread once the server runs (`Service.load`), `/readyz` answering
503 until then. The gate of `limits.py` wraps everything; CORS only with an allow-list.
"""

from __future__ import annotations

import asyncio
import logging
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles

from .. import __version__
from . import errors
from .limits import Limits
from .routes import STATIC, build_router
from .settings import Settings
from .state import Service

log = logging.getLogger("lookalike.service")
PAGE_POLICY = ("default-src 'self'; img-src 'self' blob: data:; style-src 'self'; script-src 'self'; "
               "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'")
DESCRIPTION = """Search by image over one lookalike index: upload a photo, get its nearest indexed images.

Errors are JSON `{"error": {"code": ..., "message": ...}}`: 400 a bad parameter, 401 a key is needed or
not valid, 403 writes are off or the key may only read, 404 an unknown id, 413 too large, 415 not an image,
422 a body that does not validate, 503 busy or still loading (with Retry-After).
Writes (`POST /v1/images`, `DELETE /v1/images/{id}`) need `Authorization: Bearer KEY` with a write key."""


def create_app(settings: Settings, *, load: bool = True, on_load_failure=None) -> FastAPI:
    """The app over the index of `settings`. With `load`, the model and the search are loaded
    in a thread at start-up; `on_load_failure(message)` is called if that fails."""
    service = Service(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        task = None
        if load:
            task = asyncio.get_running_loop().run_in_executor(None, _load, service, on_load_failure)
        try:
            yield
        finally:
            if task is not None:
                await task
            service.close()

    app = FastAPI(title="lookalike", version=__version__, description=DESCRIPTION, lifespan=lifespan,
                  docs_url=None, redoc_url=None)
    app.state.service = service
    errors.install(app)
    app.include_router(build_router(service))
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    _api_docs(app)

    if settings.cors_origin:
        from fastapi.middleware.cors import CORSMiddleware

        app.add_middleware(CORSMiddleware, allow_origins=list(settings.cors_origin), allow_credentials=False,
                           allow_methods=["GET", "POST", "DELETE"], allow_headers=["Authorization", "Content-Type"])
    app.add_middleware(SecurityHeaders)
    app.add_middleware(Limits, settings=settings, metrics=service.metrics)
    return app


class SecurityHeaders:
    """`X-Content-Type-Options: nosniff` on every response, and the page's policy on the page
    and its files. A pure ASGI middleware: it only adds headers as the response starts
    (Starlette's `@app.middleware("http")` runs each request through a task and streams)."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope["path"]
        extra = [(b"content-security-policy", PAGE_POLICY.encode()), (b"referrer-policy", b"no-referrer")] \
            if path == "/" or path.startswith("/static/") else []

        async def send_with_headers(message):
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                names = {name.lower() for name, _ in headers}
                if b"x-content-type-options" not in names:
                    headers.append((b"x-content-type-options", b"nosniff"))
                if extra:
                    headers = [h for h in headers if h[0].lower() not in {n for n, _ in extra}] + extra
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_headers)


def _api_docs(app: FastAPI) -> None:
    """`/docs`: Swagger UI over `/openapi.json`, its script and style served by this server from
    the files the `fastapi-offline` package ships (Swagger UI 5, which reads OpenAPI 3.1), so
    that the page works where no CDN can be reached and loads nothing from elsewhere."""
    try:
        import fastapi_offline
    except ImportError:
        log.warning("/docs is off: the package fastapi-offline is missing (pip install 'lookalike[serve]')")
        return
    from fastapi.openapi.docs import get_swagger_ui_html

    assets = Path(fastapi_offline.__file__).parent / "static"
    app.mount("/docs-assets", StaticFiles(directory=assets), name="docs-assets")

    @app.get("/docs", include_in_schema=False)
    async def docs():
        return get_swagger_ui_html(openapi_url=app.openapi_url, title="lookalike API",
                                   swagger_js_url="/docs-assets/swagger-ui-bundle.js",
                                   swagger_css_url="/docs-assets/swagger-ui.css",
                                   swagger_favicon_url="/docs-assets/favicon.png")


def _load(service: Service, on_failure) -> None:
    try:
        service.load()
    except Exception as exc:  # a failed load is told once: by `on_failure` where given (the CLI stops
        # and says it in its one error line), else in the log; a bug's traceback is logged in any case
        bug = not service.failed
        if bug:
            service.failed = str(exc) or type(exc).__name__
            log.exception("cannot load %s", service.index.path)
        if on_failure is not None:
            on_failure(service.failed)
        elif not bug:
            log.error("cannot load %s: %s", service.index.path, service.failed)
