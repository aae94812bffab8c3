"""The working-memory routes without FastAPI's routing and dependency solving, for requests
whose every part is plainly valid.

Routing, the middleware stack and dependency solving cost the service several times what one
Redis round trip costs (see benchmarks/asgi_cost.py). This layer sits between the
instrumentation layer and FastAPI: a request to a working-memory route that carries a known
bearer token, path parameters within their limits, a plain `limit` query and a JSON body that
its model accepts calls the same route function as FastAPI would, with the same Caller, model
and limits, so the answer is the same. Anything else - a missing or unknown token, an
oversized parameter, an unexpected query or content type, a body its model refuses - goes to
FastAPI unchanged (the body it read is replayed), which answers with the documented errors.
Metrics are the instrumentation layer's (the route is set on the scope, as the router does; the
status is what `serve` returns), and so is the body limit, which `serve` applies while reading.
While a tracer provider is configured, a request it serves gets the server span FastAPI would
have made (same name, kind, attributes, status and parent from the caller's trace context), so
the backend spans of the route nest under it as they do behind FastAPI.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import urlsplit

from fastapi import __version__ as fastapi_version
from opentelemetry import propagate, trace
from opentelemetry.trace import SpanKind, StatusCode
from pydantic import BaseModel, ValidationError
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..errors import MemoryCoreError
from ..validation import MAX_ID_CHARS, is_blank
from . import errors, routes
from .routes import MAX_KEY_CHARS, Caller
from .runtime import Runtime, tracing

# The instrumentation scope and schema of FastAPI's own request spans, which these replace.
_SPAN_SCOPE = ("fastapi", fastapi_version, "https://opentelemetry.io/schemas/1.44.0")
_PATH = re.compile(r"/v1/working/([^/]+)/([^/]+)/(context|turns|thoughts)(?:/([^/]+))?\Z")
_LIMIT = re.compile(rb"limit=([1-9][0-9]{0,5})\Z")
Handler = Callable[..., Awaitable[Response]]


class _Route:
    __slots__ = ("body_model", "handler", "route", "span_name", "takes_key", "takes_limit", "template")

    def __init__(self, handler: Handler, route: BaseRoute, body_model: type[BaseModel] | None, takes_key: bool):
        self.handler = handler
        self.route = route
        self.body_model = body_model
        self.takes_key = takes_key
        self.takes_limit = handler in (routes.get_working_turns, routes.get_thoughts)
        self.template: str = getattr(route, "path", "")
        methods = getattr(route, "methods", None) or {"GET"}
        self.span_name = f"{sorted(methods)[0]} {self.template}"


# (method, collection, key given) -> (route function, its body model)
_HANDLERS: dict[tuple[str, str, bool], tuple[Handler, type[BaseModel] | None]] = {
    ("GET", "context", True): (routes.get_context, None),
    ("PUT", "context", True): (routes.put_context, routes.ContextValue),
    ("DELETE", "context", True): (routes.delete_context_key, None),
    ("GET", "context", False): (routes.get_all_context, None),
    ("DELETE", "context", False): (routes.clear_context, None),
    ("POST", "turns", False): (routes.add_working_turn, routes.WorkingTurn),
    ("GET", "turns", False): (routes.get_working_turns, None),
    ("POST", "thoughts", False): (routes.push_thought, routes.Thought),
    ("GET", "thoughts", False): (routes.get_thoughts, None),
}


class WorkingFastPath:
    def __init__(self, app: ASGIApp, tracer_provider: trace.TracerProvider | None):
        self.app = app
        self.tracer_provider = tracer_provider
        self.routes = self._routes()
        # Off: every request goes through FastAPI (the equivalence test compares the two).
        self.enabled = True
        self._tracer: tuple[trace.TracerProvider, trace.Tracer] | None = None
        # The app's runtime while its lifespan runs (set there); None: FastAPI answers.
        self.runtime: Runtime | None = None

    def __getattr__(self, name: str) -> Any:
        return getattr(self.app, name)

    def _routes(self) -> dict[tuple[str, str, bool], _Route]:
        by_endpoint = {getattr(r, "endpoint", None): r for r in errors._routes(getattr(self.app, "routes", []))}
        return {
            (method, collection, keyed): _Route(handler, by_endpoint[handler], model, keyed)
            for (method, collection, keyed), (handler, model) in _HANDLERS.items()
        }

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        # Standalone (without the instrumentation layer, which calls `serve` itself): no body limit.
        served = await self.serve(scope, receive, send, None) if scope["type"] == "http" else None
        if not isinstance(served, int):
            await self.app(scope, served or receive, send)

    async def serve(
        self, scope: Scope, receive: Receive, send: Send, max_body_bytes: int | None
    ) -> int | Receive | None:
        """Answer an HTTP request and return the status sent; or send nothing and return what
        FastAPI is to answer it with: None (the request's own receive) or, once the body was
        read, a receive that replays it. The match and the checks share one frame with the
        response: every frame of the chain is resumed again when Redis answers."""
        match = _PATH.match(scope["path"]) if self.enabled and not scope.get("root_path") else None
        if match is None:
            return None
        user_id, conversation_id, collection, key = match.groups()
        route = self.routes.get((scope["method"], collection, key is not None))
        if route is None:
            return None
        if len(user_id) > MAX_ID_CHARS or len(conversation_id) > MAX_ID_CHARS:
            return None
        if key is not None and (len(key) > MAX_KEY_CHARS or is_blank(key)):
            return None
        authorization = content_type = None
        for name, value in scope["headers"]:
            if name == b"authorization" and authorization is None:
                authorization = value
            elif name == b"content-type" and content_type is None:
                content_type = value
        rt = self.runtime
        if authorization is None or rt is None:
            return None
        tenant = rt.tokens.tenant_for_authorization(authorization)
        if tenant is None:
            return None
        args: list[Any] = [Caller(rt, tenant), user_id, conversation_id]
        if route.takes_key:
            args.append(key)
        query: bytes = scope.get("query_string", b"")
        if route.takes_limit:
            if query:
                limit = _LIMIT.match(query)
                if limit is None:
                    return None
                args.append(int(limit.group(1)))
        elif query:
            return None
        if route.body_model is not None:
            if content_type != b"application/json":
                return None
            try:
                body = await _read_body(receive, max_body_bytes)
            except errors.BodyTooLarge as exc:
                too_large = errors.body_too_large_response(exc)
                await too_large(scope, receive, send)
                return too_large.status_code
            try:
                args.append(route.body_model.model_validate_json(body))
            except ValidationError:
                return _replay(body, receive)
        scope["route"] = route.route
        if tracing(self.tracer_provider):
            return await self._traced(route, args, scope, send)
        response = await _answer(route, args, scope)
        await _send(response, send)
        return response.status_code

    async def _traced(self, route: _Route, args: list[Any], scope: Scope, send: Send) -> int:
        """The request under the server span FastAPI's telemetry would have started and ended."""
        provider = self.tracer_provider or trace.get_tracer_provider()
        if self._tracer is None or self._tracer[0] is not provider:
            self._tracer = (provider, provider.get_tracer(*_SPAN_SCOPE))
        headers = {name.decode("latin-1"): value.decode("latin-1") for name, value in scope["headers"]}
        parent = propagate.extract(headers)
        method = scope["method"]
        attributes: dict[str, Any] = {
            "url.scheme": scope.get("scheme", "http"),
            "http.request.method": method,
            "network.protocol.version": scope.get("http_version", "1.1"),
            **_server_attributes(headers.get("host"), scope),
            "url.path": scope["path"],
            "http.route": route.template,
        }
        if scope.get("query_string"):
            # Only `limit=<digits>` gets here: nothing to redact.
            attributes["url.query"] = scope["query_string"].decode("latin-1")
        span = self._tracer[1].start_span(route.span_name, context=parent, kind=SpanKind.SERVER, attributes=attributes)
        try:
            with trace.use_span(span, end_on_exit=False, record_exception=False, set_status_on_exception=False):
                response = await _answer(route, args, scope)
                span.set_attribute("http.response.status_code", response.status_code)
                if response.status_code >= 500:
                    span.set_attribute("error.type", str(response.status_code))
                    span.set_status(StatusCode.ERROR)
                await _send(response, send)
        finally:
            span.end()
        return response.status_code


async def _answer(route: _Route, args: list[Any], scope: Scope) -> Response:
    try:
        return await route.handler(*args)
    except MemoryCoreError as exc:
        return errors.memory_error_response(exc)
    except Exception as exc:
        return errors.unexpected_response(Request(scope), exc)


async def _send(response: Response, send: Send) -> None:
    # What `Response.__call__` sends, without its background-task and pathsend checks: these
    # routes' responses have neither.
    await send({"type": "http.response.start", "status": response.status_code, "headers": response.raw_headers})
    await send({"type": "http.response.body", "body": response.body})


def _server_attributes(host: str | None, scope: Scope) -> dict[str, Any]:
    """`server.address` and `server.port` as FastAPI's request spans have them: from the Host
    header, else the socket the server listens on."""
    if host is None:
        address, port = scope.get("server") or (None, None)
    else:
        try:
            url = urlsplit("//" + host)
            address, port = url.hostname, url.port
        except ValueError:
            return {}
        if url.username is not None or url.path or url.query or url.fragment:
            return {}
        if port is None:
            port = 443 if scope.get("scheme") == "https" else 80
    if address is None:
        return {}
    return {"server.address": address} if port is None else {"server.address": address, "server.port": port}


async def _read_body(receive: Receive, max_bytes: int | None) -> bytes:
    """The request body; more than `max_bytes` raises BodyTooLarge, as the instrumentation
    layer's receive does for FastAPI (the Content-Length it declared was checked there)."""
    chunks = []
    size = 0
    while True:
        message = await receive()
        if message["type"] != "http.request":
            break
        chunk = message.get("body", b"")
        size += len(chunk)
        if max_bytes is not None and size > max_bytes:
            raise errors.BodyTooLarge(max_bytes)
        chunks.append(chunk)
        if not message.get("more_body", False):
            break
    return b"".join(chunks)


def _replay(body: bytes, receive: Receive) -> Receive:
    """A receive that hands out the body already read, then the rest of the connection's messages."""
    sent = False

    async def replayed() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replayed
