"""The local stack a recovery command works on: its state, its services and admin connections."""

from __future__ import annotations

import contextlib
import fcntl
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import psycopg
import redis

from memstack.errors import MemstackError
from memstack.local.backend import CORE_SERVICES, get_backend
from memstack.local.postgres_server import PostgresServer, admin_url, relocation_dir
from memstack.local.process import ProcessBackend
from memstack.local.redis_server import RedisServer
from memstack.local.state import StackState, default_home, load

# Tables the counts of a backup cover: every table of the application schema.
# The backends whose stores run here, so that their files can be backed up and restored.
RECOVERABLE = ("process", "containers")
_USER_TABLES = "SELECT relname FROM pg_stat_user_tables WHERE schemaname = 'public' ORDER BY relname"


@dataclass
class LocalStack:
    home: Path

    @classmethod
    def at(cls, home: Path | None = None) -> LocalStack:
        return cls((home or default_home()).resolve())

    @cached_property
    def backend(self) -> ProcessBackend:
        """The backend that runs this home's stack: process, or containers (a ProcessBackend too)."""
        backend = get_backend(self.state().backend, home=self.home)
        assert isinstance(backend, ProcessBackend)
        return backend

    @cached_property
    def runtime(self):
        from memstack.recovery.runtime import runtime_of

        return runtime_of(self)

    def state(self) -> StackState:
        state = load(self.home)
        if state is None:
            raise MemstackError(f"no local stack in {self.home}; start one with `memstack up`")
        if state.backend not in RECOVERABLE:
            raise MemstackError(
                f"backup and restore work on the {' and '.join(RECOVERABLE)} backends;"
                f" {self.home} holds a {state.backend!r} stack"
            )
        return state

    def postgres(self) -> PostgresServer:
        service = self.backend._service("postgres", self.state())
        assert isinstance(service, PostgresServer)
        return service

    def redis_server(self) -> RedisServer:
        service = self.backend._service("redis", self.state())
        assert isinstance(service, RedisServer)
        return service

    def running(self) -> list[str]:
        return self.runtime.running()

    def require_running(self) -> StackState:
        state = self.state()
        down = [n for n in CORE_SERVICES if n not in self.running()]
        if down:
            raise MemstackError(f"{', '.join(down)} not running in {self.home}; start the stack with `memstack up`")
        return state

    def port(self, service: str) -> int:
        record = self.state().services.get(service)
        if record is None:
            raise MemstackError(f"{service} has never run in {self.home}")
        return record.port

    def admin_url(self, dbname: str = "memstack") -> str:
        return admin_url(self.port("postgres"), self.state().credentials, dbname)

    def admin(self, dbname: str = "memstack") -> psycopg.Connection:
        return psycopg.connect(self.admin_url(dbname), autocommit=True, connect_timeout=5)

    def redis(self) -> redis.Redis:
        return redis.Redis.from_url(self.state().services["redis"].url, socket_timeout=30)

    def row_counts(self) -> dict[str, int]:
        with self.admin() as conn:
            tables = [r[0] for r in conn.execute(_USER_TABLES).fetchall()]
            return {t: conn.execute(f'SELECT count(*) FROM "{t}"').fetchone()[0] for t in tables}

    @contextlib.contextmanager
    def exclusive(self) -> Iterator[None]:
        """Hold the home's recovery lock: two backups, restores or drills on one stack at once
        would kill, move and restart each other's services."""
        self.home.mkdir(parents=True, exist_ok=True)
        with open(self.home / ".recovery.lock", "w") as lock:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise MemstackError(
                    f"another backup, restore or drill is running on {self.home}; wait for it to end"
                ) from None
            yield

    def remove(self) -> None:
        """Delete this home, what was placed outside it for the Postgres system user, and its
        containers and volumes."""
        state = load(self.home)
        if state is not None and state.backend == "containers":
            self.backend.remove()
        shutil.rmtree(relocation_dir(self.home), ignore_errors=True)
        shutil.rmtree(self.home, ignore_errors=True)
