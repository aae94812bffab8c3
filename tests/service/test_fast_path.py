"""The working-memory fast path answers exactly as FastAPI does, and hands FastAPI what it
does not serve itself.

Each request goes once through the fast path and once, with the fast path switched off, through
FastAPI, against two conversations that received the same requests before. Status and body must
be equal; with a tracer provider, so must the spans be (name, kind, attributes, status, parent)."""

from __future__ import annotations

import httpx
import pytest
import pytest_asyncio
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from memory_core import MemoryClients, metrics
from memory_core.service import create_app
from memory_core.service.auth import TokenTable, hash_line, new_token
from memory_core.service.fast_path import WorkingFastPath


class CountingApp:
    """The FastAPI app behind the fast path, counting the requests that reach it."""

    def __init__(self, app):
        self.app = app
        self.calls = 0

    def __getattr__(self, name):
        return getattr(self.app, name)

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http":
            self.calls += 1
        await self.app(scope, receive, send)


@pytest_asyncio.fixture
async def fast(request, migrated, tenant_id, service_settings):
    token = new_token()
    clients = await MemoryClients.connect(migrated)
    app = create_app(
        migrated,
        service_settings,
        clients=clients,
        tokens=TokenTable.parse(hash_line(tenant_id, token), "t"),
        tracer_provider=getattr(request, "param", None),
    )
    fast_path = app.app
    assert isinstance(fast_path, WorkingFastPath)
    fast_path.app = CountingApp(fast_path.app)
    try:
        async with app.router.lifespan_context(fast_path.app.app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://memstack") as client:
                yield client, fast_path, {"Authorization": f"Bearer {token}"}
    finally:
        await clients.close()


JSON = {"Content-Type": "application/json"}
# (method, path under the conversation, body, extra headers, served by the fast path)
CASES = [
    ("PUT", "/context/k1", b'{"value": {"a": [1, 2]}, "ttl_seconds": 60, "priority": 2}', JSON, True),
    ("GET", "/context/k1", None, {}, True),
    ("GET", "/context/missing", None, {}, True),
    ("PUT", "/context/k2", b'{"value": null}', JSON, True),
    ("PUT", "/context/k2", b'{"value": 1, "ttl_seconds": 1e12}', JSON, False),
    ("PUT", "/context/k2", b'{"value": 1, "ttl_seconds": 3e8}', JSON, True),
    ("PUT", "/context/k2", b'{"value": 1, "extra": 2}', JSON, False),
    ("PUT", "/context/k2", b'{"value": 1, "priority": "3"}', JSON, False),
    ("PUT", "/context/k2", b'{"value": ', JSON, False),
    ("PUT", "/context/k2", b'{"value": 1}', {"Content-Type": "text/plain"}, False),
    ("PUT", "/context/k2", b'{"value": 1}', {"Content-Type": "application/x-www-form-urlencoded"}, False),
    ("PUT", "/context/k2", b'{"value": 1}', {}, False),
    ("PUT", "/context/k2", b'{"value": 2}', {"Content-Type": "application/json; charset=utf-8"}, False),
    ("POST", "/thoughts", b'{"thought": "hmm"}', {"Content-Type": "text/plain"}, False),
    ("PUT", "/context/" + "k" * 257, b'{"value": 1}', JSON, False),
    ("PUT", "/context/%20", b'{"value": 1}', JSON, False),
    ("GET", "/context/%E3%80%80", None, {}, False),
    ("POST", "/turns", b'{"role": "user", "content": "hello"}', JSON, True),
    ("POST", "/turns", b'{"role": "nobody", "content": "hello"}', JSON, False),
    ("GET", "/turns?limit=5", None, {}, True),
    ("GET", "/turns?limit=0", None, {}, False),
    ("GET", "/turns?limit=99999", None, {}, True),
    ("GET", "/turns?other=1", None, {}, False),
    ("POST", "/thoughts", b'{"thought": "maybe"}', JSON, True),
    ("GET", "/thoughts", None, {}, True),
    ("GET", "/context", None, {}, True),
    ("DELETE", "/context/k1", None, {}, True),
    ("DELETE", "/context/k1", None, {}, True),
    ("GET", "/context/k1", None, {"Authorization": "Bearer mst_unknown"}, False),
    ("GET", "/context/k1", None, {"Authorization": ""}, False),
    ("DELETE", "/context", None, {}, True),
]


def _comparable(response: httpx.Response):
    body = response.json() if response.content else None
    # Turns and thoughts carry the time they were stored: compare their shape, not the clock.
    if isinstance(body, dict):
        for name in ("turn", "turns", "thoughts", "recent_turns", "recent_thoughts"):
            if name in body:
                body[name] = _shape(body[name])
    return response.status_code, body, response.headers.get("www-authenticate"), response.headers.get("retry-after")


def _shape(value):
    if isinstance(value, list):
        return [_shape(v) for v in value]
    if isinstance(value, dict):
        return {k: (v if k in ("role", "content", "thought") else type(v).__name__) for k, v in value.items()}
    return value


def _request_counts() -> dict[tuple[str, ...], float]:
    """The request-duration histogram's count per (method, route, status)."""
    return {
        (sample.labels["method"], sample.labels["route"], sample.labels["status"]): sample.value
        for family in metrics.REGISTRY.collect()
        if family.name == metrics.HTTP_REQUEST_DURATION
        for sample in family.samples
        if sample.name.endswith("_count")
    }


async def test_fast_path_answers_as_fastapi_does(fast):
    client, fast_path, auth = fast
    for method, path, body, headers, served in CASES:
        answers = []
        counted = []
        for conversation, framework in (("c-framework", True), ("c-fast", False)):
            fast_path.enabled = not framework
            before, counts = fast_path.app.calls, _request_counts()
            response = await client.request(
                method, f"/v1/working/u1/{conversation}{path}", content=body, headers={**auth, **headers}
            )
            reached_fastapi = fast_path.app.calls > before
            if not framework:
                assert reached_fastapi is not served, f"{method} {path}: served by the fast path: {not reached_fastapi}"
            answers.append(_comparable(response))
            # The request metric: one more request under the route template and the status sent.
            counted.append({k: v - counts.get(k, 0) for k, v in _request_counts().items() if v != counts.get(k, 0)})
        assert answers[0] == answers[1], f"{method} {path}"
        assert counted[0] == counted[1], f"{method} {path}"
        assert list(counted[1].values()) == [1], f"{method} {path}: {counted[1]}"
        assert next(iter(counted[1]))[2] == str(answers[1][0]), f"{method} {path}"


EXPORTER = InMemorySpanExporter()
TRACED = TracerProvider()
TRACED.add_span_processor(SimpleSpanProcessor(EXPORTER))
PARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


def _span_shapes(spans) -> list[tuple]:
    """What a trace backend shows of each span, ids aside; the parent as its span's name."""
    names = {s.context.span_id: s.name for s in spans}
    return sorted(
        (
            s.name,
            s.kind,
            s.status.status_code,
            s.instrumentation_scope.name,
            format(s.context.trace_id, "032x"),
            names.get(s.parent.span_id, "remote") if s.parent else None,
            tuple(sorted((k, v) for k, v in s.attributes.items() if k != "url.path")),
        )
        for s in spans
    )


@pytest.mark.parametrize("fast", [TRACED], indirect=True)
async def test_traced_requests_take_the_fast_path_with_fastapis_spans(fast):
    client, fast_path, auth = fast
    traced = [
        ("PUT", "/context/k1", b'{"value": 1}', JSON, "redis set_working_context"),
        ("GET", "/context/k1", None, {}, "redis get_working_context"),
        ("GET", "/context/gone", None, {}, "redis get_working_context"),
        ("GET", "/turns?limit=3", None, {}, "redis recent_turns"),
    ]
    for method, path, body, headers, backend_span in traced:
        shapes = []
        for conversation, framework in (("c-framework", True), ("c-fast", False)):
            fast_path.enabled = not framework
            EXPORTER.clear()
            before = fast_path.app.calls
            response = await client.request(
                method,
                f"/v1/working/u1/{conversation}{path}",
                content=body,
                headers={**auth, **headers, "traceparent": PARENT},
            )
            assert response.status_code < 500, response.text
            assert (fast_path.app.calls > before) is framework, f"{method} {path}"
            spans = EXPORTER.get_finished_spans()
            server = next(s for s in spans if s.kind == SpanKind.SERVER)
            backend = next(s for s in spans if s.name == backend_span)
            assert backend.parent.span_id == server.context.span_id
            assert server.attributes["url.path"] == f"/v1/working/u1/{conversation}{path.split('?')[0]}"
            shapes.append(_span_shapes(spans))
        assert shapes[0] == shapes[1], f"{method} {path}"


@pytest.mark.parametrize("fast", [TRACED], indirect=True)
async def test_metrics_scrapes_make_no_spans(fast):
    client, _fast_path, _auth = fast
    EXPORTER.clear()
    assert (await client.get("/metrics")).status_code == 200
    assert (await client.get("/health")).status_code == 200
    assert [s.name for s in EXPORTER.get_finished_spans()] == ["GET /health"]


async def test_a_replaced_token_table_stops_a_token_the_fast_path_served(fast):
    client, fast_path, auth = fast
    url = "/v1/working/u1/c-revoked/context/k1"
    assert (await client.get(url, headers=auth)).status_code == 404  # known token, no value: served
    assert (await client.get(url, headers=auth)).status_code == 404  # the header is remembered now
    fast_path.app.state.runtime.tokens.replace(TokenTable({}))
    response = await client.get(url, headers=auth)
    assert response.status_code == 401 and response.headers["www-authenticate"] == "Bearer"
