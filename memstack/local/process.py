"""The `process` backend: each service a local OS process with its own data directory."""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
from collections.abc import Iterator
from pathlib import Path

from memstack.errors import MemstackError
from memstack.local.backend import ALL_SERVICES, CORE_SERVICES, Endpoints, ServiceStatus, check_service, with_companions
from memstack.local.exporters import EXPORTERS
from memstack.local.jaeger_server import JaegerServer
from memstack.local.neo4j_server import USER as NEO4J_USER
from memstack.local.neo4j_server import Neo4jServer
from memstack.local.postgres_server import PostgresServer
from memstack.local.processes import (
    Launch,
    ServiceExited,
    free_port,
    is_running,
    kill_pid,
    port_is_free,
    signals_deferred,
    spawn,
    start_time,
    stop_pid,
    wait_ready,
)
from memstack.local.prometheus_server import PrometheusServer
from memstack.local.redis_server import RedisServer
from memstack.local.service import LocalService
from memstack.local.state import WAL_DIR_ENV, ServiceState, StackState, check_backend, default_home, load, save

SERVICE_TYPES: dict[str, type[LocalService]] = {
    cls.name: cls for cls in (RedisServer, PostgresServer, Neo4jServer, *EXPORTERS, PrometheusServer, JaegerServer)
}
# What a service logs when its port was taken between our check and its bind.
_PORT_TAKEN = re.compile(r"address already in use|BindException|could not bind|port .* (is )?(already )?in use", re.I)
_START_ATTEMPTS = 3


def _writable_dir(path: Path) -> Path:
    """`path`, created if missing, when this user can write there: checked before it is saved as
    the WAL archive, since every later start of Postgres in this home would fail on it."""
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise MemstackError(f"WAL archive {path}: {exc.strerror or exc}; pick another with --wal-dir") from None
    if not os.access(path, os.W_OK | os.X_OK):
        raise MemstackError(f"WAL archive {path}: not writable; pick another with --wal-dir")
    return path


def _port_taken(port: int, service: str) -> MemstackError:
    return MemstackError(
        f"port {port} for {service} is taken by another process; pick another with --port {service}=PORT or free it"
    )


