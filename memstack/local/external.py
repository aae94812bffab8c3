"""The `external` backend: servers that already exist, named by the environment
(REDIS_URL, POSTGRES_URL, NEO4J_URI, NEO4J_USER, NEO4J_PASSWORD, PROMETHEUS_URL)."""

from __future__ import annotations

import os
import time
from collections.abc import Callable

from memory_core.settings import Settings
from memstack.errors import MemstackError
from memstack.local import neo4j_server, postgres_server, prometheus_server, redis_server
from memstack.local.backend import CORE_SERVICES, Endpoints, ServiceStatus, check_service
from memstack.service import check_addresses, memory_settings

READY_TIMEOUT = 30.0


class ExternalBackend:
    name = "external"

    def endpoints(self) -> Endpoints:
        aliases = {name: f.validation_alias for name, f in Settings.model_fields.items()}
        required = ("redis_url", "postgres_url", "neo4j_uri", "neo4j_password")
        missing = [aliases[name] for name in required if not os.environ.get(aliases[name])]
        if missing:
            raise MemstackError(f"the external backend needs {', '.join(missing)} in the environment")
        settings = memory_settings()
        check_addresses(settings)
        return Endpoints(
            redis_url=settings.redis_url.get_secret_value(),
            postgres_url=settings.postgres_url.get_secret_value(),
            neo4j_uri=settings.neo4j_uri,
            neo4j_user=settings.neo4j_user,
            neo4j_password=settings.neo4j_password.get_secret_value(),
            prometheus_url=settings.prometheus_url,
        )

    def _probes(self, endpoints: Endpoints) -> dict[str, tuple[str, Callable[[], bool]]]:
        probes = {
            "redis": (endpoints.redis_url, lambda: redis_server.probe(endpoints.redis_url)),
            "postgres": (endpoints.postgres_url, lambda: postgres_server.probe(endpoints.postgres_url)),
            "neo4j": (
                endpoints.neo4j_uri,
                lambda: neo4j_server.probe(endpoints.neo4j_uri, endpoints.neo4j_user, endpoints.neo4j_password),
            ),
        }
        if endpoints.prometheus_url:
            url = endpoints.prometheus_url
            probes["prometheus"] = (url, lambda: prometheus_server.probe(url))
        return probes

    def up(self, services: tuple[str, ...] = CORE_SERVICES) -> None:
        endpoints = self.endpoints()
        probes = self._probes(endpoints)
        for name in services:
            check_service(name)
            if name not in probes:
                raise MemstackError(f"the external backend has no {name}: set PROMETHEUS_URL")
            deadline = time.monotonic() + READY_TIMEOUT
            while not probes[name][1]():
                if time.monotonic() >= deadline:
                    raise MemstackError(
                        f"{name} at {probes[name][0].split('@')[-1]} did not answer within {READY_TIMEOUT:.0f}s"
                    )
                time.sleep(0.5)

    def down(self) -> None:
        """External servers are not ours to stop."""

    def status(self) -> list[ServiceStatus]:
        rows = []
        for name, (url, probe) in self._probes(self.endpoints()).items():
            healthy = probe()
            rows.append(ServiceStatus(name=name, running=healthy, healthy=healthy, url=url, detail="external"))
        return rows

    def kill(self, service: str) -> None:
        check_service(service)
        raise MemstackError(
            "the external backend cannot kill its servers; use the process or containers backend for drills"
        )

    def start(self, service: str) -> bool:
        check_service(service)
        raise MemstackError(
            "the external backend cannot start its servers; use the process or containers backend for drills"
        )
