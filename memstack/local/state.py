"""The local stack's state file: what runs where, with which credentials.

It lives at `$MEMSTACK_HOME/state.json` (default `./.memstack`), mode 0600, because it holds
the generated passwords. Credentials are made once per home and kept across `down`/`up`,
since the data directories they protect are kept too.
"""

from __future__ import annotations

import json
import os
import secrets
from pathlib import Path

from pydantic import BaseModel, Field

from memstack.errors import MemstackError

HOME_ENV = "MEMSTACK_HOME"
# Where Postgres archives its WAL (default `$MEMSTACK_HOME/backups/wal`); `memstack up --wal-dir` sets it too.
WAL_DIR_ENV = "MEMSTACK_WAL_DIR"
STATE_FILE = "state.json"


def default_home() -> Path:
    return Path(os.environ.get(HOME_ENV) or Path.cwd() / ".memstack").resolve()


def new_password() -> str:
    # URL-safe, so it can stand in a connection URL without quoting.
    return secrets.token_urlsafe(24)


class Credentials(BaseModel):
    redis_password: str = Field(default_factory=new_password)
    postgres_password: str = Field(default_factory=new_password)
    postgres_admin_password: str = Field(default_factory=new_password)
    neo4j_password: str = Field(default_factory=new_password)


class ServiceState(BaseModel):
    port: int
    data_dir: str
    log: str
    url: str
    pid: int | None = None
    # Kernel start time of `pid`: together they survive pid reuse after a reboot or crash.
    started: int | None = None
    # Backend-specific handle, e.g. a container id.
    handle: str | None = None


class StackState(BaseModel):
    backend: str
    credentials: Credentials = Field(default_factory=Credentials)
    appendfsync: str = "everysec"
    # The WAL archive of Postgres, when not the default under the home.
    wal_dir: str | None = None
    # The containers backend's image source: local (built here) or official (from a registry).
    images: str | None = None
    services: dict[str, ServiceState] = Field(default_factory=dict)
    # Processes spawned but not yet ready (nor set up: Postgres's roles), recorded as soon as they
    # exist, so that `down`, or the next `up`, stops one whose `up` was killed before it was.
    starting: dict[str, ServiceState] = Field(default_factory=dict)


def state_path(home: Path) -> Path:
    return home / STATE_FILE


def load(home: Path) -> StackState | None:
    path = state_path(home)
    try:
        raw = path.read_text()
    except FileNotFoundError:
        return None
    try:
        return StackState.model_validate_json(raw)
    except ValueError as exc:
        raise MemstackError(
            f"state file {path} is not valid ({exc.__class__.__name__}); remove it and run `memstack up`"
        ) from None


def recorded_backend(home: Path | None) -> str | None:
    """The backend of the stack `home` (default: $MEMSTACK_HOME) holds, if it holds one."""
    try:
        state = load(home or default_home())
    except MemstackError:
        return None  # the command that reads the state reports it
    return state.backend if state else None


def check_backend(home: Path, state: StackState | None, backend: str) -> None:
    """A home holds one backend's stack: another backend must not start, stop, remove or report on it."""
    if state is not None and state.backend != backend:
        raise MemstackError(
            f"{home} holds a {state.backend!r} stack; run `memstack down --backend {state.backend}` or use another MEMSTACK_HOME"
        )


def save(home: Path, state: StackState) -> None:
    home.mkdir(parents=True, exist_ok=True)
    path = state_path(home)
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(state.model_dump(mode="json"), f, indent=2)
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)
