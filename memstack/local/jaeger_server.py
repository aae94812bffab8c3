"""Jaeger v2 with in-memory storage, built from the Go module proxy under tools/jaeger
(`go.mod` pins the module; the v1.x tags of github.com/jaegertracing/jaeger carry the v2
binary). The first start builds it (several minutes); later starts reuse the binary.

The recorded URL is the query API and UI; the service and the worker send OTLP over HTTP to
`otlp_endpoint()`. Every listener is on 127.0.0.1, on ports chosen once per home."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

from memstack.errors import MemstackError
from memstack.local.http_probe import http_ok
from memstack.local.processes import Launch, free_port
from memstack.local.service import ContainerSpec, LocalService

TOOL_ENV = "MEMSTACK_JAEGER_DIR"
MODULE = "github.com/jaegertracing/jaeger/cmd/jaeger"
# The extra listeners besides the query port, each on its own free port.
_EXTRA_PORTS = ("otlp_grpc", "otlp_http", "query_grpc", "health")


def tool_dir() -> Path:
    configured = os.environ.get(TOOL_ENV)
    return Path(configured) if configured else Path(__file__).resolve().parents[2] / "tools" / "jaeger"


def binary() -> Path:
    return tool_dir() / "bin" / "jaeger"


def build() -> Path:
    """Build the pinned Jaeger into tools/jaeger/bin (once; Go caches the modules)."""
    if shutil.which("go") is None:
        raise MemstackError(
            "go not found on PATH; `--with jaeger` builds Jaeger v2 from source: install Go 1.24+ (https://go.dev/dl) or run `make jaeger`"
        )
    if not (tool_dir() / "go.mod").exists():
        raise MemstackError(f"no Jaeger module at {tool_dir()} (expected go.mod); set {TOOL_ENV}")
    print(f"building Jaeger in {tool_dir()} (first run: several minutes)", flush=True)
    result = subprocess.run(
        ["go", "build", "-o", str(binary()), MODULE], cwd=tool_dir(), capture_output=True, text=True
    )
    if result.returncode != 0:
        last = (result.stderr or result.stdout).strip().splitlines()[-1:]
        raise MemstackError(f"building Jaeger failed: {' '.join(last)}")
    return binary()


def probe(url: str) -> bool:
    return http_ok(f"{url}/api/services")


class JaegerServer(LocalService):
    name = "jaeger"
    ready_timeout = 60.0

    @property
    def ports_file(self) -> Path:
        return self.data_dir / "ports.json"

    def ports(self) -> dict[str, int]:
        """The extra listeners' ports, chosen once per home so endpoints survive restarts."""
        try:
            return json.loads(self.ports_file.read_text())
        except (OSError, ValueError):
            pass
        self.data_dir.mkdir(parents=True, exist_ok=True)
        ports = {name: free_port() for name in _EXTRA_PORTS}
        self.ports_file.write_text(json.dumps(ports))
        return ports

    def otlp_endpoint(self) -> str:
        """For OTEL_EXPORTER_OTLP_ENDPOINT with OTEL_EXPORTER_OTLP_PROTOCOL=http/protobuf."""
        return f"http://127.0.0.1:{self.ports()['otlp_http']}"

    def check_prerequisites(self) -> None:
        if not binary().exists():
            build()

    def prepare(self, port: int) -> None:
        p = self.ports()
        listen = "127.0.0.1"
        config = {
            "service": {
                "extensions": ["jaeger_storage", "jaeger_query", "healthcheckv2"],
                "pipelines": {
                    "traces": {"receivers": ["otlp"], "processors": ["batch"], "exporters": ["jaeger_storage_exporter"]}
                },
                # Jaeger's own metrics would take a fixed port (8888): off here.
                "telemetry": {
                    "resource": {"service.name": "jaeger"},
                    "metrics": {"level": "none"},
                    "logs": {"level": "info"},
                },
            },
            "extensions": {
                "healthcheckv2": {"use_v2": True, "http": {"endpoint": f"{listen}:{p['health']}"}},
                "jaeger_query": {
                    "storage": {"traces": "memory"},
                    "http": {"endpoint": f"{listen}:{port}"},
                    "grpc": {"endpoint": f"{listen}:{p['query_grpc']}"},
                },
                "jaeger_storage": {"backends": {"memory": {"memory": {"max_traces": 100000}}}},
            },
            "receivers": {
                "otlp": {
                    "protocols": {
                        "grpc": {"endpoint": f"{listen}:{p['otlp_grpc']}"},
                        "http": {"endpoint": f"{listen}:{p['otlp_http']}"},
                    }
                }
            },
            "processors": {"batch": {}},
            "exporters": {"jaeger_storage_exporter": {"trace_storage": "memory"}},
        }
        # JSON is YAML: the collector's config loader reads it as is.
        (self.data_dir / "config.yaml").write_text(json.dumps(config, indent=2))

    def launch(self, port: int) -> Launch:
        return Launch(
            argv=[str(binary()), "--config", str(self.data_dir / "config.yaml")], log=self.log, cwd=self.data_dir
        )

    def probe(self, port: int) -> bool:
        return probe(self.url(port))

    def container_spec(self) -> ContainerSpec:
        raise MemstackError("jaeger runs only with the process backend")

    def url(self, port: int) -> str:
        return f"http://127.0.0.1:{port}"
