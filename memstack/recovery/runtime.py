"""Where a recovery step touches the stores' files, per backend: local directories (process)
or Docker volumes (containers). Everything else in recovery goes through the stores' published
ports with the host's own tools (pg_basebackup, redis and Postgres clients), the same for both.

The containers backend keeps what must outlive a lost volume on the host, as the process
backend keeps it outside the data dirs: the WAL archive and the Redis append-only file are
bind mounts of host directories beside it. A volume "moved aside" is copied out into the attic
(Docker cannot rename a volume) before it is removed.
"""

from __future__ import annotations

import io
import shutil
import signal
import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg

from memstack.errors import MemstackError
from memstack.local.postgres_server import (
    CONTAINER_DATA,
    CONTAINER_PGDATA,
    CONTAINER_WAL_DIR,
    admin_url,
    chown_tree,
    restore_command,
)
from memstack.local.postgres_server import probe as postgres_probe
from memstack.local.processes import Launch, free_port, port_is_free, spawn, start_time, stop_pid, wait_ready
from memstack.local.redis_server import AOF_DIRNAME, aof_archive_dir, container_dir

RECOVERY_TIMEOUT_S = 3600
# Where a recovering container reads the archived WAL it replays.
_WAL_SOURCE = "/var/lib/postgresql/wal-source"
RECOVERY_KEYS = (
    "restore_command",
    "recovery_target_time",
    "recovery_target",
    "recovery_target_action",
    "recovery_target_timeline",
)


