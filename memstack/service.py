"""What `memstack serve`, `worker`, `migrate` and `token create` do; the CLI only parses options.

The defaults below are the image's contract; tests/service/test_image_contract.py checks them
against infra.config (which is not installed in the image, so it cannot be imported here). The
worker's probe port is memory_core's setting `worker_probe_port`, which infra.config reads too.
"""

from __future__ import annotations

import asyncio
import os
import socket
from pathlib import Path
from typing import TYPE_CHECKING

from memstack.errors import MemstackError

if TYPE_CHECKING:
    from memory_core.settings import Settings

SERVICE_PORT = 8080
TOKENS_FILE_ENV = "MEMSTACK_TOKENS_FILE"
LOG_LEVELS = ("debug", "info", "warning", "error", "critical")


def tokens_file() -> Path:
    """Where `token create` writes and `serve` reads: $MEMSTACK_TOKENS_FILE, else `tokens` in the
    stack's home ($MEMSTACK_HOME or ./.memstack), beside its other secrets and out of the checkout."""
    from memstack.local.state import default_home

    return Path(os.environ.get(TOKENS_FILE_ENV) or default_home() / "tokens")


def _service_settings():
    from pydantic import ValidationError

    from memory_core.service.config import ServiceSettings

    try:
        return ServiceSettings()
    except ValidationError as exc:
        first = exc.errors()[0]
        raise MemstackError(f"MEMSTACK_{'_'.join(map(str, first['loc'])).upper()}: {first['msg']}") from None


def memory_settings() -> Settings:
    """memory_core's settings from the environment; a bad value is one line naming its variable."""
    from pydantic import ValidationError

    from memory_core.settings import Settings, settings_error

    try:
        return Settings()
    except ValidationError as exc:
        raise MemstackError(settings_error(exc)) from None


def check_tokens() -> int:
    """Load the token table once before uvicorn starts, so a bad file is one line and exit 2."""
    from memory_core.service.auth import TokenFileError, TokenTable

    try:
        return len(TokenTable.load(_service_settings()))
    except TokenFileError as exc:
        raise MemstackError(str(exc)) from None


def check_process_options(command: str, host: str, port: int, log_level: str) -> None:
    """The options of `serve` and `worker`, refused before anything starts."""
    check_option_values(port, log_level)
    check_listen(command, host, port)


def check_option_values(port: int | None, log_level: str) -> None:
    """The values alone, before the stack is looked for: a bad option is named even where no stack runs."""
    if port is not None and not 1 <= port <= 65535:
        raise MemstackError(f"--port must be from 1 to 65535, not {port}")
    if log_level.lower() not in LOG_LEVELS:
        raise MemstackError(f"--log-level must be one of {', '.join(LOG_LEVELS)}, not {log_level!r}")


def check_listen(command: str, host: str, port: int) -> None:
    """Bind the address once, as the server will: a taken port or a host that is not this
    machine's is one line now, not the server's log lines and exit status after the stores."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
        with socket.socket(family, kind, proto) as probe:
            # As the servers do: connections of a stopped server in TIME_WAIT do not block it.
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            probe.bind(address)
    except OSError as exc:
        raise MemstackError(f"{command}: cannot listen on {host}:{port}: {exc.strerror or exc}") from None


def check_addresses(settings: Settings) -> None:
    """Each store's address parses: a wrong one is one line naming its variable, not a
    traceback from the client library that first reads it."""
    import neo4j
    import redis

    def env(field: str) -> str:
        return str(type(settings).model_fields[field].validation_alias)

    try:
        redis.Redis.from_url(settings.redis_url.get_secret_value())
    except ValueError as exc:
        raise MemstackError(f"{env('redis_url')}: {exc}") from None
    if not settings.neo4j_uri.startswith(("bolt", "neo4j")):
        raise MemstackError(f"{env('neo4j_uri')}: a bolt:// or neo4j:// URI, not {settings.neo4j_uri!r}")
    try:
        neo4j.GraphDatabase.driver(settings.neo4j_uri).close()
    except (neo4j.exceptions.ConfigurationError, ValueError) as exc:
        raise MemstackError(f"{env('neo4j_uri')}: {exc}") from None


def check_connections(settings: Settings, command: str) -> None:
    """Each store's address parses, and Postgres, which neither process can start without,
    answers: a wrong or unreachable address is one line now, rather than a traceback, or a
    pool that gives up after 30 s in one."""
    import psycopg

    from memory_core.errors import from_store_exception

    check_addresses(settings)
    try:
        psycopg.connect(settings.postgres_url.get_secret_value(), connect_timeout=5).close()
    except psycopg.Error as exc:
        reason = from_store_exception(exc, "postgres", "connect") or exc
        raise MemstackError(f"{command}: cannot reach a store: {reason}{no_stack_hint()}") from None


def serve(host: str, port: int, workers: int, log_level: str) -> None:
    import uvicorn

    from memory_core.telemetry import setup_json_logging

    check_process_options("serve", host, port, log_level)
    check_connections(stack_settings(), "serve")
    if not os.environ.get(TOKENS_FILE_ENV):
        # The file `token create` writes by default, even before it exists: the service watches
        # it, so a token made later works without a restart. The worker processes inherit the variable.
        os.environ[TOKENS_FILE_ENV] = str(tokens_file().resolve())
    check_tokens()  # the app itself warns, once, when there is no token
    setup_json_logging(log_level.upper())
    from memstack.observability import SERVICE_JOB, scraped_locally

    with scraped_locally(SERVICE_JOB, host, port):
        uvicorn.run(
            "memory_core.service.app:from_environment",
            factory=True,
            host=host,
            port=port,
            workers=workers,
            loop="uvloop",
            http="httptools",
            lifespan="on",
            access_log=False,
            log_config=None,
            log_level=log_level,
            timeout_graceful_shutdown=_service_settings().graceful_shutdown_s,
            server_header=False,
        )


def worker(host: str, port: int | None, log_level: str) -> None:
    """`port` None: memory_core's `worker_probe_port` setting (MEMORY_WORKER_PROBE_PORT or its default)."""
    from memory_core import StoreUnavailable
    from memory_core.errors import from_store_exception
    from memory_core.worker import run_worker
    from memstack.observability import WORKER_JOB, scraped_locally

    check_option_values(port, log_level)
    # The environment's settings alone first: a bad one (MEMORY_WORKER_PROBE_PORT=80) is named
    # even where no stack runs, as a bad option is.
    memory_settings()
    settings = stack_settings()
    port = settings.worker_probe_port if port is None else port
    check_process_options("worker", host, port, log_level)
    check_connections(settings, "worker")
    try:
        with scraped_locally(WORKER_JOB, host, port):
            run_worker(settings, host=host, port=port, log_level=log_level)
    except Exception as exc:
        mapped = from_store_exception(exc, "postgres", "connect")
        if isinstance(mapped, StoreUnavailable):
            raise MemstackError(f"worker: cannot reach a store: {mapped}") from None
        if isinstance(exc, OSError):  # the probe port is taken or not ours to bind
            raise MemstackError(f"worker: {exc}") from None
        raise


