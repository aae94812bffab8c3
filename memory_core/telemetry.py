"""OpenTelemetry tracing and JSON logs for the memory service and the worker.

Tracing follows the standard OTEL_* variables: with neither OTEL_EXPORTER_OTLP_ENDPOINT nor
OTEL_EXPORTER_OTLP_TRACES_ENDPOINT set (or with OTEL_SDK_DISABLED=true or
OTEL_TRACES_EXPORTER=none) no SDK provider is installed and the API's no-op tracer costs
next to nothing. Service name and resource attributes come from OTEL_SERVICE_NAME and
OTEL_RESOURCE_ATTRIBUTES, which `Resource.create()` reads itself.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, TextIO

from opentelemetry import trace

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider

log = logging.getLogger(__name__)


def _exporter_wanted(environ: Mapping[str, str]) -> bool:
    if environ.get("OTEL_SDK_DISABLED", "").lower() == "true":
        return False
    if environ.get("OTEL_TRACES_EXPORTER", "otlp").lower() in ("none", ""):
        return False
    return bool(environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or environ.get("OTEL_EXPORTER_OTLP_ENDPOINT"))


def setup_tracing(default_service_name: str, environ: Mapping[str, str] = os.environ) -> TracerProvider | None:
    """Install a TracerProvider with a batching OTLP exporter when the environment asks for one.
    Returns the provider (to shut down on exit), or None."""
    if not _exporter_wanted(environ):
        return None
    from opentelemetry.sdk.resources import SERVICE_NAME, Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter

    protocol = environ.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL") or environ.get("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")
    exporter: SpanExporter
    if protocol == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcExporter

        exporter = GrpcExporter()
    else:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpExporter

        exporter = HttpExporter()
    attributes = {} if environ.get("OTEL_SERVICE_NAME") else {SERVICE_NAME: default_service_name}
    provider = TracerProvider(resource=Resource.create(attributes))
    provider.add_span_processor(BatchSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    return provider


class JsonFormatter(logging.Formatter):
    """One JSON object per line, with the trace and span id of the current span when there is one."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        context = trace.get_current_span().get_span_context()
        if context.is_valid:
            entry["trace_id"] = format(context.trace_id, "032x")
            entry["span_id"] = format(context.span_id, "016x")
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


# The level the last `setup_json_logging` set, for the processes this one starts: uvicorn's
# worker processes are spawned with a root logger of their own, and set theirs up again.
LOG_LEVEL_ENV = "MEMSTACK_LOG_LEVEL"


def configured_log_level(environ: Mapping[str, str] = os.environ) -> str:
    """The level `setup_json_logging` set in this process or the one that started it; INFO if none."""
    return environ.get(LOG_LEVEL_ENV) or "INFO"


def setup_json_logging(level: str | int = "INFO", stream: TextIO = sys.stderr) -> None:
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    os.environ[LOG_LEVEL_ENV] = logging.getLevelName(root.level)
