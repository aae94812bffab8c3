"""`memstack restore ID [--to-time T]`: bring the stack back from a backup set.

Order: refuse what cannot work (unknown id, a target time the backup and the WAL archive do
not cover, a running stack without --force, a damaged set); stop what runs; move the data
dirs aside (never delete them); Postgres from the base backup, replaying archived WAL up to
the target (or all of it); Redis from its live append-only file when restoring to the latest
point, else from the set's snapshot; start the stack; rebuild Neo4j from Postgres.
"""

from __future__ import annotations

import asyncio
import re
import shutil
import subprocess
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

from memory_core.stores.graph import GRAPH_UNAVAILABLE
from memstack.errors import MemstackError
from memstack.local.backend import CORE_SERVICES, OPTIONAL_SERVICES
from memstack.local.postgres_server import bin_dir
from memstack.recovery import graph, sets
from memstack.recovery.runtime import move_dir_aside
from memstack.recovery.stack import LocalStack

_SEGMENT = re.compile(r"^[0-9A-F]{24}$")
T = TypeVar("T")
AOF_MANIFEST = "appendonly.aof.manifest"
AOF_BASE = "appendonly.aof.1.base.rdb"


def parse_time(text: str) -> datetime:
    """ISO 8601; without an offset it is UTC."""
    try:
        value = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise MemstackError(f"--to-time must be an ISO 8601 time such as 2026-01-31T12:00:00Z, not {text!r}") from None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def archive_end(wal_dir: Path) -> datetime | None:
    """When the newest archived WAL segment was archived: every commit in the archive is older."""
    times = [p.stat().st_mtime for p in wal_dir.iterdir() if _SEGMENT.match(p.name)] if wal_dir.is_dir() else []
    return datetime.fromtimestamp(max(times), UTC) if times else None


_COMMIT = re.compile(r"desc: COMMIT (\d{4}-\d\d-\d\d \d\d:\d\d:\d\d(?:\.\d+)?) UTC")


def last_archived_commit(wal_dir: Path, look_back: int = 8) -> datetime | None:
    """The commit time of the newest transaction in the WAL archive (read with pg_waldump from
    the newest segments): every transaction committed before it is in the archive. A segment's
    file is written some time after the segment was closed, so its mtime overstates this."""
    segments = sorted(
        (p for p in wal_dir.iterdir() if _SEGMENT.match(p.name)) if wal_dir.is_dir() else (),
        key=lambda p: (p.stat().st_mtime, p.name),
    )
    for segment in reversed(segments[-look_back:]):
        result = subprocess.run([str(bin_dir() / "pg_waldump"), str(segment)], capture_output=True, text=True)
        commits = _COMMIT.findall(result.stdout)
        if commits:
            return datetime.fromisoformat(commits[-1]).replace(tzinfo=UTC)
    return None


def flush_archive(stack: LocalStack, timeout_s: float = 60) -> None:
    """Close the current WAL segment and wait until the archiver has it."""
    with stack.admin() as conn:
        (segment,) = conn.execute("SELECT pg_walfile_name(pg_switch_wal())").fetchone()
        deadline = time.monotonic() + timeout_s
        while True:
            last, failed = conn.execute("SELECT last_archived_wal, last_failed_wal FROM pg_stat_archiver").fetchone()
            if last is not None and last[8:] >= segment[8:]:
                return
            if time.monotonic() > deadline:
                raise MemstackError(
                    f"postgres did not archive WAL segment {segment} within {timeout_s:.0f}s "
                    f"(last archived {last}, last failed {failed}); see its log"
                )
            time.sleep(0.1)


def coverage(manifest: dict[str, Any], wal_dir: Path) -> tuple[datetime, datetime]:
    start = datetime.fromisoformat(manifest["postgres"]["consistent_at"])
    end = archive_end(wal_dir)
    return start, max(start, end) if end else start


def _restore_postgres(stack: LocalStack, set_root: Path, target: dict[str, str], wal_source: Path) -> dict[str, Any]:
    started = time.monotonic()
    timeline = stack.runtime.restore_postgres(set_root, target, wal_source)
    return {"seconds": round(time.monotonic() - started, 3), "timeline": timeline}


def _place_redis_snapshot(stack: LocalStack, set_root: Path) -> None:
    """The set's RDB snapshot as the base of a fresh multi-part AOF: with appendonly on, Redis
    loads only an AOF, and an AOF's base may be an RDB file."""
    aof = stack.runtime.live_aof_dir()
    aof.mkdir(parents=True)
    shutil.copy2(set_root / "redis" / "dump.rdb", aof / AOF_BASE)
    (aof / AOF_MANIFEST).write_text(f"file {AOF_BASE} seq 1 type b\n")


