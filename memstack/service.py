"""What `memstack serve`, `worker`, `migrate` and `token create` do; the CLI only parses options.

The defaults below are the image's contract; tests/service/test_contract.py checks them against
infra.config (which is not installed in the image, so it cannot be imported here).
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import TYPE_CHECKING

from memstack.errors import MemstackError

if TYPE_CHECKING:
    from memory_core.settings import Settings

SERVICE_PORT = 8080
WORKER_HEALTH_PORT = 8081
TOKENS_FILE_ENV = "MEMSTACK_TOKENS_FILE"
# Where `token create` writes and `serve` reads when MEMSTACK_TOKENS_FILE is not set.
DEFAULT_TOKENS_FILE = Path("tokens")


def tokens_file() -> Path:
    return Path(os.environ.get(TOKENS_FILE_ENV) or DEFAULT_TOKENS_FILE)


def _service_settings():
    from pydantic import ValidationError

    from memory_core.service.config import ServiceSettings

    try:
        return ServiceSettings()
    except ValidationError as exc:
        first = exc.errors()[0]
        raise MemstackError(f"MEMSTACK_{'_'.join(map(str, first['loc'])).upper()}: {first['msg']}") from None


def check_tokens() -> int:
    """Load the token table once before uvicorn starts, so a bad file is one line and exit 2."""
    from memory_core.service.auth import TokenFileError, TokenTable

    try:
        return len(TokenTable.load(_service_settings()))
    except TokenFileError as exc:
        raise MemstackError(str(exc)) from None


def serve(host: str, port: int, workers: int, log_level: str) -> None:
    import uvicorn

    from memory_core.telemetry import setup_json_logging

    if not os.environ.get(TOKENS_FILE_ENV) and tokens_file().exists():
        # The file `token create` wrote by default; the worker processes inherit the variable.
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


def worker(host: str, port: int, log_level: str) -> None:
    from memory_core.worker import run_worker
    from memstack.observability import WORKER_JOB, scraped_locally

    try:
        with scraped_locally(WORKER_JOB, host, port):
            run_worker(host=host, port=port, log_level=log_level)
    except OSError as exc:
        raise MemstackError(f"worker: {exc}") from None


def migrate(settings: Settings | None = None) -> dict[str, list[int]]:
    """Apply pending migrations (idempotent; concurrent runners wait on a lock); returns what was applied."""
    from memory_core import EmbeddingDimensionMismatch, Settings, StoreUnavailable
    from memory_core import migrate as run_migrations
    from memory_core.errors import from_store_exception

    try:
        return asyncio.run(run_migrations(settings or Settings()))
    except EmbeddingDimensionMismatch as exc:
        raise MemstackError(f"migrate: {exc}") from None
    except Exception as exc:
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
    try:
        fd = os.open(file, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    except OSError as exc:
        raise MemstackError(f"cannot write {file}: {exc.strerror}") from None
    with os.fdopen(fd, "a") as handle:
        handle.write(line + "\n")
    return token