def _conf_value(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def recovery_conf(text: str, settings: dict[str, str] | None) -> str:
    """postgresql.auto.conf `text` with the recovery settings replaced by `settings` (or removed)."""
    lines = [line for line in text.splitlines() if line.split("=", 1)[0].strip() not in RECOVERY_KEYS]
    lines += [f"{key} = {_conf_value(value)}" for key, value in (settings or {}).items()]
    return "\n".join(lines) + "\n"


def move_dir_aside(path: Path, attic: Path) -> Path | None:
    """Move a data dir (or, for a symlink, the dir it points to) into the attic."""
    if not path.exists() and not path.is_symlink():
        return None
    attic.mkdir(parents=True, exist_ok=True)
    target = attic / path.name
    if path.is_symlink():
        real = path.resolve()
        path.unlink()
        if real.exists():
            shutil.move(str(real), target)
    else:
        shutil.move(str(path), target)
    return target


def _recovery_settings(restore_cmd: str, target: dict[str, str]) -> dict[str, str]:
    return {
        "restore_command": restore_cmd,
        "recovery_target_action": "promote",
        "recovery_target_timeline": "latest",
        **target,
    }


def _promoted(url: str, wait: Any, what: str) -> int:
    """Wait until the recovering server answers (without hot standby, that is once promoted);
    its timeline."""
    wait()
    with psycopg.connect(url, autocommit=True) as conn:
        in_recovery = conn.execute("SELECT pg_is_in_recovery()").fetchone()[0]
        timeline = conn.execute("SELECT timeline_id FROM pg_control_checkpoint()").fetchone()[0]
    if in_recovery:
        raise MemstackError(f"postgres did not finish recovery; see {what}")
    return timeline


class ProcessRuntime:
    """The stores as local processes: their data dirs are directories of the home."""

    def __init__(self, stack) -> None:
        self.stack = stack

    def running(self) -> list[str]:
        from memstack.local.backend import CORE_SERVICES
        from memstack.local.processes import is_running

        state = self.stack.state()
        return [
            n
            for n in CORE_SERVICES
            if n in state.services and is_running(state.services[n].pid, state.services[n].started)
        ]

    def move_aside(self, service: str, attic: Path) -> Path | None:
        return move_dir_aside(self.stack.home / service, attic)

    def live_aof_dir(self) -> Path:
        return aof_archive_dir(self.stack.home)

    def copy_redis_snapshot(self, name: str, dest: Path) -> None:
        shutil.copy2(self.stack.redis_server().data_dir / name, dest)

    def restore_postgres(self, set_root: Path, target: dict[str, str], wal_source: Path) -> int:
        """A data dir from the base backup, recovered with the archived WAL up to `target`
        and promoted, then stopped; returns its timeline."""
        pg = self.stack.postgres()
        pg.prepare_dirs()
        pgdata = pg.pgdata
        pgdata.mkdir(mode=0o700)
        with tarfile.open(set_root / "postgres" / "base.tar") as tar:
            tar.extractall(pgdata, filter="fully_trusted")
        with tarfile.open(set_root / "postgres" / "pg_wal.tar") as tar:
            tar.extractall(pgdata / "pg_wal", filter="fully_trusted")
        # A base backup of a restored cluster carries its signal file: start from a clean slate.
        (pgdata / "standby.signal").unlink(missing_ok=True)
        (pgdata / "postmaster.pid").unlink(missing_ok=True)
        conf = pgdata / "postgresql.auto.conf"
        text = conf.read_text() if conf.exists() else ""
        conf.write_text(recovery_conf(text, _recovery_settings(restore_command(wal_source), target)))
        (pgdata / "recovery.signal").touch()
        pgdata.chmod(0o700)
        if pg.run_as:
            chown_tree(pg.data_dir.resolve(), pg.run_as)
        record = self.stack.state().services.get("postgres")
        port = record.port if record and port_is_free(record.port) else free_port()
        url = admin_url(port, self.stack.state().credentials, "postgres")
        launch = pg.launch(port)
        # Without hot standby no client gets in before recovery ends: a probe that answers means promoted.
        recovering = Launch(
            argv=[*launch.argv, "-c", "hot_standby=off"],
            log=launch.log,
            env=launch.env,
            cwd=launch.cwd,
            user=launch.user,
        )
        proc = spawn(recovering)
        try:
            timeline = _promoted(
                url,
                lambda: wait_ready(
                    "postgres recovery",
                    proc.poll,
                    lambda: postgres_probe(url),
                    timeout=RECOVERY_TIMEOUT_S,
                    log=launch.log,
                ),
                str(launch.log),
            )
        finally:
            if proc.poll() is None:
                stop_pid(proc.pid, start_time(proc.pid), timeout=60, sig=signal.SIGINT)
            proc.wait()
        conf.write_text(recovery_conf(conf.read_text(), None))
        return timeline


class _Chunks(io.RawIOBase):
    """A file over an iterator of byte chunks (a Docker archive stream)."""

    def __init__(self, chunks: Iterator[bytes]) -> None:
        self._chunks = chunks
        self._rest = b""

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        while not self._rest:
            try:
                self._rest = next(self._chunks)
            except StopIteration:
                return 0
        n = min(len(buffer), len(self._rest))
        buffer[:n], self._rest = self._rest[:n], self._rest[n:]
        return n


class ContainerRuntime:
    """The stores as containers of the containers backend: their data in named volumes."""

    def __init__(self, stack) -> None:
        self.stack = stack

    @property
    def backend(self):
        return self.stack.backend

    def running(self) -> list[str]:
        from memstack.local.backend import CORE_SERVICES

        state = self.stack.state()
        return [n for n in CORE_SERVICES if self.backend._running(state.services.get(n))]

    def _volume(self, service: str):
        import docker.errors

        try:
            return self.backend._docker.volumes.get(self.backend.container_name(service))
        except docker.errors.NotFound:
            return None

    def move_aside(self, service: str, attic: Path) -> Path | None:
        """Copy the service's volume into the attic, then remove the container and the volume."""
        container = self.backend.container(service)
        volume = self._volume(service)
        if container is None and volume is None:
            return None
        target = attic / service
        if container is not None:
            state = self.stack.state()
            spec = self.backend._service(service, state).container_spec()
            target.mkdir(parents=True, exist_ok=True)
            stream, _ = container.get_archive(spec.data_path)
            with tarfile.open(fileobj=io.BufferedReader(_Chunks(iter(stream)), 1 << 20), mode="r|") as tar:
                tar.extractall(target, filter="fully_trusted")
            container.remove(force=True)
        if volume is not None:
            volume.remove(force=True)
        return target

    def live_aof_dir(self) -> Path:
        return container_dir(self.stack.home) / AOF_DIRNAME

    def copy_redis_snapshot(self, name: str, dest: Path) -> None:
        shutil.copy2(container_dir(self.stack.home) / name, dest)

    def restore_postgres(self, set_root: Path, target: dict[str, str], wal_source: Path) -> int:
        """A fresh volume from the base backup (written by a root helper from the image, so the
        image's user owns it), then the image's server on it, recovering from the archive
        mounted where the running container has it, promoted, and stopped; returns its timeline."""
        import docker.errors

        backend, state = self.backend, self.stack.state()
        service = backend._service("postgres", state)
        spec = service.container_spec()
        image, _ = backend._image(service, state)
        volume = backend.container_name("postgres")
        (own_archive,) = spec.writable
        # It reads `wal_source`; once promoted, it archives into its own archive, as it will run.
        mounts = {own_archive: {"bind": CONTAINER_WAL_DIR, "mode": "rw"}}
        if Path(own_archive).resolve() == wal_source.resolve():
            source = CONTAINER_WAL_DIR
        else:
            source = _WAL_SOURCE
            mounts[str(wal_source)] = {"bind": _WAL_SOURCE, "mode": "ro"}
        with tarfile.open(set_root / "postgres" / "base.tar") as tar:
            member = tar.extractfile("postgresql.auto.conf")
            text = member.read().decode() if member else ""
        conf = recovery_conf(text, _recovery_settings(restore_command(Path(source)), target))
        script = (
            f"set -eu; P={CONTAINER_PGDATA}; mkdir -p $P/pg_wal;"
            " tar -xf /backup/base.tar -C $P; tar -xf /backup/pg_wal.tar -C $P/pg_wal;"
            ' rm -f $P/standby.signal $P/postmaster.pid; printf "%s" "$RECOVERY_CONF" > $P/postgresql.auto.conf;'
            f" touch $P/recovery.signal; chown -R {backend._docker.images.get(image).attrs['Config'].get('User') or 'postgres'}"
            f" {CONTAINER_DATA}; chmod 700 $P"
        )
        try:
            backend._docker.containers.run(
                image,
                entrypoint="sh",
                command=["-c", script],
                user="0",
                environment={"RECOVERY_CONF": conf},
                volumes={
                    volume: {"bind": CONTAINER_DATA, "mode": "rw"},
                    str((set_root / "postgres").resolve()): {"bind": "/backup", "mode": "ro"},
                },
                remove=True,
            )
        except docker.errors.ContainerError as exc:
            raise MemstackError(f"placing the base backup in volume {volume} failed: {exc.stderr!r}") from None
        backend._hand_over(image, "postgres", Path(own_archive))
        port = free_port()
        url = admin_url(port, state.credentials, "postgres")
        recovering = backend._docker.containers.run(
            image,
            name=backend.container_name("postgres-recovery"),
            detach=True,
            environment=spec.env,
            # Without hot standby no client gets in before recovery ends: a probe that answers means promoted.
            command=[*(spec.command or []), "-c", "hot_standby=off"],
            volumes={
                volume: {"bind": CONTAINER_DATA, "mode": "rw"},
                **mounts,
                **{host: {"bind": path, "mode": "ro"} for host, path in spec.files.items()},
            },
            ports={"5432/tcp": ("127.0.0.1", port)},
        )

        def exit_code() -> int | None:
            recovering.reload()
            return None if recovering.status in ("created", "running") else recovering.attrs["State"]["ExitCode"]

        log = self.stack.home / "logs" / "postgres-recovery.log"
        try:
            timeline = _promoted(
                url,
                lambda: wait_ready(
                    "postgres recovery", exit_code, lambda: postgres_probe(url), timeout=RECOVERY_TIMEOUT_S, log=log
                ),
                f"docker logs {recovering.name}",
            )
            with psycopg.connect(url, autocommit=True) as conn:
                for key in RECOVERY_KEYS:
                    conn.execute(f"ALTER SYSTEM RESET {key}")
        finally:
            recovering.stop(timeout=60)
            log.parent.mkdir(parents=True, exist_ok=True)
            log.write_bytes(recovering.logs())
            recovering.remove(force=True)
        return timeline


def runtime_of(stack) -> ProcessRuntime | ContainerRuntime:
    return ContainerRuntime(stack) if stack.state().backend == "containers" else ProcessRuntime(stack)
