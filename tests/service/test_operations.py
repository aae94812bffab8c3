"""/health, /ready, /metrics, the OpenAPI document, request and backend spans, JSON logs."""

from __future__ import annotations

import io
import json
import logging
import os

from opentelemetry.trace import SpanKind

from memory_core import metrics
from memory_core.service.app import from_environment
from memory_core.telemetry import JsonFormatter, setup_json_logging

W = "/v1/working/user-1/conv-1"


async def test_health_needs_no_token_and_no_store(api):
    r = await api.client.get("/health")
    assert r.status_code == 200 and r.json() == {"status": "ok"}


async def test_ready_checks_every_store(api):
    r = await api.client.get("/ready")
    assert r.status_code == 200
    assert r.json() == {"status": "ready", "checks": {"redis": "ok", "postgres": "ok", "neo4j": "ok"}}


async def test_metrics_expose_every_declared_metric_after_traffic(api):
    await api.call("PUT", f"{W}/context/k", json={"value": 1})
    await api.call("GET", f"{W}/context/k")
    await api.call("GET", "/no/such/path")
    text = (await api.client.get("/metrics")).text
    # The worker's job durations and backlog gauges are the worker's to export (its probe server).
    worker_only = {metrics.WORKER_JOB_DURATION} | {family.name for family in metrics.worker_gauges.describe()}
    assert worker_only and worker_only < set(metrics.ALL_METRICS)
    for name in set(metrics.ALL_METRICS) - worker_only:
        assert f"\n{name}" in text or text.startswith(name) or f"{name}_bucket" in text, name
    route = "/v1/working/{user_id}/{conversation_id}/context/{key}"
    assert f'{metrics.HTTP_REQUEST_DURATION}_count{{method="GET",route="{route}",status="200"}}' in text
    assert f'{metrics.HTTP_REQUEST_DURATION}_bucket{{le="0.00025",method="GET",route="{route}",status="200"}}' in text
    assert 'route="unmatched",status="404"' in text
    assert (
        f'{metrics.BACKEND_OPERATION_DURATION}_count{{operation="get_working_context",outcome="ok",store="redis"}}'
        in text
    )
    assert f'{metrics.POOL_CONNECTIONS}{{state="max",store="postgres"}}' in text
    assert f"{metrics.BUILD_INFO}{{python=" in text
    assert f"{metrics.HTTP_REQUESTS_IN_FLIGHT} 1.0" in text  # the scrape itself


async def test_openapi_lists_the_working_memory_routes(api):
    paths = (await api.client.get("/openapi.json")).json()["paths"]
    assert set(paths[W.replace("user-1", "{user_id}").replace("conv-1", "{conversation_id}") + "/context/{key}"]) == {
        "put",
        "get",
        "delete",
    }
    assert set(paths["/v1/working/{user_id}/{conversation_id}/context"]) == {"get", "delete"}
    assert set(paths["/v1/working/{user_id}/{conversation_id}/turns"]) == {"post", "get"}
    assert (
        "bearer" in json.dumps((await api.client.get("/openapi.json")).json()["components"]["securitySchemes"]).lower()
    )


async def test_request_and_backend_spans(api, span_exporter):
    span_exporter.clear()
    r = await api.call(
        "GET", f"{W}/context/k", headers={"traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"}
    )
    assert r.status_code == 404
    spans = {s.name: s for s in span_exporter.get_finished_spans()}
    server = spans["GET /v1/working/{user_id}/{conversation_id}/context/{key}"]
    backend = spans["redis get_working_context"]
    assert server.kind == SpanKind.SERVER and backend.kind == SpanKind.CLIENT
    assert server.attributes["http.route"] == "/v1/working/{user_id}/{conversation_id}/context/{key}"
    assert server.attributes["http.response.status_code"] == 404
    assert backend.parent.span_id == server.context.span_id
    assert format(server.context.trace_id, "032x") == "0af7651916cd43dd8448eb211c80319c"  # joined the caller's trace


def test_json_logs_carry_the_trace_id(tracer_provider):
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("test.json")
    logger.addHandler(handler)
    try:
        with tracer_provider.get_tracer("t").start_as_current_span("work") as span:
            logger.warning("inside %s", "span")
        logger.warning("outside")
    finally:
        logger.removeHandler(handler)
    inside, outside = (json.loads(line) for line in stream.getvalue().splitlines())
    assert inside["message"] == "inside span" and inside["trace_id"] == format(span.get_span_context().trace_id, "032x")
    assert "trace_id" not in outside


async def test_head_answers_health_and_ready_as_get_does(api):
    for path in ("/health", "/ready"):
        get, head = await api.client.get(path), await api.client.head(path)
        assert head.status_code == get.status_code == 200, path
        assert head.headers["content-type"] == get.headers["content-type"]
    schema = (await api.client.get("/openapi.json")).json()
    assert set(schema["paths"]["/health"]) == set(schema["paths"]["/ready"]) == {"get"}


def test_the_service_process_keeps_the_log_level_serve_set(monkeypatch, caplog):
    # `memstack serve --log-level warning` sets logging up before uvicorn loads the app, in
    # this process and (through the environment) in the worker processes uvicorn spawns.
    monkeypatch.setenv("MEMSTACK_TOKENS", "")
    monkeypatch.delenv("MEMSTACK_LOG_LEVEL", raising=False)
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    try:
        setup_json_logging("WARNING")
        assert os.environ["MEMSTACK_LOG_LEVEL"] == "WARNING"
        root.setLevel(logging.DEBUG)  # a spawned worker's root logger, not set up yet
        from_environment()
        assert root.level == logging.WARNING
        monkeypatch.delenv("MEMSTACK_LOG_LEVEL")
        from_environment()  # run by uvicorn alone: INFO, as before
        assert root.level == logging.INFO
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)
