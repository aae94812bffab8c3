"""`create_app()`: the FastAPI app wrapped in the instrumentation layer.

The lifespan opens one MemoryClients for the process (unless one is handed in, as tests do)
and closes it at shutdown; uvicorn runs shutdown only after in-flight requests drained.
"""

from __future__ import annotations

import asyncio
import gc
import logging
from collections.abc import AsyncIterator, Iterator, MutableMapping
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request, Response
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse
from opentelemetry import trace
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from .. import metrics
from ..clients import MemoryClients
from ..health import Readiness, check_stores, pool_usage, readiness
from ..settings import Settings
from ..stores.graph import background_projector
from . import errors
from .asgi import Instrumented
from .auth import TokenTable, watch_tokens_file
from .config import ServiceSettings
from .fast_path import WorkingFastPath
from .routes import BEARER_SCHEME, router
from .runtime import Runtime

log = logging.getLogger(__name__)


def create_app(
    settings: Settings | None = None,
    service_settings: ServiceSettings | None = None,
    *,
    clients: MemoryClients | None = None,
    tokens: TokenTable | None = None,
    tracer_provider: trace.TracerProvider | None = None,
) -> Instrumented:
    """The ASGI app. `clients` given: the caller owns them; otherwise the lifespan connects and closes its own."""
    service_settings = service_settings or ServiceSettings()
    tokens = tokens if tokens is not None else TokenTable.load(service_settings)
    if not len(tokens):
        log.warning(
            "no bearer tokens configured (MEMSTACK_TOKENS_FILE or MEMSTACK_TOKENS; `memstack serve` also reads "
            "$MEMSTACK_HOME/tokens): every /v1 request will get 401; make one with `memstack token create --tenant NAME`"
        )
    tracer = (tracer_provider or trace.get_tracer_provider()).get_tracer("memory_core.service")

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        own = clients is None
        live = clients or await MemoryClients.connect(settings or Settings())
        # The fast path holds the runtime too: reading `app.state.runtime` goes through
        # Starlette's State.__getattr__ after a failed lookup, about 2 us per request.
        fast_path.runtime = app.state.runtime = Runtime(live, tokens, tracer, service_settings, tracer_provider)

        def source() -> Iterator[tuple[str, str, float]]:
            return pool_usage(live)

        metrics.pool_collector.sources.append(source)
        # Everything allocated at startup lives as long as the process: keep it out of the
        # collector's generations, so full collections stay short on the request path.
        gc.collect()
        gc.freeze()
        watcher = asyncio.create_task(watch_tokens_file(tokens, service_settings))
        try:
            yield
        finally:
            fast_path.runtime = None
            watcher.cancel()
            metrics.pool_collector.sources.remove(source)
            await _flush_graph_projection(live)
            if own:
                await live.close()
                log.info("pools closed")

    app = FastAPI(
        title="memstack memory service",
        version=metrics.build_version(),
        description="Agent memory over Redis (working), Postgres + pgvector (episodic, semantic, procedural) "
        "and Neo4j (graph). Authenticate with `Authorization: Bearer <token>`.",
        lifespan=lifespan,
        # FastAPI's own request spans (semantic conventions, W3C context from the caller); a
        # no-op while no tracer provider is configured (None: the global one). Its OTel metrics
        # stay off because the Prometheus metrics of memory_core.metrics are the ones dashboards
        # and alerts use; its per-operation spans (dependency solving, serialization) stay off
        # for their cost on the hot path: the backend spans of Runtime.run show where a
        # request's time goes. Prometheus scrapes are no requests of a user: they make no traces.
        telemetry={
            "tracer_provider": tracer_provider,
            "metrics": False,
            "logs": False,
            "operation_spans": False,
            "exclude": _scrape,
        },
    )
    errors.install(app)
    app.include_router(router)

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
            schema.setdefault("components", {})["securitySchemes"] = BEARER_SCHEME
            for path, operations in schema["paths"].items():
                if path.startswith(router.prefix + "/"):
                    for operation in operations.values():
                        operation["security"] = [{name: []} for name in BEARER_SCHEME]
            errors.document_unsupported_media_type(schema)
            add_links(schema)
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]  # FastAPI's documented way to customise the schema

    # HEAD answers as GET does (uvicorn leaves the body out), for probes that send HEAD; it is
    # not an operation of the API, so the OpenAPI document does not list it.
    @app.get("/health", tags=["operations"], responses=errors.documented(400, 413, 500))
    @app.head("/health", include_in_schema=False)
    async def health() -> dict[str, str]:
        """Liveness: the process answers. Touches no store."""
        return {"status": "ok"}

    @app.get(
        "/ready",
        tags=["operations"],
        response_model=Readiness,
        responses={
            503: {"model": Readiness, "description": "A required store is down"},
            **errors.documented(400, 413, 500),
        },
    )
    @app.head("/ready", include_in_schema=False)
    async def ready(request: Request) -> JSONResponse:
        """Readiness: Redis, Postgres and Neo4j each answer within a short timeout."""
        rt: Runtime = request.app.state.runtime
        checks = await check_stores(rt.clients, service_settings.ready_timeout_s)
        required = ("redis", "postgres", "neo4j") if service_settings.ready_requires_neo4j else ("redis", "postgres")
        status, body = readiness(checks, required)
        return JSONResponse(body, status_code=status)

    @app.get(METRICS_PATH, include_in_schema=False)
    async def prometheus_metrics() -> Response:
        return Response(generate_latest(metrics.REGISTRY), media_type=CONTENT_TYPE_LATEST)

    fast_path = WorkingFastPath(app, tracer_provider)
    return Instrumented(fast_path, service_settings.max_body_bytes)


