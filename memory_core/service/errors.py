"""How failures become HTTP answers. Caller mistakes are 4xx with a message naming the field;
a store that is down or slow is 503 naming the store; no input produces a 5xx."""
from __future__ import annotations

import asyncio
import logging

import psycopg
import psycopg_pool
from fastapi import FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from neo4j.exceptions import ClientError as Neo4jClientError
from neo4j.exceptions import Neo4jError, ServiceUnavailable, SessionExpired
from redis.exceptions import RedisError

from ..stores.working import WorkingMemoryFull

log = logging.getLogger(__name__)


class BackendUnavailable(HTTPException):
    def __init__(self, store: str, reason: str):
        super().__init__(503, detail=f"{store} is unavailable: {reason}", headers={"Retry-After": "1"})
        self.store = store


class BodyTooLarge(HTTPException):
    """Raised while the body is read; an HTTPException so FastAPI passes it through unchanged."""

    def __init__(self, limit: int):
        super().__init__(413, detail=f"request body exceeds {limit} bytes")


def _reason(exc: BaseException) -> str:
    text = str(exc).splitlines()[0] if str(exc) else ""
    return f"{type(exc).__name__}: {text}"[:300] if text else type(exc).__name__


def as_http_error(exc: BaseException, store: str, operation: str = "operation") -> HTTPException | None:
    """The HTTP error for a store exception, or None when it is not one we know.
    `store` names the store of the operation, for failures that do not say which they are."""
    if isinstance(exc, RedisError):
        return BackendUnavailable("redis", _reason(exc))
    if isinstance(exc, (psycopg_pool.PoolTimeout, psycopg_pool.PoolClosed)):
        return BackendUnavailable("postgres", _reason(exc))
    if isinstance(exc, psycopg.Error):
        sqlstate = getattr(exc, "sqlstate", None) or ""
        # Class 22 (data exception) and 54 (program limit exceeded): what the caller sent.
        if isinstance(exc, psycopg.DataError) or sqlstate.startswith("54"):
            return HTTPException(422, detail=f"invalid value: {_reason(exc)}")
        if isinstance(exc, psycopg.IntegrityError):
            return HTTPException(409, detail=f"conflict: {_reason(exc)}")
        return BackendUnavailable("postgres", _reason(exc))
    if isinstance(exc, (ServiceUnavailable, SessionExpired)):
        return BackendUnavailable("neo4j", _reason(exc))
    if isinstance(exc, Neo4jClientError):
        return HTTPException(422, detail=f"invalid value: {_reason(exc)}")
    if isinstance(exc, Neo4jError):
        return BackendUnavailable("neo4j", _reason(exc))
    if isinstance(exc, (TimeoutError, asyncio.TimeoutError)):
        return BackendUnavailable(store, f"{operation} timed out")
    if isinstance(exc, OSError):
        return BackendUnavailable(store, _reason(exc))
    return None


def _field(loc: tuple) -> str:
    parts = [str(p) for p in loc if p not in ("body",)] or [str(p) for p in loc]
    return ".".join(parts)


async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
    errors = exc.errors()
    if any(e.get("type") == "json_invalid" for e in errors):
        reason = next(e for e in errors if e.get("type") == "json_invalid").get("ctx", {}).get("error", "")
        return JSONResponse({"detail": f"malformed JSON body: {reason}".rstrip(": ")}, status_code=400)
    described = [{"field": _field(tuple(e["loc"])), "message": e["msg"]} for e in errors]
    detail = "; ".join(f"{d['field']}: {d['message']}" for d in described)
    return JSONResponse({"detail": detail, "errors": described}, status_code=422)


async def _value_error(request: Request, exc: ValueError) -> JSONResponse:
    # memory_core raises ValueError for input it refuses; its messages name the field.
    return JSONResponse({"detail": str(exc)}, status_code=422)


async def _permission_error(request: Request, exc: PermissionError) -> JSONResponse:
    return JSONResponse({"detail": str(exc)}, status_code=403)


async def _working_full(request: Request, exc: WorkingMemoryFull) -> JSONResponse:
    return JSONResponse({"detail": str(exc)}, status_code=409)


def install(app: FastAPI) -> None:
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(WorkingMemoryFull, _working_full)
    app.add_exception_handler(ValueError, _value_error)
    app.add_exception_handler(PermissionError, _permission_error)
