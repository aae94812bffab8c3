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
Metrics are the instrumentation layer's (the route is set on the scope, as the router does);
the request span is FastAPI's, so while a tracer provider is configured every request goes
through FastAPI.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from typing import Any

from opentelemetry import trace
from pydantic import BaseModel, ValidationError
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..errors import MemoryCoreError
from ..validation import MAX_ID_CHARS
from . import errors, routes
from .routes import MAX_KEY_CHARS, Caller
from .runtime import Runtime, tracing

_PATH = re.compile(r"/v1/working/([^/]+)/([^/]+)/(context|turns|thoughts)(?:/([^/]+))?\Z")
_LIMIT = re.compile(rb"limit=([1-9][0-9]{0,5})\Z")
Handler = Callable[..., Awaitable[Response]]


class _Route:
    __slots__ = ("body_model", "handler", "route", "takes_key", "takes_limit")

    def __init__(self, handler: Handler, route: BaseRoute, body_model: type[BaseModel] | None, takes_key: bool):
        self.handler = handler
        self.route = route
        self.body_model = body_model
        self.takes_key = takes_key
        self.takes_limit = handler in (routes.get_working_turns, routes.get_thoughts)


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

    def __getattr__(self, name: str) -> Any:
        return getattr(self.app, name)

    def _routes(self) -> dict[tuple[str, str, bool], _Route]:
        by_endpoint = {getattr(r, "endpoint", None): r for r in errors._routes(getattr(self.app, "routes", []))}
        return {
            (method, collection, keyed): _Route(handler, by_endpoint[handler], model, keyed)
            for (method, collection, keyed), (handler, model) in _HANDLERS.items()
        }

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and not scope.get("root_path"):
            match = _PATH.match(scope["path"])
            if match is not None and not tracing(self.tracer_provider):
                user_id, conversation_id, collection, key = match.groups()
                route = self.routes.get((scope["method"], collection, key is not None))
                if route is not None and await self._serve(route, scope, receive, send, user_id, conversation_id, key):
                    return
        await self.app(scope, receive, send)

    async def _serve(
        self,
        route: _Route,
        scope: Scope,
        receive: Receive,
        send: Send,
        user_id: str,
        conversation_id: str,
        key: str | None,
    ) -> bool:
        """Answer the request, or return False (nothing sent) for FastAPI to answer it."""
        if len(user_id) > MAX_ID_CHARS or len(conversation_id) > MAX_ID_CHARS:
            return False
        if key is not None and len(key) > MAX_KEY_CHARS:
            return False
        authorization = content_type = None
        for name, value in scope["headers"]:
            if name == b"authorization" and authorization is None:
                authorization = value
            elif name == b"content-type" and content_type is None:
                content_type = value
        if authorization is None:
            return False
        rt: Runtime = self.app.state.runtime  # type: ignore[attr-defined]
        scheme, _, token = authorization.decode("latin-1").partition(" ")
        if not token or scheme.lower() != "bearer":
            return False
        tenant = rt.tokens.tenant_for(token.strip())
        if tenant is None:
            return False
        args: list[Any] = [Caller(rt, tenant), user_id, conversation_id]
        if route.takes_key:
            args.append(key)
        query: bytes = scope.get("query_string", b"")
        if route.takes_limit:
            if query:
                limit = _LIMIT.match(query)
                if limit is None:
                    return False
                args.append(int(limit.group(1)))
        elif query:
            return False
        if route.body_model is not None:
            if content_type != b"application/json":
                return False
            try:
                body = await _read_body(receive)
            except errors.BodyTooLarge as exc:
                await errors.body_too_large_response(exc)(scope, receive, send)
                return True
            try:
                args.append(route.body_model.model_validate_json(body))
            except ValidationError:
                await self.app(scope, _replay(body, receive), send)
                return True
        scope["route"] = route.route
        try:
            response = await route.handler(*args)
        except MemoryCoreError as exc:
            response = errors.memory_error_response(exc)
        except Exception as exc:
            response = errors.unexpected_response(Request(scope), exc)
        await response(scope, receive, send)
        return True


async def _read_body(receive: Receive) -> bytes:
    chunks = []
    while True:
        message = await receive()
        if message["type"] != "http.request":
            break
        chunks.append(message.get("body", b""))
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
