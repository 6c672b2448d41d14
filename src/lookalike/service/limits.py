"""The gate every request passes: a slot (bounded concurrency and queue), a body of bounded
size (counted while it is read, whatever Content-Length says), a time-out, and a line in the
metrics. A pure ASGI middleware, so that a refused request costs no parsing.

- `/v1/...` requests take one of `max_concurrency` slots; up to `max_queue` more wait for
  one; past that, 503 with Retry-After at once. Health, readiness, metrics and the page are
  never queued (a load balancer must see them while the API is busy).
- A request body is read whole before the route sees it, at most `cap(path)` bytes; past
  that, the rest is read and dropped (up to `DRAIN_BYTES`, so that the client gets the 413
  rather than a broken pipe) and the answer is 413.
- A request that takes longer than `timeout` seconds is answered 503 (if nothing was sent
  yet); work already handed to a thread finishes there and is dropped. A body that takes
  longer than that to arrive is 408 (a slow client holds a slot no longer).
"""

from __future__ import annotations

import asyncio
import time

from .errors import error_response
from .metrics import Metrics
from .settings import Settings

DRAIN_BYTES = 64 * 2**20  # read and dropped past a cap, so that the 413 reaches the client
FORM_OVERHEAD = 64 * 1024  # multipart headers and boundaries around the files


class Limits:
    def __init__(self, app, settings: Settings, metrics: Metrics):
        self.app = app
        self.settings = settings
        self.metrics = metrics
        self._slots: asyncio.Semaphore | None = None

    def cap(self, method: str, path: str) -> int:
        """The largest request body accepted for `method path`."""
        s = self.settings
        if method == "POST" and path == "/v1/search":
            return s.max_upload_bytes + FORM_OVERHEAD
        if method == "POST" and path == "/v1/images":
            return s.max_upload_bytes * s.max_add_images + FORM_OVERHEAD * s.max_add_images
        return 2**20  # a JSON vector, or nothing

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = [0]

        async def send_counted(message):
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        try:
            if scope["path"].startswith("/v1/"):
                await self._queued(scope, receive, send_counted)
            else:
                await self._bounded(scope, receive, send_counted)
        finally:
            route = scope.get("route")
            name = getattr(route, "path", None) or "unmatched"
            self.metrics.request(name, scope["method"], status[0] or 499, time.perf_counter() - start)

    async def _queued(self, scope, receive, send):
        if self._slots is None:
            self._slots = asyncio.Semaphore(self.settings.max_concurrency)
        m = self.metrics
        if self._slots.locked() and m.waiting >= self.settings.max_queue:
            m.rejected += 1
            await _respond(send, error_response(
                503, "overloaded", f"the server is busy ({m.in_flight} requests in progress, {m.waiting} waiting); "
                                   "try again in a moment", {"Retry-After": "1"}))
            return
        m.waiting += 1
        try:
            await self._slots.acquire()
        finally:
            m.waiting -= 1
        m.in_flight += 1
        try:
            await self._bounded(scope, receive, send)
        finally:
            m.in_flight -= 1
            self._slots.release()

    async def _bounded(self, scope, receive, send):
        cap = self.cap(scope["method"], scope["path"])
        try:
            body = await asyncio.wait_for(_read(receive, cap), self.settings.timeout)
        except asyncio.TimeoutError:  # a client that sends its body too slowly holds a slot no longer
            await _respond(send, error_response(
                408, "timeout", f"the request's body did not arrive within {self.settings.timeout:g} s"))
            return
        if body is None:
            return  # the client went away: nothing to answer
        if isinstance(body, int):
            total = body
            what = "image" if scope["path"] in ("/v1/search", "/v1/images") else "request body"
            limit = self.settings.max_upload_bytes if what == "image" else cap
            got = f"more than {total:,}" if total > cap + DRAIN_BYTES else f"{total:,}"
            await _respond(send, error_response(
                413, "too_large", f"the {what} is too large: {got} bytes received, the limit is {limit:,} bytes "
                                  f"per {what}"))
            return
        replay = [{"type": "http.request", "body": body, "more_body": False}]

        async def replayed():
            if replay:
                return replay.pop()
            return await receive()  # after the body: the disconnect, when it comes

        sent = [False]

        async def send_tracked(message):
            sent[0] = True
            await send(message)

        try:
            await asyncio.wait_for(self.app(scope, replayed, send_tracked), self.settings.timeout)
        except asyncio.TimeoutError:
            if not sent[0]:
                await _respond(send, error_response(
                    503, "timeout", f"the request took more than {self.settings.timeout:g} s; the server is busy, "
                                    "try again in a moment", {"Retry-After": "1"}))


async def _read(receive, cap: int) -> bytes | int | None:
    """The whole body if it is at most `cap` bytes; else how many bytes came (read and dropped
    up to `DRAIN_BYTES` past the cap); None if the client went away."""
    chunks, total, more = [], 0, True
    while more:
        message = await receive()
        if message["type"] == "http.disconnect":
            return None
        data = message.get("body", b"")
        total += len(data)
        if total <= cap:
            chunks.append(data)
        elif total > cap + DRAIN_BYTES:
            break
        more = message.get("more_body", False)
    return total if total > cap else b"".join(chunks)


async def _respond(send, response) -> None:
    """Send a response built outside the app (its body is already JSON bytes)."""
    await send({"type": "http.response.start", "status": response.status_code,
                "headers": response.raw_headers})
    await send({"type": "http.response.body", "body": response.body})

