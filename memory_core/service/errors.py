"""How failures become HTTP answers, all with one body shape, `ErrorBody`.

memory_core's refusals map by class: invalid input 422, not found 404, forbidden 403, conflict
409, a store unavailable or an unmigrated schema 503. A request FastAPI cannot parse is 422 with
one entry per field (400 when the body is not JSON at all, 415 when its Content-Type does not say
JSON). Anything else is a bug: a 500 whose body carries a request id that the log line with the
traceback carries too.
"""

from __future__ import annotations

import json
import logging
import re
import uuid
from collections.abc import Iterable, Iterator
from typing import Any

from fastapi import FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import BaseRoute, Match

from ..errors import (
    Conflict,
    Forbidden,
    InvalidInput,
    MemoryCoreError,
    NotFound,
    SchemaNotMigrated,
    StoreUnavailable,
)

log = logging.getLogger(__name__)

REQUEST_ID_HEADER = "X-Request-Id"
# A caller's request id is echoed only when it is short and plain, so it cannot forge log lines.
_CALLER_REQUEST_ID = re.compile(r"[A-Za-z0-9._-]{1,64}\Z")
# A store that failed is usually back within a second (a restart, a failover, a full pool).
RETRY_AFTER = {"Retry-After": "1"}


class FieldError(BaseModel):
    field: str = Field(description="The field, dotted (`query.limit`, `aliases.0`)")
    message: str


class ErrorBody(BaseModel):
    """Every error answer of the service has this shape."""

    detail: str = Field(description="What was refused or failed, naming the field or the store")
    errors: list[FieldError] | None = Field(None, description="One entry per invalid field (422 only)")
    request_id: str | None = Field(None, description="Quoted in the server log line of this failure (500 only)")


class _ErrorResponse(JSONResponse):
    # JSONResponse's encoding with an encoder built once: `json.dumps` with options builds a
    # new one per call. A missing working-memory key (404) is a common answer of the hot routes.
    _encode = json.JSONEncoder(ensure_ascii=False, allow_nan=False, separators=(",", ":")).encode

    def render(self, content: Any) -> bytes:
        return self._encode(content).encode("utf-8")


def _error(status: int, detail: str, headers: dict[str, str] | None = None, **extra: Any) -> JSONResponse:
    # A body of `detail` alone is ErrorBody's dump without validating a model for it.
    body = ErrorBody(detail=detail, **extra).model_dump(exclude_none=True) if extra else {"detail": detail}
    return _ErrorResponse(body, status_code=status, headers=headers)


class BodyTooLarge(HTTPException):
    """Raised while the body is read; an HTTPException so FastAPI passes it through unchanged."""

    def __init__(self, limit: int):
        super().__init__(413, detail=f"request body exceeds {limit} bytes")


# memory_core's refusals, most specific first.
STATUS: tuple[tuple[type[MemoryCoreError], int], ...] = (
    (InvalidInput, 422),
    (NotFound, 404),
    (Forbidden, 403),
    (Conflict, 409),
    (StoreUnavailable, 503),
    (SchemaNotMigrated, 503),
)


def status_of(exc: MemoryCoreError) -> int:
    for cls, status in STATUS:
        if isinstance(exc, cls):
            return status
    return 500


# Documented on every operation: (status, when).
_DOCUMENTED = (
    (
        400,
        "The body is not JSON, or Content-Length is not a number; a request the HTTP server cannot parse at"
        " all (a request line over its size limit, say) gets its plain-text answer before the app sees it",
    ),
    (401, "No bearer token, or one the service does not know"),
    (403, "The caller may not do this (another user's conversation, a shared space without a grant)"),
    (404, "An id or key the request names does not exist for this tenant"),
    (409, "The request contradicts the current state (a full working context, a space owned by another agent)"),
    (413, "The body is larger than MEMSTACK_MAX_BODY_BYTES"),
    (422, "A field is invalid; `errors` lists each one when the request could not be parsed"),
    (500, "A bug; `request_id` finds the traceback in the service log"),
    (503, "A store is down, too slow or not migrated; retry after `Retry-After` seconds or run `memstack migrate`"),
)


# A body is read as JSON when its Content-Type is application/json, with parameters
# (`; charset=utf-8`) or as a structured suffix (`application/merge-patch+json`): FastAPI's
# rule. Any other type, or none (FastAPI's strict default, which keeps a browser's form posts
# from passing as JSON), is 415, documented on the operations that take a body.
JSON_MEDIA_TYPE = "application/json"
UNSUPPORTED_MEDIA_TYPE = 415