METRICS_PATH = "/metrics"


async def _flush_graph_projection(clients: MemoryClients) -> None:
    """Project the rows the background projector holds (they may wait out MEMORY_GRAPH_LINGER_S)
    before the clients close, rather than leave them to the worker's outbox replay. Bounded by
    what one projection batch may take (`project_now`'s Neo4j timeout): a Neo4j that is down
    or hangs delays shutdown by that at most, and the rows stay in the outbox for the worker."""
    timeout_s = 2 * clients.settings.neo4j_connect_timeout_s
    try:
        await asyncio.wait_for(background_projector(clients).flush(), timeout_s)
    except TimeoutError:
        log.warning("graph projection not flushed within %g s: the worker's outbox replay projects the rest", timeout_s)


def _scrape(scope: MutableMapping[str, Any]) -> bool:
    return bool(scope.get("path") == METRICS_PATH)


_SAME_USER = {"user_id": "$request.path.user_id"}
_SAME_KEY = {**_SAME_USER, "conversation_id": "$request.path.conversation_id", "key": "$request.path.key"}
# OpenAPI links: which answer names what a later operation reads or changes, so that clients
# and stateful API testers can follow a created item to the operations on it.
# (source path, method, status) -> [(target path, method, parameters)]
LINKS: dict[tuple[str, str, str], list[tuple[str, str, dict[str, str]]]] = {
    ("/v1/goals/{user_id}", "post", "201"): [
        ("/v1/goals/{user_id}/{goal_id}", "patch", {**_SAME_USER, "goal_id": "$response.body#/id"}),
    ],
    ("/v1/procedural/{user_id}/strategies", "post", "201"): [
        (
            "/v1/procedural/{user_id}/strategies/{strategy_id}/outcomes",
            "post",
            {**_SAME_USER, "strategy_id": "$response.body#/id"},
        ),
    ],
    ("/v1/working/{user_id}/{conversation_id}/context/{key}", "put", "204"): [
        ("/v1/working/{user_id}/{conversation_id}/context/{key}", "get", _SAME_KEY),
        ("/v1/working/{user_id}/{conversation_id}/context/{key}", "delete", _SAME_KEY),
    ],
    ("/v1/spaces/{user_id}/{space}", "put", "204"): [
        ("/v1/spaces/{user_id}/{space}/grants/{grantee}", "put", {**_SAME_USER, "space": "$request.path.space"}),
    ],
}


def add_links(schema: dict[str, Any]) -> None:
    paths = schema["paths"]
    for (path, method, status), targets in LINKS.items():
        response = paths[path][method]["responses"][status]
        response["links"] = {
            paths[target][target_method]["operationId"]: {
                "operationId": paths[target][target_method]["operationId"],
                "parameters": parameters,
            }
            for target, target_method, parameters in targets
        }


def from_environment() -> Instrumented:
    """The uvicorn factory `memstack serve` runs, once per worker process: JSON logs at the level
    `serve` set up (see `configured_log_level`), tracing from OTEL_* variables, settings from the
    environment."""
    from ..telemetry import configured_log_level, setup_json_logging, setup_tracing

    setup_json_logging(configured_log_level())
    setup_tracing("memstack-api")
    return create_app()