def _graph_retrying(work: Callable[[], T], attempts: int = 5) -> T:
    """Run `work`, again if the graph drops its connection: a Neo4j just started on a busy
    machine has been seen to close Bolt connections in its first seconds. Both the schema
    migration and the rebuild are idempotent."""
    for attempt in range(1, attempts):
        try:
            return work()
        except GRAPH_UNAVAILABLE:
            time.sleep(2 * attempt)
    return work()


def restore(
    stack: LocalStack,
    backup_id: str,
    *,
    to_time: datetime | None = None,
    force: bool = False,
    sets_dir: Path | None = None,
    immediate: bool = False,
    wal_source: Path | None = None,
) -> dict[str, Any]:
    """Restore `stack` from backup `backup_id`. Latest point by default; `to_time` for a
    point in time; `immediate` for the backup itself (no archived WAL), as verify does."""
    sets_dir = sets_dir or sets.default_sets_dir(stack.home)
    manifest = sets.load(sets_dir, backup_id)
    set_root = sets.set_path(sets_dir, backup_id)
    # Resolved: the restore command runs as the Postgres system user, which may not be able to
    # pass through the home to a symlink in it.
    wal_source = (wal_source or stack.postgres().wal_dir).resolve()
    running = stack.running()
    if running and not force:
        raise MemstackError(
            f"{', '.join(running)} running in {stack.home}; stop the stack (`memstack down`) or pass --force"
        )
    if "postgres" in running:
        # A live Postgres still holds WAL the archive lacks: archive it before stopping.
        flush_archive(stack)
    if to_time is not None:
        start, end = coverage(manifest, wal_source)
        if not start <= to_time <= end:
            raise MemstackError(
                f"--to-time {to_time.isoformat()} is outside what backup {backup_id} and the WAL archive "
                f"cover: {start.isoformat()} to {end.isoformat()}"
            )
    sets.check_files(sets_dir, manifest)

    clock = time.monotonic()
    report: dict[str, Any] = {"backup_id": backup_id, "to_time": to_time.isoformat() if to_time else None}
    # Stopped with the stack (`down` stops everything), started again after it.
    companions = (
        tuple(s.name for s in stack.backend.status() if s.running and s.name in OPTIONAL_SERVICES) if running else ()
    )
    if running:
        stack.backend.down()
    attic = stack.home / "attic" / sets.utc_now().strftime("%Y%m%dT%H%M%S.%fZ")
    moved = {name: stack.runtime.move_aside(name, attic) for name in CORE_SERVICES}
    latest = to_time is None and not immediate
    live_aof = stack.runtime.live_aof_dir()
    redis_from = "aof" if latest and (live_aof / AOF_MANIFEST).exists() else "snapshot"
    if redis_from == "snapshot":
        moved["redis-aof"] = move_dir_aside(live_aof, attic)
    report["moved_aside"] = {k: str(v) for k, v in moved.items() if v}

    if to_time is not None:
        target = {"recovery_target_time": to_time.isoformat()}
    elif immediate:
        target = {"recovery_target": "immediate"}
    else:
        target = {}
    ready: dict[str, float] = {}
    # Each store serves as soon as it can: Redis (on its own) first, Postgres once recovered,
    # then Neo4j (a JVM, the slowest to start) starts and is rebuilt while the others serve;
    # turns written meanwhile wait in the outbox.
    if redis_from == "snapshot":
        _place_redis_snapshot(stack, set_root)
    report["redis"] = {"from": redis_from}
    stack.backend.up(("redis",))
    ready["redis"] = time.monotonic() - clock
    report["postgres"] = _restore_postgres(stack, set_root, target, wal_source)
    for name in ("postgres", "neo4j"):
        stack.backend.up((name,))
        ready[name] = time.monotonic() - clock
    from memory_core import migrate

    settings = stack.backend.endpoints().settings()
    _graph_retrying(lambda: asyncio.run(migrate(settings)))
    report["neo4j"] = _graph_retrying(lambda: graph.rebuild_stack(stack))
    ready["neo4j"] = time.monotonic() - clock
    if companions:
        stack.backend.up(companions)
        report["restarted"] = list(companions)
    report["ready_s"] = {k: round(v, 3) for k, v in ready.items()}
    report["seconds"] = round(time.monotonic() - clock, 3)
    return report
