"""`memstack backup`: one backup set of the three stores, taken online.

- Postgres: `pg_basebackup` (tar format, WAL streamed into the set so it restores on its own)
  plus the WAL positions; later WAL comes from the archive, for point-in-time recovery.
- Redis: `BGSAVE` and a wait for it to finish, the snapshot copied, plus the append-only file.
- Neo4j: no files. The graph is a projection of Postgres, so a restore rebuilds it from the
  restored Postgres: a dump would need Neo4j stopped (Community has no online backup) and
  would still have to be brought forward to Postgres's recovery point by outbox replay. The
  manifest records the outbox position and the graph's node counts at backup time.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
from datetime import UTC
from pathlib import Path
from typing import Any

from neo4j import GraphDatabase

from memstack.errors import MemstackError
from memstack.local.neo4j_server import USER as NEO4J_USER
from memstack.local.postgres_server import ADMIN_ROLE, bin_dir
from memstack.recovery import rdb, sets
from memstack.recovery.stack import LocalStack

_LSN = re.compile(r"write-ahead log (start|end) point: ([0-9A-F]+/[0-9A-F]+)(?: on timeline (\d+))?")
_KEYS_READ = re.compile(r"(\d+) keys read")
BGSAVE_TIMEOUT_S = 600


def _postgres(stack: LocalStack, dest: Path) -> dict[str, Any]:
    state = stack.state()
    before = stack.row_counts()
    with stack.admin() as conn:
        outbox_id = (
            conn.execute("SELECT last_value FROM graph_outbox_id_seq").fetchone()[0]
            if conn.execute("SELECT to_regclass('graph_outbox_id_seq')").fetchone()[0]
            else 0
        )
        pending = (
            conn.execute("SELECT count(*) FROM graph_outbox").fetchone()[0]
            if conn.execute("SELECT to_regclass('graph_outbox')").fetchone()[0]
            else 0
        )
        # In bytes; from the server, whose data dir may be in a container's volume.
        (segment_bytes,) = conn.execute(
            "SELECT setting::bigint FROM pg_settings WHERE name = 'wal_segment_size'"
        ).fetchone()
    started = time.monotonic()
    result = subprocess.run(
        [
            str(bin_dir() / "pg_basebackup"),
            "-h",
            "127.0.0.1",
            "-p",
            str(stack.port("postgres")),
            "-U",
            ADMIN_ROLE,
            "-D",
            str(dest),
            "--format=tar",
            "--wal-method=stream",
            "--checkpoint=fast",
            "--verbose",
            "--label=memstack backup",
            "--no-password",
        ],
        capture_output=True,
        text=True,
        env={**os.environ, "PGPASSWORD": state.credentials.postgres_admin_password},
    )
    if result.returncode != 0:
        last = result.stderr.strip().splitlines()[-1:]
        raise MemstackError(f"pg_basebackup failed: {' '.join(last)}")
    consistent_at = sets.utc_now()
    positions = {m.group(1): (m.group(2), m.group(3)) for m in _LSN.finditer(result.stderr)}
    after = stack.row_counts()
    return {
        "start_lsn": positions.get("start", (None,))[0],
        "stop_lsn": positions.get("end", (None,))[0],
        "timeline": int(positions.get("start", (None, "1"))[1] or 1),
        # Recovery can stop no earlier than this: the backup is consistent from its end on.
        "consistent_at": consistent_at.isoformat(),
        "seconds": round(time.monotonic() - started, 3),
        "wal_dir": str(stack.postgres().wal_dir),
        "wal_segment_bytes": segment_bytes,
        # Rows committed while the backup ran may or may not be in it: the counts bound it.
        "rows_before": before,
        "rows_after": after,
        "last_outbox_id": outbox_id,
        "pending_outbox_rows": pending,
    }


def _redis(stack: LocalStack, dest: Path) -> dict[str, Any]:
    client = stack.redis()
    started = time.monotonic()
    try:
        before = client.lastsave()
        # SCHEDULE: if an AOF rewrite runs, the save starts when it ends instead of failing.
        client.execute_command("BGSAVE", "SCHEDULE")
        deadline = time.monotonic() + BGSAVE_TIMEOUT_S
        while True:
            info = client.info("persistence")
            if not info["rdb_bgsave_in_progress"] and client.lastsave() > before:
                break
            if time.monotonic() > deadline:
                raise MemstackError(f"redis BGSAVE did not finish within {BGSAVE_TIMEOUT_S}s")
            time.sleep(0.05)
        if info.get("rdb_last_bgsave_status") != "ok":
            raise MemstackError(f"redis BGSAVE failed (rdb_last_bgsave_status {info.get('rdb_last_bgsave_status')})")
        last_save = client.lastsave()
        dbfile = client.config_get("dbfilename")["dbfilename"]
    finally:
        client.close()
    dest.mkdir(parents=True)
    stack.runtime.copy_redis_snapshot(dbfile, dest / "dump.rdb")
    # The AOF as it stands after the snapshot: its last command may be cut short by a write
    # under way, which Redis tolerates at the end of an AOF (aof-load-truncated). Both
    # backends keep it in a host directory outside the data dir.
    shutil.copytree(stack.runtime.live_aof_dir(), dest / "appendonly")
    check = subprocess.run(["redis-check-rdb", str(dest / "dump.rdb")], capture_output=True, text=True)
    keys = _KEYS_READ.search(check.stdout)
    if check.returncode != 0 or keys is None:
        raise MemstackError(f"redis-check-rdb rejected the snapshot: {check.stdout.strip().splitlines()[-1:]}")
    try:
        total, persistent, expiring = rdb.expiries(dest / "dump.rdb")
    except rdb.RdbUnreadable:
        # Verify then compares the key count alone, as before expiry times were recorded.
        expiries: dict[str, Any] = {}
    else:
        if total != int(keys.group(1)):
            raise MemstackError(f"the snapshot's records count {total} keys, redis-check-rdb {keys.group(1)}")
        expiries = {
            "keys_without_expiry": persistent,
            # Start of each minute (epoch seconds) -> keys whose expiry falls in it.
            "expiring_per_minute": {str(start): n for start, n in sorted(expiring.items())},
        }
    return {
        "last_save": last_save.astimezone(UTC).isoformat(),
        "keys": int(keys.group(1)),
        **expiries,
        "seconds": round(time.monotonic() - started, 3),
        "appendfsync": stack.state().appendfsync,
    }


def neo4j_node_counts(uri: str, password: str) -> dict[str, int]:
    with GraphDatabase.driver(uri, auth=(NEO4J_USER, password), connection_timeout=5) as driver:
        records, _, _ = driver.execute_query(
            "MATCH (n) UNWIND labels(n) AS label RETURN label, count(*) AS n ORDER BY label"
        )
        return {r["label"]: r["n"] for r in records}


def _neo4j(stack: LocalStack, postgres: dict[str, Any]) -> dict[str, Any]:
    state = stack.state()
    return {
        "method": "rebuild-from-postgres",
        "last_outbox_id": postgres["last_outbox_id"],
        "pending_outbox_rows": postgres["pending_outbox_rows"],
        "nodes_at_backup": neo4j_node_counts(state.services["neo4j"].url, state.credentials.neo4j_password),
    }


def backup(stack: LocalStack, sets_dir: Path | None = None) -> dict[str, Any]:
    """Take a backup set of the running stack; returns its manifest."""
    stack.require_running()
    sets_dir = sets_dir or sets.default_sets_dir(stack.home)
    started = sets.utc_now()
    backup_id = sets.new_id(started)
    root = sets.set_path(sets_dir, backup_id)
    partial = root.with_name(root.name + ".partial")
    partial.mkdir(parents=True, mode=0o700)
    clock = time.monotonic()
    try:
        postgres = _postgres(stack, partial / "postgres")
        redis = _redis(stack, partial / "redis")
        neo4j = _neo4j(stack, postgres)
        manifest = {
            "format": sets.FORMAT_VERSION,
            "id": backup_id,
            "home": str(stack.home),
            "started_at": started.isoformat(),
            "finished_at": sets.utc_now().isoformat(),
            "seconds": round(time.monotonic() - clock, 3),
            "postgres": postgres,
            "redis": redis,
            "neo4j": neo4j,
            "files": sets.file_entries(partial),
        }
        manifest["bytes"] = sum(f["bytes"] for f in manifest["files"])
        sets.write_manifest(partial, manifest)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    # Only a complete set gets its name: `backup list` never shows a half-written one.
    partial.rename(root)
    return manifest


def first_segment(postgres: dict[str, Any]) -> str:
    """The name of the WAL segment a base backup starts in: the oldest it needs."""
    high, low = (int(part, 16) for part in postgres["start_lsn"].split("/"))
    size = postgres["wal_segment_bytes"]
    segment = ((high << 32) | low) // size
    per_id = 0x100000000 // size
    return f"{postgres['timeline']:08X}{segment // per_id:08X}{segment % per_id:08X}"


def prune(stack: LocalStack, keep: int, sets_dir: Path | None = None) -> dict[str, Any]:
    """Delete all but the `keep` newest sets, and the archived WAL that only older sets need."""
    if keep < 1:
        raise MemstackError("--keep must be at least 1: the newest set and the WAL after it stay")
    sets_dir = sets_dir or sets.default_sets_dir(stack.home)
    found = sets.all_sets(sets_dir)
    removed = [m["id"] for m in found[:-keep]]
    for backup_id in removed:
        shutil.rmtree(sets.set_path(sets_dir, backup_id))
    kept = found[-keep:]
    wal_dir = stack.postgres().wal_dir.resolve()
    before = len(list(wal_dir.iterdir())) if wal_dir.is_dir() else 0
    if kept and wal_dir.is_dir():
        oldest = first_segment(kept[0]["postgres"])
        result = subprocess.run(
            [str(bin_dir() / "pg_archivecleanup"), str(wal_dir), oldest], capture_output=True, text=True
        )
        if result.returncode != 0:
            raise MemstackError(f"pg_archivecleanup failed: {result.stderr.strip().splitlines()[-1:]}")
    after = len(list(wal_dir.iterdir())) if wal_dir.is_dir() else 0
    return {"removed_sets": removed, "kept_sets": [m["id"] for m in kept], "wal_files_removed": before - after}
