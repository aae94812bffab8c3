"""The `containers` backend: the same services in Docker, through testcontainers.

Used where a Docker engine is reachable (users' CI). Containers outlive the CLI that
started them, so testcontainers' reaper (Ryuk) is off and `memstack down` stops them.
Data lives in named volumes, kept across `down`/`up`; each service binds a fixed host
port on 127.0.0.1 so its URL survives a `kill`/`start`.
"""
from __future__ import annotations

import hashlib
import os
from pathlib import Path

from memstack.errors import MemstackError
from memstack.local.process import ProcessBackend
from memstack.local.processes import wait_ready
from memstack.local.service import LocalService
from memstack.local.state import ServiceState, StackState, save


def _docker_client():
    try:
        import docker
    except ImportError:
        raise MemstackError("the containers backend needs testcontainers: pip install 'memstack[containers]'") from None
    try:
        client = docker.from_env(timeout=5)
        client.ping()
    except Exception:
        where = os.environ.get("DOCKER_HOST", "the default Docker socket")
        raise MemstackError(f"backend 'containers' needs a Docker engine and none answers at {where}; start Docker or use --backend process") from None
    return client


class ContainersBackend(ProcessBackend):
    name = "containers"

    def __init__(self, home: Path | None = None, **options) -> None:
        super().__init__(home, **options)
        self._docker = _docker_client()
        # Names unique per home, so two checkouts on one engine do not share data.
        self._prefix = "memstack-" + hashlib.sha1(str(self.home).encode()).hexdigest()[:8]

    def _container(self, record: ServiceState | None):
        import docker.errors

        if record is None or not record.handle:
            return None
        try:
            return self._docker.containers.get(record.handle)
        except docker.errors.NotFound:
            return None

    def _running(self, record: ServiceState | None) -> bool:
        container = self._container(record)
        return container is not None and container.status == "running"

    def _kill(self, record: ServiceState) -> None:
        container = self._container(record)
        if container is not None:
            container.kill()

    def _stop(self, service: LocalService, record: ServiceState) -> None:
        container = self._container(record)
        if container is not None:
            container.stop(timeout=int(service.stop_timeout))

    def _create(self, service: LocalService, port: int):
        from testcontainers.core.config import testcontainers_config
        from testcontainers.core.container import DockerContainer

        testcontainers_config.ryuk_disabled = True
        spec = service.container_spec()
        container = DockerContainer(spec.image).with_name(f"{self._prefix}-{service.name}")
        container.with_bind_ports(spec.port, ("127.0.0.1", port))
        for key, value in spec.env.items():
            container.with_env(key, value)
        if spec.command:
            container.with_command(spec.command)
        container.with_volume_mapping(f"{self._prefix}-{service.name}", spec.data_path, mode="rw")
        for host, path in spec.files.items():
            container.with_volume_mapping(host, path, mode="ro")
        return container.start().get_wrapped_container()

    def _start(self, service: LocalService, state: StackState, *, keep_port: bool) -> None:
        record = state.services.get(service.name)
        existing = self._container(record)
        if existing is not None and record is not None:
            port = record.port
            existing.start()
            container = existing
        else:
            port, _ = self._choose_port(service.name, record, keep_port=keep_port)
            if service.name == "prometheus":
                service.prepare(port)
            container = self._create(service, port)

        def exit_code() -> int | None:
            container.reload()
            return None if container.status in ("created", "running", "restarting") else container.attrs["State"]["ExitCode"]

        wait_ready(service.name, exit_code, lambda: service.probe(port), timeout=service.ready_timeout, log=service.log)
        service.after_ready(port)
        state.services[service.name] = ServiceState(
            port=port, data_dir=f"volume {self._prefix}-{service.name}", log=f"docker logs {container.name}",
            url=service.url(port), handle=container.id,
        )
        save(self.home, state)

    def _check_prerequisites(self, service: LocalService) -> None:
        """Images come from the registry; nothing to check on the host."""
