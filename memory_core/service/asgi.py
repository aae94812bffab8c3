"""The outermost ASGI layer: body-size limit and request metrics.

A plain ASGI wrapper rather than Starlette middleware: it costs a few microseconds per request
and does no I/O. The route template is read after the app ran, from `scope["route"]`, which
the router (or the working-memory fast path) sets on the same scope dict; unmatched paths
share one label so that scanners cannot blow up the metric's cardinality. The request span is
FastAPI's own (see app.py). A request the fast path serves is handed the server's own receive
and send: the fast path keeps the body limit itself and returns the status it sent, which
spares each such request the two wrapper closures FastAPI's requests get.
"""

from __future__ import annotations

from functools import lru_cache
from time import perf_counter
from typing import Any
from urllib.parse import unquote_to_bytes

from prometheus_client import Histogram
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .. import metrics
from .errors import BodyTooLarge, ErrorBody
from .fast_path import WorkingFastPath

UNMATCHED = "unmatched"


class _InFlight:
    """Requests being served, read by the in-flight gauge at scrape time: a plain count costs a
    request less than the gauge's locked `inc()` and `dec()` (one event loop, no threads)."""

    count = 0


metrics.http_requests_in_flight.set_function(lambda: _InFlight.count)


@lru_cache(maxsize=4096)
def _request_duration(method: str, route: str, status: int) -> Histogram:
    # One histogram child per label set, looked up once: `labels()` takes a lock on every call.
    # Bounded: methods and statuses are few, and routes are the app's templates or UNMATCHED.
    return metrics.http_request_duration.labels(method, route, str(status))


async def _reject(send: Send, status: int, detail: str) -> None:
    body = ErrorBody(detail=detail).model_dump_json(exclude_none=True).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"connection", b"close"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


def _utf8_path(raw_path: bytes | None) -> bool:
    try:
        unquote_to_bytes(raw_path or b"").decode()
    except UnicodeDecodeError:
        return False
    return True


class Instrumented:
    def __init__(self, app: ASGIApp, max_body_bytes: int):
        self.app = app
        self.max_body_bytes = max_body_bytes

    def __getattr__(self, name: str) -> Any:
        # `app.state`, `app.openapi()` and friends stay reachable through the wrapper.
        return getattr(self.app, name)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = perf_counter()
        status = 500
        limit = self.max_body_bytes
        declared = None
        for name, value in scope["headers"]:
            if name == b"content-length":
                declared = value
                break
        _InFlight.count += 1
        try:
            if declared is not None and (not declared.isdigit() or int(declared) > limit):
                status = 413 if declared.isdigit() else 400
                await _reject(
                    send, status, f"request body exceeds {limit} bytes" if status == 413 else "invalid Content-Length"
                )
            elif "\ufffd" in scope["path"] and not _utf8_path(scope.get("raw_path")):
                # The server decoded invalid UTF-8 (%ff) to U+FFFD: two different ids would name
                # one user or key.
                status = 400
                await _reject(send, status, "the request path is not valid UTF-8 once percent-decoded")
            else:
                app = self.app
                # The fast path's answers need no wrapped receive and send: it reads the body
                # within the limit itself and returns the status it sent.
                served = await app.serve(scope, receive, send, limit) if isinstance(app, WorkingFastPath) else None
                if isinstance(served, int):
                    status = served
                else:
                    status = await self._framework(
                        app.app if isinstance(app, WorkingFastPath) else app, scope, served or receive, send
                    )
        finally:
            route = scope.get("route")
            template = getattr(route, "path", None) or UNMATCHED
            _request_duration(scope["method"], template, status).observe(perf_counter() - start)
            _InFlight.count -= 1

    async def _framework(self, app: ASGIApp, scope: Scope, receive: Receive, send: Send) -> int:
        """Run `app` with the body limit on its receive; the status it answered."""
        limit = self.max_body_bytes
        received = 0
        status = 500
        started = False

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise BodyTooLarge(limit)
            return message

        async def observed_send(message: Message) -> None:
            nonlocal status, started
            if message["type"] == "http.response.start":
                status = message["status"]
                started = True
            await send(message)

        try:
            await app(scope, limited_receive, observed_send)
        except Exception:
            # Starlette re-raises an unhandled exception after its handler (errors.py) logged it
            # and answered 500; stop it here so the server does not log it a second time.
            if not started:
                raise
        return status