def unsupported_media_type(content_type: str | None) -> JSONResponse:
    if not content_type:
        return _error(UNSUPPORTED_MEDIA_TYPE, f"the request body has no Content-Type; send it as {JSON_MEDIA_TYPE}")
    shown = content_type if len(content_type) <= 100 else content_type[:100] + "..."
    return _error(
        UNSUPPORTED_MEDIA_TYPE, f"unsupported Content-Type {shown!r}; send the request body as {JSON_MEDIA_TYPE}"
    )


def document_unsupported_media_type(schema: dict[str, Any]) -> None:
    """Add 415, with `ErrorBody`, to every operation of the OpenAPI `schema` that takes a body."""
    answer = {
        "description": f"The body's Content-Type is missing or not JSON; send {JSON_MEDIA_TYPE}",
        "content": {JSON_MEDIA_TYPE: {"schema": {"$ref": f"#/components/schemas/{ErrorBody.__name__}"}}},
    }
    for operations in schema["paths"].values():
        for operation in operations.values():
            if "requestBody" in operation:
                operation["responses"][str(UNSUPPORTED_MEDIA_TYPE)] = answer


def documented(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses` for these statuses (all when none are named), each with `ErrorBody`."""
    return {
        status: {"model": ErrorBody, "description": when, **_EXTRA_CONTENT.get(status, {})}
        for status, when in _DOCUMENTED
        if not statuses or status in statuses
    }


# uvicorn answers a request it cannot parse with its own text/plain 400.
_EXTRA_CONTENT: dict[int, dict[str, Any]] = {400: {"content": {"text/plain": {"schema": {"type": "string"}}}}}


def _field(loc: tuple[Any, ...]) -> str:
    parts = [str(p) for p in loc if p != "body"] or [str(p) for p in loc]
    return ".".join(parts)


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    if isinstance(exc.body, bytes) and exc.body:
        # FastAPI hands a body it did not parse as JSON, because its Content-Type is not JSON
        # (or missing), to the model as bytes, which the model refuses: the type is the mistake.
        return unsupported_media_type(request.headers.get("content-type"))
    errors = exc.errors()
    malformed = next((e for e in errors if e.get("type") == "json_invalid"), None)
    if malformed is not None:
        reason = malformed.get("ctx", {}).get("error", "")
        return _error(400, f"malformed JSON body: {reason}".rstrip(": "))
    described = [{"field": _field(tuple(e["loc"])), "message": e["msg"]} for e in errors]
    detail = "; ".join(f"{d['field']}: {d['message']}" for d in described)
    return _error(422, detail, errors=described)


def memory_error_response(exc: MemoryCoreError) -> JSONResponse:
    status = status_of(exc)
    return _error(status, str(exc), RETRY_AFTER if status == 503 else None)


async def _memory_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, MemoryCoreError)
    return memory_error_response(exc)


def body_too_large_response(exc: BodyTooLarge) -> JSONResponse:
    return _error(exc.status_code, str(exc.detail))


def _allowed_methods(request: Request) -> str:
    """Every method some route serves at this path. Starlette's 405 names only the methods of
    the first route matching the path, and FastAPI makes one route per method."""
    methods: set[str] = set()
    for route in _routes(request.app.router.routes):
        match, _ = route.matches({**request.scope, "method": "GET"})
        if match != Match.NONE:
            methods |= getattr(route, "methods", None) or set()
    return ", ".join(sorted(methods))


def _routes(routes: Iterable[BaseRoute]) -> Iterator[BaseRoute]:
    """The routes, with those of included routers (FastAPI keeps each router whole) spelled out."""
    for route in routes:
        included = getattr(route, "original_router", None)
        if included is not None:
            yield from _routes(included.routes)
        else:
            yield route


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    # Starlette's own (unknown path 404, 405) as well as the routes' FastAPI HTTPExceptions.
    assert isinstance(exc, StarletteHTTPException)
    headers = dict(exc.headers) if exc.headers else {}
    if exc.status_code == 405:
        headers["Allow"] = _allowed_methods(request)
    return _error(exc.status_code, str(exc.detail), headers or None)


def request_id(request: Request) -> str:
    given = request.headers.get(REQUEST_ID_HEADER, "")
    return given if _CALLER_REQUEST_ID.match(given) else uuid.uuid4().hex


async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
    return unexpected_response(request, exc)


def unexpected_response(request: Request, exc: Exception) -> JSONResponse:
    rid = request_id(request)
    log.error("unexpected error in %s %s (request id %s)", request.method, request.url.path, rid, exc_info=exc)
    return _error(500, f"internal error; request id {rid}", {REQUEST_ID_HEADER: rid}, request_id=rid)


def install(app: FastAPI) -> None:
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(MemoryCoreError, _memory_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(Exception, _unexpected)
