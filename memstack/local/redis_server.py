"""Redis from Debian's redis-server: AOF on, password required, loopback only."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import redis

from memstack.errors import MemstackError
from memstack.local.processes import Launch
from memstack.local.service import ContainerSpec, LocalService

APPENDFSYNC_CHOICES = ("everysec", "always")
# The acknowledged writes a killed Redis may lose, as a span of time, by appendfsync policy.
# everysec: the fsync runs in a background thread, and while one is still running Redis 7.0
# postpones the write itself (not only the fsync), for up to 2 s, and answers clients meanwhile;
# a kill in that window loses what was postponed. always: written and fsynced before the reply.
LOSS_WINDOW_S = {"everysec": 2.0, "always": 0.0}
MAXMEMORY = "512mb"
# A full Redis refuses writes instead of evicting: an acknowledged write is never dropped silently.
MAXMEMORY_POLICY = "noeviction"
AOF_DIRNAME = "appendonly"


def aof_archive_dir(home: Path) -> Path:
    """Where the append-only file really lives: beside the WAL archive, outside the data dir,
    so that losing the data dir loses no acknowledged write (the AOF is Redis's log, as the
    archived WAL is Postgres's). Same filesystem as the home: an AOF rewrite renames across."""
    return home / "backups" / "redis-aof"


def container_dir(home: Path) -> Path:
    """The containers backend's Redis working directory, a host directory outside the volume
    for the same reason, holding the append-only file (AOF_DIRNAME): one mount, since an AOF
    rewrite renames its temporary file from the working directory into the AOF's."""
    return home / "backups" / "redis"


# Where the containers backend mounts container_dir.
CONTAINER_DIR = "/var/lib/redis-log"


def probe(url: str) -> bool:
    client = redis.Redis.from_url(url, socket_timeout=1, socket_connect_timeout=1)
    try:
        # While the AOF loads, PING answers LOADING: not ready yet.
        return bool(client.ping())
    except (redis.ConnectionError, redis.TimeoutError, redis.BusyLoadingError, redis.ResponseError):
        return False
    finally:
        client.close()


class RedisServer(LocalService):
    name = "redis"
    ready_timeout = 15.0

    def check_prerequisites(self) -> None:
        if shutil.which("redis-server") is None:
            raise MemstackError(
                "redis-server not found on PATH; install it with `apt-get install redis-server` or run `make setup`"
            )
        if self.appendfsync not in APPENDFSYNC_CHOICES:
            raise MemstackError(
                f"appendfsync must be one of {', '.join(APPENDFSYNC_CHOICES)}, not {self.appendfsync!r}"
            )

    @property
    def config_file(self):
        return self.data_dir / "redis.conf"

    @property
    def aof_dir(self) -> Path:
        return self.data_dir / AOF_DIRNAME

    def _link_aof(self) -> None:
        archive = aof_archive_dir(self.home)
        archive.mkdir(parents=True, exist_ok=True)
        if self.aof_dir.is_dir() and not self.aof_dir.is_symlink():
            # A data dir made before the AOF moved out of it: carry its AOF over once.
            if any(archive.iterdir()):
                return
            for child in self.aof_dir.iterdir():
                shutil.move(str(child), archive / child.name)
            self.aof_dir.rmdir()
        if not self.aof_dir.is_symlink():
            self.aof_dir.symlink_to(archive, target_is_directory=True)

    def prepare(self, port: int) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self._link_aof()
        # The password goes in a 0600 file, never on the command line where `ps` shows it.
        config = "\n".join(
            [
                "bind 127.0.0.1",
                f"port {port}",
                "protected-mode yes",
                "daemonize no",
                f"dir {self.data_dir}",
                "appendonly yes",
                f"appenddirname {AOF_DIRNAME}",
                f"appendfsync {self.appendfsync}",
                'save ""',
                f"requirepass {self.credentials.redis_password}",
                f"maxmemory {MAXMEMORY}",
                f"maxmemory-policy {MAXMEMORY_POLICY}",
                "",
            ]
        )
        fd = os.open(self.config_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(config)

    def launch(self, port: int) -> Launch:
        return Launch(argv=["redis-server", str(self.config_file)], log=self.log, cwd=self.data_dir)

    def probe(self, port: int) -> bool:
        return probe(self.url(port))

    def container_spec(self) -> ContainerSpec:
        return ContainerSpec(
            image="redis:7",
            port=6379,
            data_path="/data",
            command=[
                "redis-server",
                "--dir",
                CONTAINER_DIR,
                "--appendonly",
                "yes",
                "--appenddirname",
                AOF_DIRNAME,
                "--appendfsync",
                self.appendfsync,
                "--requirepass",
                self.credentials.redis_password,
                "--maxmemory",
                MAXMEMORY,
                "--maxmemory-policy",
                MAXMEMORY_POLICY,
            ],
            # The append-only file on the host, outside the volume, as with the process backend.
            writable={str(container_dir(self.home).resolve()): CONTAINER_DIR},
        )

    def url(self, port: int) -> str:
        return f"redis://:{self.credentials.redis_password}@127.0.0.1:{port}/0"
