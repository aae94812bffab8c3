"""The `containers` backend: the same services in Docker, through testcontainers.

Containers outlive the CLI that started them, so testcontainers' reaper (Ryuk) is off and
`memstack down` stops them. Data lives in named volumes, kept across `down`/`up`.

The stores (Redis, Postgres, Neo4j) sit on one user-defined bridge network per home, where a
service container reaches them by name (`redis`, `postgres`, `neo4j`), and each publishes its
port on 127.0.0.1 only, fixed at creation so its URL survives a `kill`/`start`. Prometheus and
the store exporters run on the host's network with the process backend's own arguments (all
bound to 127.0.0.1), since they scrape and reach 127.0.0.1 addresses; the home is mounted at
its own path for their configuration and data.

Images: `official` (from a registry) or `local` (built here by `memstack images build`, and
built on demand by `up`); the choice is kept in the state file.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import sys
from pathlib import Path

from memstack.errors import MemstackError
from memstack.images.build import IMAGES_ENV, REPO, SERVICE_IMAGES, ImageBuilder, image_source, tag
from memstack.local.backend import Endpoints, with_companions
from memstack.local.http_probe import http_ok
from memstack.local.neo4j_server import USER as NEO4J_USER
from memstack.local.postgres_server import app_url
from memstack.local.process import ProcessBackend
from memstack.local.processes import free_port, wait_ready
from memstack.local.prometheus_server import RULES_DIR, PrometheusServer
from memstack.local.service import LocalService
from memstack.local.state import ServiceState, StackState, save

# Services that run on the host's network with the process backend's command line.
HOST_NETWORK = ("prometheus", "redis-exporter", "postgres-exporter")
# Where the official images keep the binaries of the host-network services.
OFFICIAL_HOST_IMAGES = {
    "prometheus": ("prom/prometheus:v2.53.0", "/bin/prometheus"),
    "redis-exporter": ("oliver006/redis_exporter:v1.62.0", "/redis_exporter"),
    "postgres-exporter": ("quay.io/prometheuscommunity/postgres-exporter:v0.15.0", "/bin/postgres_exporter"),
}


def docker_client():
    try:
        import docker
    except ImportError:
        raise MemstackError("the containers backend needs testcontainers: pip install 'memstack[containers]'") from None
    try:
        client = docker.from_env(timeout=30)
        client.ping()
    except Exception:
        where = os.environ.get("DOCKER_HOST", "the default Docker socket")
        raise MemstackError(
            f"backend 'containers' needs a Docker engine and none answers at {where}; start Docker or use --backend process"
        ) from None
    return client


def stack_prefix(home: Path) -> str:
    """Container, volume and network names unique per home, so two checkouts on one engine share nothing."""
    return "memstack-" + hashlib.sha1(str(home.resolve()).encode()).hexdigest()[:8]


class ContainersBackend(ProcessBackend):
    name = "containers"

    def __init__(self, home: Path | None = None, **options) -> None:
        super().__init__(home, **options)
        self._docker = docker_client()
        self._prefix = stack_prefix(self.home)

    @property
    def network(self) -> str:
        return self._prefix

    def container_name(self, service: str) -> str:
        return f"{self._prefix}-{service}"

    def _container(self, record: ServiceState | None):
        import docker.errors

        if record is None or not record.handle:
            return None
        try:
            return self._docker.containers.get(record.handle)
        except docker.errors.NotFound:
            return None

    def container(self, service: str):
        """The Docker container of one service of this stack (for fault injection), or None."""
        import docker.errors

        try:
            return self._docker.containers.get(self.container_name(service))
        except docker.errors.NotFound:
            return None

    def _running(self, record: ServiceState | None) -> bool:
        container = self._container(record)
        # A paused container is still running: a hang, not a crash.
        return container is not None and container.status in ("running", "paused")

    def _resume(self, record: ServiceState) -> bool:
        container = self._container(record)
        if container is None or container.status != "paused":
            return False
        container.unpause()
        return True

    def _kill(self, record: ServiceState) -> None:
        container = self._container(record)
        if container is not None:
            container.kill()

    def _stop(self, service: LocalService, record: ServiceState) -> None:
        container = self._container(record)
        if container is not None:
            if container.status == "paused":
                container.unpause()
            container.stop(timeout=int(service.stop_timeout))

    # -- images ------------------------------------------------------------------------------

    def _source(self, state: StackState) -> str:
        if state.images is None or os.environ.get(IMAGES_ENV):
            chosen = image_source()
            if state.images and chosen != state.images and any(self._running(r) for r in state.services.values()):
                raise MemstackError(
                    f"the stack runs {state.images} images; run `memstack down` before switching to {chosen}"
                )
            state.images = chosen
        return state.images

    def _image(self, service: LocalService, state: StackState) -> tuple[str, list[str] | None]:
        """The image of `service` and, for a host-network one, its entrypoint."""
        source = self._source(state)
        if service.name in HOST_NETWORK:
            if source == "local":
                return tag(SERVICE_IMAGES[service.name]), [service.launch(0).argv[0]]
            image, binary = OFFICIAL_HOST_IMAGES[service.name]
            return image, [binary]
        if source == "local":
            return tag(SERVICE_IMAGES[service.name]), None
        return service.container_spec().image, None

    def _check_prerequisites(self, service: LocalService) -> None:
        """Local images are built (once, cached) before anything starts; official ones are pulled on create."""

    def up(self, services=None) -> None:  # type: ignore[override]
        from memstack.local.backend import CORE_SERVICES
        from memstack.local.state import load

        services = with_companions(services or CORE_SERVICES)
        state = load(self.home) or StackState(backend=self.name)
        if self._source(state) == "local":
            ImageBuilder(echo=lambda line: None).build(
                "local", {SERVICE_IMAGES[n] for n in services if n in SERVICE_IMAGES}
            )
        super().up(services)

    # -- starting ------------------------------------------------------------------------------

    def _ensure_network(self) -> None:
        import docker.errors

        try:
            self._docker.networks.get(self.network)
        except docker.errors.NotFound:
            self._docker.networks.create(self.network, driver="bridge", labels={"dev.memstack.home": str(self.home)})

    def _create(self, service: LocalService, port: int, state: StackState):
        from testcontainers.core.config import testcontainers_config
        from testcontainers.core.container import DockerContainer

        testcontainers_config.ryuk_disabled = True
        image, entrypoint = self._image(service, state)
        name = self.container_name(service.name)
        # One left by a start that failed before the state recorded it; its volume (the data) stays.
        stale = self.container(service.name)
        if stale is not None:
            stale.remove(force=True)
        if service.name in HOST_NETWORK:
            launch = service.launch(port)
            container = DockerContainer(image).with_name(name)
            container.with_command(list(launch.argv[1:]))
            for key, value in (launch.env or {}).items():
                if os.environ.get(key) != value:
                    container.with_env(key, value)
            container.with_volume_mapping(str(self.home), str(self.home), mode="rw")
            if isinstance(service, PrometheusServer) and RULES_DIR.is_dir():
                container.with_volume_mapping(str(RULES_DIR), str(RULES_DIR), mode="ro")
            container.with_kwargs(
                network_mode="host",
                entrypoint=entrypoint,
                user=f"{os.getuid()}:{os.getgid()}",
                working_dir=str(launch.cwd or self.home),
            )
            return container.start().get_wrapped_container()
        spec = service.container_spec()
        self._ensure_network()
        container = DockerContainer(image).with_name(name)
        # Loopback only (with_bind_ports takes no host address; the Docker SDK under it does).
        container.ports[f"{spec.port}/tcp"] = ("127.0.0.1", port)
        for key, value in spec.env.items():
            container.with_env(key, value)
        if spec.command:
            container.with_command(spec.command)
        container.with_volume_mapping(name, spec.data_path, mode="rw")
        for host, path in spec.files.items():
            container.with_volume_mapping(host, path, mode="ro")
        for host, path in spec.writable.items():
            self._hand_over(image, service.name, Path(host))
            container.with_volume_mapping(host, path, mode="rw")
        # On the stack network a service container reaches it by its container name.
        container.with_kwargs(network=self.network)
        return container.start().get_wrapped_container()

    def _create_or_explain(self, service: LocalService, port: int, state: StackState):
        """`_create`, with the engine's refusal (an image it cannot pull, a name or port taken) as
        one line naming the service and the image, not a traceback."""
        import docker.errors

        try:
            return self._create(service, port, state)
        except docker.errors.DockerException as exc:
            image, _ = self._image(service, state)
            reason = getattr(exc, "explanation", None) or str(exc)
            hint = ""
            if not self._has_image(image):
                hint = (
                    "; without a registry, build the images here with `memstack images build --images local`"
                    " and use --images local"
                    if state.images == "official"
                    else "; `memstack images build --images local` builds it"
                )
            raise MemstackError(f"{service.name}: the Docker engine could not run {image}: {reason}{hint}") from None

    def _has_image(self, image: str) -> bool:
        import docker.errors

        try:
            self._docker.images.get(image)
        except docker.errors.DockerException:
            return False
        return True

    def _hand_over(self, image: str, user: str, host_dir: Path) -> None:
        """Make a host directory the container writes its own: owned by the image's user (named
        after the service in the local and the official images), with this host user's group,
        setgid so that what the container writes there stays readable from the host."""
        import docker.errors

        host_dir.mkdir(parents=True, exist_ok=True)
        try:
            user = self._docker.images.get(image).attrs["Config"].get("User") or user
        except docker.errors.ImageNotFound:
            pass  # an official image not pulled yet: its user is named after the service; run pulls it
        self._docker.containers.run(
            image,
            entrypoint="sh",
            command=["-c", f"chown -R {user}:{os.getgid()} /mnt && chmod 2770 /mnt"],
            user="0",
            volumes={str(host_dir): {"bind": "/mnt", "mode": "rw"}},
            remove=True,
        )

    def _start(self, service: LocalService, state: StackState, *, keep_port: bool) -> None:
        record = state.services.get(service.name)
        existing = self._container(record)
        if existing is not None and record is not None:
            port = record.port
            if existing.status == "paused":
                existing.unpause()
            else:
                existing.start()
            container = existing
        else:
            port, _ = self._choose_port(service.name, record, keep_port=keep_port)
            if service.name in HOST_NETWORK:
                service.prepare(port)
            container = self._create_or_explain(service, port, state)

        def exit_code() -> int | None:
            container.reload()
            return (
                None
                if container.status in ("created", "running", "restarting")
                else container.attrs["State"]["ExitCode"]
            )

        try:
            wait_ready(
                service.name, exit_code, lambda: service.probe(port), timeout=service.ready_timeout, log=service.log
            )
        except MemstackError:
            # wait_ready quotes the log's tail: the container's output is that log.
            service.log.parent.mkdir(parents=True, exist_ok=True)
            service.log.write_bytes(container.logs())
            raise MemstackError(
                f"{service.name} did not start in container {container.name}: see `docker logs {container.name}`; "
                f"last line: {container.logs(tail=1).decode(errors='replace').strip()}"
            ) from None
        service.after_ready(port)
        container.reload()
        state.services[service.name] = ServiceState(
            # The host pid of the container's main process: it changes when the container restarts.
            pid=container.attrs["State"]["Pid"] or None,
            port=port,
            data_dir=f"volume {container.name}" if service.name not in HOST_NETWORK else str(service.data_dir),
            log=f"docker logs {container.name}",
            url=service.url(port),
            handle=container.id,
        )
        save(self.home, state)

    def remove(self) -> None:
        """Stop and delete every container, volume and the network of this stack (its data too),
        and the home's records of them; the home keeps its image source and credentials."""
        import docker.errors

        with self._locked() as state:
            for container in self._docker.containers.list(all=True, filters={"name": self._prefix + "-"}):
                container.remove(force=True, v=True)
            for volume in self._docker.volumes.list(filters={"name": self._prefix + "-"}):
                volume.remove(force=True)
            try:
                self._docker.networks.get(self.network).remove()
            except docker.errors.NotFound:
                pass
            state.services.clear()
            state.starting.clear()
            save(self.home, state)

    # -- the memory service as a container ----------------------------------------------------------

    def network_endpoints(self) -> Endpoints:
        """How a container on the stack network reaches the stores: by container name and in-container port."""
        state = self._require_running()
        host = self.container_name
        return Endpoints(
            redis_url=f"redis://:{state.credentials.redis_password}@{host('redis')}:6379/0",
            postgres_url=app_url(5432, state.credentials, host=host("postgres")),
            neo4j_uri=f"bolt://{host('neo4j')}:7687",
            neo4j_user=NEO4J_USER,
            neo4j_password=state.credentials.neo4j_password,
        )

    def run_service(
        self, image: str, token_hashes: Path, *, name: str = "service", port: int | None = None, worker: bool = False
    ):
        """The memory service image on the stack network, as Kubernetes runs it: its own non-root
        user, a read-only root filesystem with only /tmp writable, no capabilities, the token hashes
        mounted read-only. Published on 127.0.0.1; returns (container, URL) once /ready answers, the
        URL being its stack-network address where the host reaches that (see `_direct_url`).
        With `worker`, the same image runs the consolidation worker (outbox replay) instead."""
        # The image's contract (port, user, probes, token mount) is the Pulumi program's, read
        # from the checkout: it is not an installed package.
        if str(REPO) not in sys.path:
            sys.path.append(str(REPO))
        from infra.config import MemoryServiceContract

        contract = MemoryServiceContract()
        port = port or free_port()
        inner_port = contract.worker_health_port if worker else contract.port
        container_name = self.container_name(name)
        stale = self.container(name)
        if stale is not None:
            stale.remove(force=True)
        # Readable by the image's user, and by no one else on the host (`mounts` is 0700; a bind
        # mount does not traverse it). One directory per container name, replaced at each run:
        # a run leaves nothing behind outside the home.
        mounts = self.home / "mounts"
        mounts.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(mounts, 0o700)
        tokens_dir = mounts / f"{name}-tokens"
        shutil.rmtree(tokens_dir, ignore_errors=True)
        tokens_dir.mkdir()
        tokens = tokens_dir / contract.tokens_file_name
        shutil.copyfile(token_hashes, tokens)
        if os.geteuid() == 0:
            os.chown(tokens_dir, contract.run_as_user, contract.run_as_user)
            os.chown(tokens, contract.run_as_user, contract.run_as_user)
            os.chmod(tokens, 0o400)
        else:
            os.chmod(tokens_dir, 0o755)
            os.chmod(tokens, 0o644)
        env = {
            **self.network_endpoints().env(),
            contract.tokens_file_env: f"{contract.tokens_mount_dir}/{contract.tokens_file_name}",
        }
        container = self._docker.containers.run(
            image,
            name=container_name,
            detach=True,
            environment=env,
            network=self.network,
            ports={f"{inner_port}/tcp": ("127.0.0.1", port)},
            command=contract.worker_command if worker else None,
            read_only=True,
            tmpfs={"/tmp": "rw,noexec,nosuid,size=64m"},
            cap_drop=["ALL"],
            security_opt=["no-new-privileges"],
            volumes={str(tokens_dir): {"bind": contract.tokens_mount_dir, "mode": "ro"}},
            labels={"dev.memstack.home": str(self.home)},
        )
        url = f"http://127.0.0.1:{port}"

        def exit_code() -> int | None:
            container.reload()
            return None if container.status in ("created", "running") else container.attrs["State"]["ExitCode"]

        log = self.home / "logs" / f"{name}.log"
        try:
            wait_ready(name, exit_code, lambda: http_ok(url + contract.readiness_path), timeout=120, log=log)
        except MemstackError:
            log.parent.mkdir(parents=True, exist_ok=True)
            log.write_bytes(container.logs())
            raise MemstackError(
                f"the service image {image} did not become ready: "
                f"{container.logs(tail=1).decode(errors='replace').strip()} (see {log})"
            ) from None
        return container, self._direct_url(container, inner_port, contract.readiness_path) or url

    def _direct_url(self, container, port: int, probe_path: str) -> str | None:
        """The container's own address on the stack network, where the host reaches it (an engine
        on this kernel): past Docker's userland port proxy, one hop and copy less per request
        (measured with one client on a loaded 2-core host: p50 1.9 -> 1.0 ms). None where the host
        cannot (an engine in a VM): the published port serves then."""
        container.reload()
        address = container.attrs["NetworkSettings"]["Networks"][self.network]["IPAddress"]
        url = f"http://{address}:{port}"
        return url if address and http_ok(url + probe_path) else None