def _names_stores() -> bool:
    from memory_core.settings import CONNECTION_ENV_VARS

    return any(name in os.environ for name in CONNECTION_ENV_VARS)


def no_stack_hint() -> str:
    """What to add to "cannot reach a store" when nothing named the stores: the defaults were
    tried because there is no stack to take them from."""
    return "" if _names_stores() else " (no store variables set and no stack in $MEMSTACK_HOME: `memstack up`)"


def adopt_stack() -> None:
    """When the environment names no store, name the stack in $MEMSTACK_HOME there, as
    `eval "$(memstack env)"` would: `serve`'s worker processes and the app read the environment,
    and `migrate`, `serve`, `worker` and `graph rebuild` then agree on the stores. An environment
    that names any store (a deployment's variables) is left as it is."""
    from memstack.local.backend import BACKEND_ENV, get_backend
    from memstack.local.state import default_home, load

    if _names_stores():
        return
    state = load(default_home())
    if state is not None:
        os.environ.update(get_backend(os.environ.get(BACKEND_ENV) or state.backend).endpoints().env())


def stack_settings() -> Settings:
    """The stores to talk to: the environment's when it names any (`eval "$(memstack env)"`,
    a deployment's variables), else those of the stack in $MEMSTACK_HOME when it holds one,
    else memory_core's defaults."""
    adopt_stack()
    return memory_settings()


def migrate(settings: Settings | None = None) -> dict[str, list[int]]:
    """Apply pending migrations (idempotent; concurrent runners wait on a lock); returns what was applied."""
    import neo4j

    from memory_core import EmbeddingDimensionMismatch, StoreUnavailable
    from memory_core import migrate as run_migrations
    from memory_core.errors import from_store_exception

    settings = settings or stack_settings()
    try:
        return asyncio.run(run_migrations(settings))
    except EmbeddingDimensionMismatch as exc:
        raise MemstackError(f"migrate: {exc}") from None
    except Exception as exc:
        # Before the mapping, which counts a refused login as Neo4j unavailable: here the fix is known.
        if isinstance(exc, neo4j.exceptions.ClientError) and (exc.code or "").startswith("Neo.ClientError.Security."):
            raise MemstackError(
                f"migrate: Neo4j refused the credentials (NEO4J_USER, NEO4J_PASSWORD): {exc.message}"
            ) from None
        mapped = from_store_exception(exc, "postgres", "migrate")
        if isinstance(mapped, StoreUnavailable):
            raise MemstackError(f"migrate: cannot reach a store: {mapped}") from None
        raise


def create_token(tenant: str, file: Path) -> str:
    """Append the new token's hash to `file` (created 0600) and return the token itself."""
    from memory_core.service.auth import hash_line, new_token

    token = new_token()
    try:
        line = hash_line(tenant, token)
    except ValueError as exc:
        raise MemstackError(f"--tenant: {exc}") from None
    from memstack.local.state import default_home

    # The stack's home is made for its tokens file, as `up` makes it; any other directory is
    # the operator's to make: a mistyped one is refused rather than created.
    if file.resolve().parent != default_home() and not file.parent.is_dir():
        raise MemstackError(f"cannot write {file}: no such directory {file.parent}")
    try:
        file.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(file, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        os.fchmod(fd, 0o600)  # a file made before, by hand or by an older version, is made private too
    except OSError as exc:
        raise MemstackError(f"cannot write {file}: {exc.strerror}") from None
    with os.fdopen(fd, "a") as handle:
        handle.write(line + "\n")
    return token
