"""With Jaeger on (`memstack up --with jaeger`), the service and the worker export their spans
to it: a request's trace is found through Jaeger's query API with the request span and the
backend spans under it, and no token or password in any attribute."""

from __future__ import annotations

import json
import time
import urllib.parse
import urllib.request
import uuid

import httpx
import pytest

from memstack.local.backend import CORE_SERVICES


def jaeger_get(base: str, path: str, **params) -> dict:
    with urllib.request.urlopen(f"{base}{path}?{urllib.parse.urlencode(params)}", timeout=10) as resp:
        return json.load(resp)


def find_trace(base: str, service: str, operation_part: str, timeout: float = 30) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        traces = jaeger_get(base, "/api/traces", service=service, limit=200, lookback="10m")["data"] or []
        for candidate in traces:
            if any(operation_part in span["operationName"] for span in candidate["spans"]):
                return candidate
        assert time.monotonic() < deadline, f"no trace of {service} with a span {operation_part!r} in Jaeger"
        time.sleep(1)


def all_values(candidate: dict) -> list[str]:
    values = []
    for span in candidate["spans"]:
        values += [str(tag["value"]) for tag in span.get("tags", [])]
        for log in span.get("logs", []):
            values += [str(f["value"]) for f in log.get("fields", [])]
    for process in candidate["processes"].values():
        values += [str(tag["value"]) for tag in process.get("tags", [])]
    return values


@pytest.mark.slow
def test_a_request_trace_reaches_jaeger_with_its_backend_spans_and_no_secret(stack, service_and_worker, tmp_path):
    if stack.backend.name != "process":
        pytest.skip("Jaeger runs only with the process backend")
    stack.backend.up(CORE_SERVICES + ("jaeger",))  # builds Jaeger on first use (make setup does it before)
    try:
        check_traces(stack, service_and_worker, tmp_path)
    finally:
        # The session's other tests see the stack as it was: without Jaeger (in memory: nothing to keep).
        stack.backend.kill("jaeger")


def check_traces(stack, service_and_worker, tmp_path):
    endpoints = stack.backend.endpoints()
    jaeger = stack.backend.status()
    jaeger_url = next(row.url for row in jaeger if row.name == "jaeger")
    # Short export delay, so the spans are in Jaeger soon after the requests.
    extra = {**endpoints.env(), "OTEL_BSP_SCHEDULE_DELAY": "200"}
    assert "OTEL_EXPORTER_OTLP_ENDPOINT" in extra
    with service_and_worker(stack, tmp_path, extra) as (url, tokens):
        _tenant, token = tokens.read_text().splitlines()[0].split()
        user, conversation = "u-trace", f"c-{uuid.uuid4().hex[:8]}"
        headers = {"Authorization": f"Bearer {token}"}
        with httpx.Client(base_url=url, headers=headers, timeout=10) as client:
            put = client.put(f"/v1/working/{user}/{conversation}/context/plan", json={"value": {"step": 1}})
            turn = client.post(f"/v1/episodic/{user}/{conversation}/turns", json={"role": "user", "content": "hello"})
        assert put.status_code == 204, put.text
        assert turn.status_code == 201, turn.text

        for operation, backend_span in (("context", "redis set_working_context"), ("turns", "postgres store_turn")):
            candidate = find_trace(jaeger_url, "memstack-api", backend_span)
            spans = {s["spanID"]: s for s in candidate["spans"]}
            backend = next(s for s in spans.values() if s["operationName"] == backend_span)
            parents = [r["spanID"] for r in backend["references"] if r["refType"] == "CHILD_OF"]
            assert parents and parents[0] in spans, f"{backend_span} has no parent span in its trace"
            request = spans[parents[0]]
            while request["references"]:  # up to the root: the request's server span
                request = spans[request["references"][0]["spanID"]]
            kinds = {t["key"]: t["value"] for t in request["tags"]}
            assert kinds.get("span.kind") == "server" and operation in request["operationName"], request

            values = all_values(candidate)
            secrets = [
                token,
                endpoints.neo4j_password,
                endpoints.redis_url.split("@")[0].split(":")[-1],
                endpoints.postgres_url.split("@")[0].split(":")[-1],
            ]
            leaked = [v for v in values for s in secrets if s and s in v]
            assert not leaked, f"a secret in a span attribute of {backend_span}'s trace"
            assert not any("authorization" in t["key"].lower() for s in spans.values() for t in s["tags"])
        # The worker exports too: its job spans (outbox replay runs on every loop).
        find_trace(jaeger_url, "memstack-worker", "worker outbox_replay")
        assert {"memstack-api", "memstack-worker"} <= set(jaeger_get(jaeger_url, "/api/services")["data"])