class ProcessBackend:
    name = "process"

    def __init__(
        self, home: Path | None = None, *, appendfsync: str | None = None, ports: dict[str, int] | None = None
    ) -> None:
        self.home = home or default_home()
        self._appendfsync = appendfsync
        self._ports = dict(ports or {})
        for service in self._ports:
            check_service(service)

    # -- state ---------------------------------------------------------------------------

    @contextlib.contextmanager
    def _locked(self) -> Iterator[StackState]:
        """Serialise commands on one home (two terminals, parallel test sessions)."""
        self.home.mkdir(parents=True, exist_ok=True)
        with open(self.home / ".lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            state = load(self.home) or StackState(backend=self.name)
            self._check_backend(state)
            yield state

    def _check_backend(self, state: StackState) -> None:
        check_backend(self.home, state, self.name)

    def _service(self, name: str, state: StackState) -> LocalService:
        service = SERVICE_TYPES[name](self.home, state.credentials, appendfsync=state.appendfsync)
        if state.wal_dir and isinstance(service, PostgresServer):
            service.wal_dir = Path(state.wal_dir)
        return service

    # The primitives a backend of another runtime (containers) overrides.

    def _running(self, record: ServiceState | None) -> bool:
        return record is not None and is_running(record.pid, record.started)

    def _check_prerequisites(self, service: LocalService) -> None:
        service.check_prerequisites()

    def _kill(self, record: ServiceState) -> None:
        kill_pid(record.pid, record.started)
        record.pid = record.started = None

    def _stop(self, service: LocalService, record: ServiceState) -> None:
        stop_pid(record.pid, record.started, timeout=service.stop_timeout, sig=service.stop_signal)
        record.pid = record.started = None

    # -- starting --------------------------------------------------------------------------

    def _choose_port(self, name: str, record: ServiceState | None, *, keep_port: bool) -> tuple[int, bool]:
        """The port to start on, and whether we may move to another if it turns out taken."""
        pinned = self._ports.get(name) or (record.port if keep_port and record else None)
        if pinned:
            if not port_is_free(pinned):
                raise _port_taken(pinned, name)
            return pinned, False
        if record and port_is_free(record.port):
            return record.port, True
        return free_port(), True

    def _start(self, service: LocalService, state: StackState, *, keep_port: bool) -> None:
        record = state.services.get(service.name)
        port, movable = self._choose_port(service.name, record, keep_port=keep_port)
        for attempt in range(1, _START_ATTEMPTS + 1):
            service.prepare(port)
            launch = service.launch(port)
            log_offset = launch.log.stat().st_size if launch.log.exists() else 0
            try:
                self._run_until_ready(service, launch, port, state)
            except ServiceExited:
                new_output = launch.log.read_text(errors="replace")[log_offset:] if launch.log.exists() else ""
                if movable and attempt < _START_ATTEMPTS and _PORT_TAKEN.search(new_output):
                    port = free_port()
                    continue
                if _PORT_TAKEN.search(new_output):
                    raise _port_taken(port, service.name) from None
                raise
            return

    def _run_until_ready(self, service: LocalService, launch: Launch, port: int, state: StackState) -> None:
        """Spawn the service, wait for it and set it up; it ends recorded in `state.services`, or
        stopped. Its pid is saved in `state.starting` from the moment it exists: a SIGTERM in
        between would otherwise leave it running with no record (a Postgres whose roles were being
        created), and an `up` killed outright leaves that record for `down` to act on."""
        proc = None
        try:
            with signals_deferred():
                proc = spawn(launch)
                state.starting[service.name] = ServiceState(
                    port=port,
                    data_dir=str(service.data_dir),
                    log=str(service.log),
                    url=service.url(port),
                    pid=proc.pid,
                    started=start_time(proc.pid),
                )
                save(self.home, state)
            wait_ready(
                service.name,
                proc.poll,
                lambda: service.probe(port),
                timeout=service.ready_timeout,
                log=service.log,
            )
            service.after_ready(port)
            with signals_deferred():
                state.services[service.name] = state.starting.pop(service.name)
                save(self.home, state)
        except BaseException:
            with signals_deferred():
                if proc is not None:
                    # A process already reaped (it exited) may have given its pid to another.
                    if proc.returncode is None:
                        kill_pid(proc.pid, None)
                    state.starting.pop(service.name, None)
                    save(self.home, state)
            raise

    def _stop_unfinished(self, state: StackState) -> None:
        """Stop what an `up` that did not live to finish left starting (see _run_until_ready)."""
        for name in list(state.starting):
            record = state.starting[name]
            if self._running(record):
                self._stop(self._service(name, state), record)
            del state.starting[name]
            save(self.home, state)

    def _resume(self, record: ServiceState) -> bool:
        """Make a service that runs but is suspended run on; whether it was suspended. No process
        of this backend is (nothing here stops one with SIGSTOP); a container can be paused."""
        return False

    def _ensure_running(self, service: LocalService, state: StackState, *, keep_port: bool) -> bool:
        """Start `service` unless it runs, and wait until it answers; whether it was started or resumed."""
        record = state.services.get(service.name)
        if self._running(record):
            assert record is not None
            # Suspended, it would never answer: waiting out the timeout would blame it for a crash.
            resumed = self._resume(record)
            wait_ready(
                service.name,
                lambda: None if self._running(record) else -1,
                lambda: service.probe(record.port),
                timeout=service.ready_timeout,
                log=service.log,
            )
            return resumed
        self._start(service, state, keep_port=keep_port)
        return True

    def up(self, services: tuple[str, ...] = CORE_SERVICES) -> None:
        for name in services:
            check_service(name)
        services = with_companions(services, local_processes=self.name == "process")
        with self._locked() as state:
            if self._appendfsync and self._appendfsync != state.appendfsync:
                if self._running(state.services.get("redis")):
                    raise MemstackError(
                        f"redis is running with appendfsync {state.appendfsync}; run `memstack down` before changing it"
                    )
                state.appendfsync = self._appendfsync
            wal_dir = os.environ.get(WAL_DIR_ENV)
            archiving_to = self._service("postgres", state).wal_dir
            if wal_dir and Path(wal_dir).resolve() != archiving_to.resolve():
                if self._running(state.services.get("postgres")):
                    raise MemstackError(
                        f"postgres is running and archives its WAL to {archiving_to}; run `memstack down` before moving it"
                    )
                state.wal_dir = str(_writable_dir(Path(wal_dir).resolve()))
            # Refused rather than restarted: a restart would drop every client of the running
            # service, and `up` otherwise never stops anything (as for appendfsync and the WAL above).
            for name, pinned in self._ports.items():
                record = state.services.get(name)
                if record is not None and record.port != pinned and self._running(record):
                    raise MemstackError(
                        f"{name} is running on port {record.port}; run `memstack down` before moving it to {pinned}"
                    )
            self._stop_unfinished(state)
            pending = [self._service(n, state) for n in services if not self._running(state.services.get(n))]
            # Every prerequisite is checked before anything starts, so a missing tool leaves nothing half up.
            for service in pending:
                self._check_prerequisites(service)
            self._check_pinned_ports(pending)
            save(self.home, state)
            started: list[str] = []
            try:
                for name in services:
                    self._ensure_running(self._service(name, state), state, keep_port=False)
                    if any(service.name == name for service in pending):
                        started.append(name)
            except Exception:
                # A failed `up` leaves running only what ran before it: a pinned port taken after
                # the check above, or a service that would not start, stops the ones it started.
                # An interrupt (SIGTERM, Ctrl-C) leaves them recorded, for `down`, and exits at once.
                self._stop_started(started, state)
                raise

    def _check_pinned_ports(self, pending: list[LocalService]) -> None:
        """Refuse a pinned port that is taken, or pinned twice, before anything starts."""
        pinned_by: dict[int, str] = {}
        for service in pending:
            port = self._ports.get(service.name)
            if port is None:
                continue
            if port in pinned_by:
                raise MemstackError(f"--port pins {port} for both {pinned_by[port]} and {service.name}")
            pinned_by[port] = service.name
            if not port_is_free(port):
                raise _port_taken(port, service.name)

    def _stop_started(self, names: list[str], state: StackState) -> None:
        for name in reversed(names):
            record = state.services.get(name)
            if record is not None and self._running(record):
                self._stop(self._service(name, state), record)
                save(self.home, state)

    def start(self, service: str) -> bool:
        """Returns False when the service was running already (it is then waited for, not restarted);
        a suspended one (a paused container) is resumed, and counts as started."""
        check_service(service)
        with self._locked() as state:
            if service not in state.services:
                raise MemstackError(f"{service} has never run in {self.home}; use `memstack up` first")
            self._stop_unfinished(state)
            svc = self._service(service, state)
            was_running = self._running(state.services[service])
            if not was_running:
                self._check_prerequisites(svc)
            # Same port as before, so URLs handed out earlier stay valid.
            return self._ensure_running(svc, state, keep_port=True)

    # -- stopping --------------------------------------------------------------------------

    def kill(self, service: str) -> None:
        check_service(service)
        with self._locked() as state:
            record = state.services.get(service)
            if not self._running(record):
                raise MemstackError(f"{service} is not running")
            assert record is not None
            self._kill(record)
            save(self.home, state)

    def down(self) -> None:
        with self._locked() as state:
            self._stop_unfinished(state)
            for name in reversed(ALL_SERVICES):
                record = state.services.get(name)
                if record is None:
                    continue
                if self._running(record):
                    self._stop(self._service(name, state), record)
            save(self.home, state)

    # -- reading -----------------------------------------------------------------------------

    def _endpoints(self, state: StackState) -> Endpoints:
        def url(name: str) -> str:
            record = state.services.get(name)
            if not self._running(record):
                raise MemstackError(f"{name} is not running; start the stack with `memstack up`")
            assert record is not None
            return record.url

        prometheus = state.services.get("prometheus")
        return Endpoints(
            redis_url=url("redis"),
            postgres_url=url("postgres"),
            neo4j_uri=url("neo4j"),
            neo4j_user=NEO4J_USER,
            neo4j_password=state.credentials.neo4j_password,
            prometheus_url=prometheus.url if self._running(prometheus) else None,
            otlp_endpoint=(
                self._service("jaeger", state).otlp_endpoint() if self._running(state.services.get("jaeger")) else None
            ),
        )

    def _require_running(self) -> StackState:
        state = load(self.home)
        if state is not None:
            self._check_backend(state)
        if state is None or not any(self._running(r) for r in state.services.values()):
            raise MemstackError(f"no local stack is running (home {self.home}); start one with `memstack up`")
        return state

    def endpoints(self) -> Endpoints:
        return self._endpoints(self._require_running())

    def status(self) -> list[ServiceStatus]:
        state = self._require_running()
        rows = []
        for name, record in state.services.items():
            running = self._running(record)
            rows.append(
                ServiceStatus(
                    name=name,
                    running=running,
                    healthy=running and self._service(name, state).probe(record.port),
                    url=record.url,
                    pid=record.pid if running else None,
                    detail=record.data_dir,
                )
            )
        return rows
