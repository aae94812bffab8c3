"""PostgreSQL 16 with pgvector, from the binaries the `pgserver` wheel ships.

Two roles: `postgres`, the superuser, used only here to create the database and the
`vector` extension (pgvector is not a trusted extension); and `memstack`, an ordinary role
that owns the `memstack` database. POSTGRES_URL names `memstack`, so row-level security
applies to the application as it does in Kubernetes, where CloudNativePG's `app` user
is likewise a non-superuser owner.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import pwd
import re
import shlex
import shutil
import signal
import subprocess
from pathlib import Path

import psycopg
from psycopg import sql

from memstack.errors import MemstackError
from memstack.local.processes import Launch
from memstack.local.service import ContainerSpec, LocalService
from memstack.local.state import Credentials

APP_ROLE = "memstack"
APP_DATABASE = "memstack"
ADMIN_ROLE = "postgres"
# Postgres refuses to run as root; when we are root it runs as this system user.
SYSTEM_USER = "memstack"
# Where the data of a home the system user cannot reach goes instead (symlinked from the home).
SYSTEM_USER_ROOT = Path("/var/lib/memstack")
# Small WAL segments, so that a segment switched every few seconds (archive_timeout) costs 1 MB
# of archive, not 16 MB.
WAL_SEGMENT_MB = 1
# The data-loss window of the WAL archive: a partly filled segment is archived after this long.
ARCHIVE_TIMEOUT_S = 2
# Clusters made before WAL_SEGMENT_MB (16 MB segments) switch less often, to bound archive growth.
LEGACY_ARCHIVE_TIMEOUT_S = 60


# The buffer pool's size bounds (MB): Postgres' default at the low end; at the high end, a pool
# past which the kernel's cache serves as well.
SHARED_BUFFERS_MB_RANGE = (128, 8192)
# Sets the buffer pool's size (MB) instead, for a machine shared with other servers.
SHARED_BUFFERS_ENV = "MEMSTACK_POSTGRES_SHARED_BUFFERS_MB"

# Inside a container (the containers backend): the data dir, in the image's volume, and where
# the host's WAL archive is mounted. The data dir is a sub-directory of the volume, as the
# official image recommends, and as the local image's entrypoint does.
CONTAINER_DATA = "/var/lib/postgresql/data"
CONTAINER_PGDATA = CONTAINER_DATA + "/pgdata"
CONTAINER_WAL_DIR = "/var/lib/postgresql/wal-archive"
CONTAINER_HBA = "/etc/memstack/pg_hba.conf"
# Password logins from the stack network and the host (its published port arrives from the
# bridge's gateway), for replication too: `memstack backup` runs the host's pg_basebackup
# against the published port. Neither image's own pg_hba.conf lets replication in from there.
CONTAINER_HBA_RULES = """\
host all all 0.0.0.0/0 scram-sha-256
host all all ::/0 scram-sha-256
host replication all 0.0.0.0/0 scram-sha-256
host replication all ::/0 scram-sha-256
"""


def default_wal_dir(home: Path) -> Path:
    return home / "backups" / "wal"


def archive_command(wal_dir: Path) -> str:
    """Copy a finished segment into the archive: atomically (temp file, sync, rename), and
    idempotently (a segment already archived with the same bytes counts as done, a different
    one is an error, as the Postgres documentation asks). Group-readable: the archive directory's
    group is the operator's when a container's user writes it."""
    d = shlex.quote(str(wal_dir))
    return (
        f"if [ -f {d}/%f ]; then cmp -s %p {d}/%f; else cp %p {d}/%f.tmp && chmod 640 {d}/%f.tmp"
        f" && sync {d}/%f.tmp && mv {d}/%f.tmp {d}/%f; fi"
    )


def archive_settings(wal_dir: Path, timeout_s: int) -> list[str]:
    """The server options that archive every WAL segment into `wal_dir`, one at least every
    `timeout_s` seconds."""
    return [
        "-c",
        "archive_mode=on",
        "-c",
        f"archive_command={archive_command(wal_dir)}",
        "-c",
        f"archive_timeout={timeout_s}s",
    ]


def machine_memory_bytes() -> int:
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def tuned_parameters(memory_mb: int, shared_buffers_mb: int | None = None) -> dict[str, str]:
    """Memory and planner settings for a server with `memory_mb` of memory, the same for the
    local stack and for the Kubernetes cluster (sized there to the pod's memory limit). The
    buffer pool takes a quarter of the memory, as the Postgres documentation advises for a
    dedicated server, within SHARED_BUFFERS_MB_RANGE: at 1M turns the HNSW index and the table
    are about 2 GB each, and a pool smaller than them turns every vector search into reads
    through the kernel. Pages are only allocated when used."""
    low, high = SHARED_BUFFERS_MB_RANGE
    if shared_buffers_mb is None:
        shared_buffers_mb = min(high, max(low, memory_mb // 4))
    return {
        "shared_buffers": f"{shared_buffers_mb}MB",
        # What the planner may assume the buffer pool and the kernel's cache hold together.
        "effective_cache_size": f"{max(shared_buffers_mb, memory_mb * 3 // 4)}MB",
        # The data is in memory or on an SSD: a random read costs about what a sequential one does,
        # so index scans (the tenant's rows, the HNSW index) are not priced out by sequential scans.
        "random_page_cost": "1.1",
        # JIT compiles a plan for tens of milliseconds when its estimated cost is high, as the
        # exact search of a large tenant's rows is; the queries here are short, so it never pays.
        "jit": "off",
    }


def server_settings(memory_bytes: int | None = None) -> list[str]:
    """The local server's options, for both backends (a container's options come after its
    image's defaults, so these win): `tuned_parameters` for the machine's memory, or with the
    buffer pool $MEMSTACK_POSTGRES_SHARED_BUFFERS_MB sets."""
    memory_mb = (memory_bytes if memory_bytes is not None else machine_memory_bytes()) // (1024 * 1024)
    low, _ = SHARED_BUFFERS_MB_RANGE
    chosen = os.environ.get(SHARED_BUFFERS_ENV)
    if chosen is not None and (not chosen.isdigit() or int(chosen) < low):
        raise MemstackError(f"{SHARED_BUFFERS_ENV} must be a whole number of MB, at least {low}, not {chosen!r}")
    settings = {
        **tuned_parameters(memory_mb, int(chosen) if chosen is not None else None),
        "max_connections": "200",
    }
    return [arg for name, value in settings.items() for arg in ("-c", f"{name}={value}")]


def restore_command(wal_dir: Path) -> str:
    d = shlex.quote(str(wal_dir))
    return f"cp {d}/%f %p"


def wal_segment_bytes(pgdata: Path) -> int:
    result = subprocess.run([str(bin_dir() / "pg_controldata"), str(pgdata)], capture_output=True, text=True)
    match = re.search(r"Bytes per WAL segment:\s+(\d+)", result.stdout)
    return int(match.group(1)) if match else 16 * 1024 * 1024


def bin_dir() -> Path:
    spec = importlib.util.find_spec("pgserver")
    if spec is None or spec.origin is None:
        raise MemstackError("the pgserver package is not installed; run `make setup` (pip install 'memstack[local]')")
    path = Path(spec.origin).parent / "pginstall" / "bin"
    if not (path / "postgres").exists():
        raise MemstackError(f"pgserver is installed but has no postgres binary at {path}")
    return path


def app_url(port: int, credentials: Credentials, host: str = "127.0.0.1") -> str:
    return f"postgresql://{APP_ROLE}:{credentials.postgres_password}@{host}:{port}/{APP_DATABASE}"


def admin_url(port: int, credentials: Credentials, dbname: str = APP_DATABASE, host: str = "127.0.0.1") -> str:
    return f"postgresql://{ADMIN_ROLE}:{credentials.postgres_admin_password}@{host}:{port}/{dbname}"


def probe(url: str) -> bool:
    try:
        with psycopg.connect(url, connect_timeout=2) as conn:
            conn.execute("SELECT 1")
        return True
    except psycopg.OperationalError:
        return False


def bootstrap(port: int, credentials: Credentials, host: str = "127.0.0.1") -> None:
    """Create (or re-password) the application role, its database, and the vector extension."""
    with psycopg.connect(admin_url(port, credentials, "postgres", host), autocommit=True) as conn:
        exists = conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (APP_ROLE,)).fetchone()
        conn.execute(
            sql.SQL("{} ROLE {} LOGIN NOSUPERUSER NOCREATEROLE PASSWORD {}").format(
                sql.SQL("ALTER" if exists else "CREATE"),
                sql.Identifier(APP_ROLE),
                sql.Literal(credentials.postgres_password),
            )
        )
        if not conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (APP_DATABASE,)).fetchone():
            conn.execute(
                sql.SQL("CREATE DATABASE {} OWNER {}").format(sql.Identifier(APP_DATABASE), sql.Identifier(APP_ROLE))
            )
    with psycopg.connect(admin_url(port, credentials, APP_DATABASE, host), autocommit=True) as conn:
        conn.execute("CREATE EXTENSION IF NOT EXISTS vector")


def _reachable_by(user: str, path: Path) -> bool:
    """Whether `user` can enter and write `path` (every parent must let it through)."""
    return subprocess.run(["test", "-x", str(path), "-a", "-w", str(path)], user=user).returncode == 0


def chown_tree(path: Path, user: str) -> None:
    for p in [path, *path.rglob("*")]:
        shutil.chown(p, user, user)


def relocation_dir(home: Path) -> Path:
    return SYSTEM_USER_ROOT / hashlib.sha256(str(home).encode()).hexdigest()[:16]


def place_for_system_user(path: Path, home: Path, user: str) -> Path:
    """Make `path` a directory `user` can use. Where a parent of the home blocks it (a 0700
    `mktemp -d` directory, root's home), the directory goes under SYSTEM_USER_ROOT and `path`
    becomes a symlink to it, so the home still shows everything in one place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists() and not path.is_symlink():
        path.mkdir()
    shutil.chown(path.resolve(), user, user)
    if _reachable_by(user, path.resolve()):
        return path.resolve()
    if path.is_symlink() or not path.is_relative_to(home):
        raise MemstackError(
            f"the {user} user (Postgres runs as it) cannot reach {path.resolve()}; let it through its parents (chmod o+x) or choose another directory"
        )
    own = relocation_dir(home)
    target = own / path.relative_to(home)
    SYSTEM_USER_ROOT.mkdir(mode=0o755, exist_ok=True)
    target.mkdir(parents=True, exist_ok=True)
    chown_tree(own, user)
    if not _reachable_by(user, target):
        raise MemstackError(
            f"the {user} user cannot reach {path} nor {target}; let it traverse the parent directories (chmod o+x)"
        )
    for child in path.iterdir():
        shutil.move(str(child), target / child.name)
    path.rmdir()
    path.symlink_to(target, target_is_directory=True)
    return target


def _ensure_system_user() -> str:
    try:
        pwd.getpwnam(SYSTEM_USER)
    except KeyError:
        subprocess.run(
            ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", SYSTEM_USER],
            check=True,
            capture_output=True,
        )
    return SYSTEM_USER


class PostgresServer(LocalService):
    name = "postgres"
    ready_timeout = 60.0
    # SIGINT is Postgres' "fast" shutdown; SIGTERM would wait for every client to leave.
    stop_signal = signal.SIGINT

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        # Outside the data dir, so that losing the data dir does not lose the archive.
        self.wal_dir: Path = default_wal_dir(self.home)

    @property
    def pgdata(self) -> Path:
        return self.data_dir.resolve() / "data"

    @property
    def run_as(self) -> str | None:
        return _ensure_system_user() if os.geteuid() == 0 else None

    def check_prerequisites(self) -> None:
        bin_dir()

    def _chown(self, path: Path) -> None:
        user = self.run_as
        if user:
            chown_tree(path, user)

    def _make_dir(self, path: Path) -> Path:
        user = self.run_as
        if user:
            return place_for_system_user(path, self.home, user)
        path.mkdir(parents=True, exist_ok=True)
        return path

    def prepare_dirs(self) -> None:
        """The data dir and the WAL archive, both where the server's user can write."""
        self.wal_dir = self._make_dir(self.wal_dir)
        self._make_dir(self.data_dir)

    def prepare(self, port: int) -> None:
        self.prepare_dirs()
        if (self.pgdata / "PG_VERSION").exists():
            return
        # The log directory is shared with other services; the postgres user only writes its own file.
        self.log.parent.mkdir(parents=True, exist_ok=True)
        self.log.touch(mode=0o600)
        pwfile = self.data_dir.resolve() / "initdb.pw"
        fd = os.open(pwfile, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(self.credentials.postgres_admin_password + "\n")
        self._chown(self.data_dir)
        self._chown(self.log)
        try:
            result = subprocess.run(
                [
                    str(bin_dir() / "initdb"),
                    "-D",
                    str(self.pgdata),
                    "-U",
                    ADMIN_ROLE,
                    "--auth=scram-sha-256",
                    f"--pwfile={pwfile}",
                    "--encoding=UTF8",
                    "--locale=C",
                    f"--wal-segsize={WAL_SEGMENT_MB}",
                ],
                capture_output=True,
                text=True,
                user=self.run_as,
            )
        finally:
            pwfile.unlink(missing_ok=True)
        if result.returncode != 0:
            shutil.rmtree(self.pgdata, ignore_errors=True)
            last = (result.stderr or result.stdout).strip().splitlines()[-1:]
            raise MemstackError(f"postgres initdb failed: {' '.join(last)}")

    def launch(self, port: int) -> Launch:
        return Launch(
            argv=[
                str(bin_dir() / "postgres"),
                "-D",
                str(self.pgdata),
                "-p",
                str(port),
                "-c",
                "listen_addresses=127.0.0.1",
                # No Unix socket: every client, tests included, goes through TCP and a password.
                "-c",
                "unix_socket_directories=",
                *server_settings(),
                "-c",
                "logging_collector=off",
                # WAL archiving, for point-in-time recovery from a base backup (memstack backup).
                *archive_settings(self.wal_dir, self.archive_timeout_s()),
            ],
            log=self.log,
            cwd=self.data_dir,
            user=self.run_as,
        )

    def archive_timeout_s(self) -> int:
        small = wal_segment_bytes(self.pgdata) <= WAL_SEGMENT_MB * 1024 * 1024
        return ARCHIVE_TIMEOUT_S if small else LEGACY_ARCHIVE_TIMEOUT_S

    def probe(self, port: int) -> bool:
        return probe(admin_url(port, self.credentials, "postgres"))

    def after_ready(self, port: int) -> None:
        bootstrap(port, self.credentials)

    def url(self, port: int) -> str:
        return app_url(port, self.credentials)

    def container_spec(self) -> ContainerSpec:
        return ContainerSpec(
            image="pgvector/pgvector:pg16",
            port=5432,
            data_path=CONTAINER_DATA,
            env={
                "POSTGRES_USER": ADMIN_ROLE,
                "POSTGRES_PASSWORD": self.credentials.postgres_admin_password,
                "POSTGRES_DB": "postgres",
                # The official image reads these; the local image's entrypoint does the same.
                "PGDATA": CONTAINER_PGDATA,
                "POSTGRES_INITDB_ARGS": f"--wal-segsize={WAL_SEGMENT_MB}",
            },
            # Both images' entrypoints pass options on to the server.
            command=[
                *server_settings(),
                *archive_settings(Path(CONTAINER_WAL_DIR), ARCHIVE_TIMEOUT_S),
                "-c",
                f"hba_file={CONTAINER_HBA}",
            ],
            files={str(self._container_hba()): CONTAINER_HBA},
            # The archive on the host, outside the volume: losing the volume does not lose it.
            writable={str(self.wal_dir.resolve()): CONTAINER_WAL_DIR},
        )

    def _container_hba(self) -> Path:
        path = self.home / "postgres-container" / "pg_hba.conf"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(CONTAINER_HBA_RULES)
        path.chmod(0o644)
        return path
