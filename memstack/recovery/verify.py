"""`memstack backup verify ID`: prove a set restores, in a throw-away home on free ports.

Checks: every checksum; Postgres restored to the backup's own consistency point has, per
table, a row count between the counts taken as the backup started and as it ended (rows
committed meanwhile may or may not be in it; on a quiet stack the two are equal); Redis holds
every key its snapshot holds that has not expired since (the manifest records the
snapshot's expiry times per minute); the graph rebuilt from the restored Postgres has one node per
turn, fact, entity, goal, strategy and reflection row. The throw-away home is removed.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

from memstack.errors import MemstackError
from memstack.local.state import StackState, save
from memstack.recovery import sets
from memstack.recovery.backup import neo4j_node_counts
from memstack.recovery.restore import restore
from memstack.recovery.stack import LocalStack

# Node label -> the Postgres rows it projects.
_NODE_ROWS = {
    "Turn": "SELECT count(*) FROM conversation_logs",
    "Fact": "SELECT count(*) FROM memory_timeline WHERE memory_type = 'fact'",
    "Entity": "SELECT count(*) FROM memory_timeline WHERE memory_type = 'entity'",
    "Goal": "SELECT count(*) FROM memory_timeline WHERE memory_type = 'goal'",
    "Strategy": "SELECT count(*) FROM memory_timeline WHERE memory_type = 'strategy'",
    "Reflection": "SELECT count(*) FROM memory_timeline WHERE memory_type = 'reflection'",
}


def graph_vs_postgres(stack: LocalStack) -> dict[str, tuple[int, int]]:
    """Label -> (rows in Postgres, nodes in Neo4j)."""
    state = stack.state()
    nodes = neo4j_node_counts(state.services["neo4j"].url, state.credentials.neo4j_password)
    with stack.admin() as conn:
        return {label: (conn.execute(q).fetchone()[0], nodes.get(label, 0)) for label, q in _NODE_ROWS.items()}


def redis_problems(snapshot: dict[str, Any], keys: int, expiring: int, counted_at: float) -> list[str]:
    """The restored Redis (`keys`, of which `expiring` have an expiry, counted before
    `counted_at`, epoch seconds) against its snapshot. A key whose expiry has passed may be gone
    (dropped on load or by the expiry cycle) or not yet; one expiring later must be there, as
    must every key without an expiry."""
    if "expiring_per_minute" not in snapshot:
        return [] if keys == snapshot["keys"] else [f"redis: {keys} keys, the snapshot has {snapshot['keys']}"]
    problems = []
    persistent = snapshot["keys_without_expiry"]
    if keys - expiring != persistent:
        problems.append(f"redis: {keys - expiring} keys without an expiry, the snapshot has {persistent}")
    most = snapshot["keys"] - persistent
    # A minute starting after the count expires after it.
    least = sum(n for start, n in snapshot["expiring_per_minute"].items() if int(start) > counted_at)
    if not least <= expiring <= most:
        problems.append(
            f"redis: {expiring} keys with an expiry, expected {least}..{most} "
            f"(the snapshot's {most} less those whose expiry has passed)"
        )
    return problems


def verify(stack: LocalStack, backup_id: str, sets_dir: Path | None = None) -> dict[str, Any]:
    sets_dir = sets_dir or sets.default_sets_dir(stack.home)
    manifest = sets.load(sets_dir, backup_id)
    clock = time.monotonic()
    sets.check_files(sets_dir, manifest)
    source = stack.state()
    scratch = LocalStack(Path(tempfile.mkdtemp(prefix="memstack-verify-")).resolve())
    problems: list[str] = []
    try:
        # Same credentials, since the restored Postgres has the roles and passwords of its source.
        save(
            scratch.home,
            StackState(
                backend=source.backend,
                credentials=source.credentials,
                appendfsync=source.appendfsync,
                images=source.images,
            ),
        )
        report = restore(scratch, backup_id, sets_dir=sets_dir, immediate=True, wal_source=stack.postgres().wal_dir)
        rows = scratch.row_counts()
        # The rebuild projects every Postgres row and then deletes the outbox rows it covered:
        # compare the outbox as restored, before that delete. The Neo4j counts below prove those
        # rows were projected.
        if "graph_outbox" in rows:
            rows["graph_outbox"] += report["neo4j"]["pending_rows_dropped"]
        low, high = manifest["postgres"]["rows_before"], manifest["postgres"]["rows_after"]
        for table in sorted(set(low) | set(high)):
            if not low.get(table, 0) <= rows.get(table, 0) <= high.get(table, 0):
                problems.append(
                    f"postgres {table}: {rows.get(table, 0)} rows, expected {low.get(table, 0)}..{high.get(table, 0)}"
                )
        client = scratch.redis()
        try:
            keyspace = client.info("keyspace").get("db0", {})
        finally:
            client.close()
        keys = keyspace.get("keys", 0)
        problems += redis_problems(manifest["redis"], keys, keyspace.get("expires", 0), time.time())
        graph = graph_vs_postgres(scratch)
        for label, (expected, found) in graph.items():
            if expected != found:
                problems.append(f"neo4j {label}: {found} nodes for {expected} Postgres rows")
    finally:
        try:
            scratch.backend.down()
        finally:
            scratch.remove()
    if problems:
        raise MemstackError(f"backup {backup_id} failed verification: {'; '.join(problems)}", exit_code=1)
    return {
        "backup_id": backup_id,
        "rows": rows,
        "redis_keys": keys,
        "redis_keys_in_snapshot": manifest["redis"]["keys"],
        "graph": graph,
        "restore": report,
        "seconds": round(time.monotonic() - clock, 3),
    }
