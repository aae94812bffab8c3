"""Backups, point-in-time restores, refusals and the drill, on a real local stack.

The tests of one module share one stack and run in order: refusals and verification first
(they leave the stack as it was), then the point-in-time restore, then the drill.
"""

from __future__ import annotations

import asyncio
import json
import os
import stat
import subprocess
import sys
import time
from datetime import UTC, datetime

import psycopg
import pytest
from neo4j import GraphDatabase

from memory_core import AgentMemory, migrate
from memory_core.clients import MemoryClients
from memstack.local.neo4j_server import USER as NEO4J_USER
from memstack.local.postgres_server import SYSTEM_USER_ROOT
from memstack.recovery.graph import rebuild_stack
from memstack.recovery.restore import flush_archive
from memstack.recovery.stack import LocalStack
from memstack.recovery.verify import redis_problems

pytestmark = pytest.mark.slow
CLI = [sys.executable, "-c", "from memstack.cli import main; main()"]


def memstack(stack: LocalStack, *args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("MEMSTACK_BACKUP_DIR", "MEMSTACK_WAL_DIR")}
    env["MEMSTACK_HOME"] = str(stack.home)
    return subprocess.run([*CLI, *args], env=env, capture_output=True, text=True, timeout=timeout)


def _backup(stack: LocalStack, *args: str) -> str:
    result = memstack(stack, "backup", *args)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip().splitlines()[-1]


def _refused(result, words: str) -> None:
    assert result.returncode == 2, (result.returncode, result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and words in lines[0], lines


def _store_turns(stack: LocalStack, tenant: str, contents: list[str]) -> list[datetime]:
    """Store each turn; returns the time right after each was acknowledged."""

    async def run() -> list[datetime]:
        times = []
        async with AgentMemory(tenant, "u1", "c1", settings=stack.backend.endpoints().settings()) as memory:
            for content in contents:
                await memory.store_turn("user", content)
                times.append(datetime.now(UTC))
        return times

    return asyncio.run(run())


def _turns(stack: LocalStack, tenant: str) -> tuple[set[str], set[str]]:
    """Turn contents of `tenant` in Postgres and in Neo4j."""
    with stack.admin() as conn:
        pg = {r[0] for r in conn.execute("SELECT content FROM conversation_logs WHERE tenant_id = %s", (tenant,))}
    state = stack.state()
    with GraphDatabase.driver(state.services["neo4j"].url, auth=(NEO4J_USER, state.credentials.neo4j_password)) as d:
        records, _, _ = d.execute_query("MATCH (t:Turn {tenant_id: $t}) RETURN t.content_preview AS c", t=tenant)
    return pg, {r["c"] for r in records}


@pytest.fixture(scope="module")
def migrated(dr_stack: LocalStack) -> LocalStack:
    asyncio.run(migrate(dr_stack.backend.endpoints().settings()))
    return dr_stack


@pytest.fixture(scope="module")
def backup_id(migrated: LocalStack) -> str:
    _store_turns(migrated, "t-base", [f"before the backup {i}" for i in range(5)])
    return _backup(migrated)


@pytest.mark.skipif(os.geteuid() != 0, reason="only as root does Postgres run as another user")
def test_a_home_the_postgres_user_cannot_enter_still_works(dr_stack):
    """As root, Postgres runs as the `memstack` system user, which cannot enter a 0700 home:
    its data dir and WAL archive are placed where it can, and linked from the home."""
    if dr_stack.state().backend != "process":
        pytest.skip("the containers backend runs Postgres as the image's user, on a volume")
    assert stat.S_IMODE(dr_stack.home.stat().st_mode) == 0o700
    for link in (dr_stack.home / "postgres", dr_stack.home / "backups" / "wal"):
        assert link.is_symlink() and link.resolve().is_relative_to(SYSTEM_USER_ROOT)
    assert dr_stack.running() == ["redis", "postgres", "neo4j"]
    with dr_stack.admin() as conn:
        assert conn.execute("SELECT failed_count FROM pg_stat_archiver").fetchone()[0] == 0


def test_up_archives_wal_outside_the_data_dir(migrated):
    """`memstack up` archives WAL into the home's backups location on the host, whichever
    backend runs Postgres, and the host can read what it archived."""
    flush_archive(migrated)
    wal = migrated.home / "backups" / "wal"
    assert migrated.postgres().wal_dir.resolve() == wal.resolve()
    segments = [p for p in wal.resolve().iterdir() if len(p.name) == 24]
    assert segments
    with open(max(segments), "rb") as f:
        assert len(f.read(8)) == 8
    with migrated.admin() as conn:
        archived, failed = conn.execute("SELECT archived_count, failed_count FROM pg_stat_archiver").fetchone()
        (timeout,) = conn.execute("SHOW archive_timeout").fetchone()
    assert archived >= 1 and failed == 0
    assert timeout == "2s"


def test_backup_manifest_names_every_file_and_position(migrated, backup_id):
    result = memstack(migrated, "backup", "list")
    assert result.returncode == 0 and backup_id in result.stdout
    manifest = json.loads((migrated.home / "backups" / "sets" / backup_id / "manifest.json").read_text())
    paths = {f["path"] for f in manifest["files"]}
    assert {"postgres/base.tar", "postgres/pg_wal.tar", "redis/dump.rdb"} <= paths
    assert all(
        len(f["sha256"]) == 64 and f["bytes"] > 0 for f in manifest["files"] if f["path"].endswith((".tar", ".rdb"))
    )
    assert manifest["postgres"]["stop_lsn"] and manifest["postgres"]["rows_after"]["conversation_logs"] >= 5
    assert manifest["neo4j"]["method"] == "rebuild-from-postgres" and manifest["neo4j"]["last_outbox_id"] >= 5
    assert manifest["redis"]["last_save"]


_VOLATILE = {"version", "last_accessed", "last_used"}  # the write's own id and clock, not the data


def _graph(stack: LocalStack, tenant: str) -> tuple[list, list]:
    """Every node of `tenant` (labels, properties) and relationship (ends, type, properties)."""
    state = stack.state()
    key = "coalesce(n.id, n.name)"
    with GraphDatabase.driver(state.services["neo4j"].url, auth=(NEO4J_USER, state.credentials.neo4j_password)) as d:
        nodes, _, _ = d.execute_query("MATCH (n {tenant_id: $t}) RETURN labels(n) AS l, properties(n) AS p", t=tenant)
        rels, _, _ = d.execute_query(
            f"MATCH (n {{tenant_id: $t}})-[r]->(m) RETURN labels(n) AS a, {key} AS ak, type(r) AS t,"
            f" labels(m) AS b, coalesce(m.id, m.name) AS bk, properties(r) AS p",
            t=tenant,
        )

    def strip(props: dict) -> list:
        # Embeddings: the request path projects the embedder's floats, a rebuild the float4
        # values Postgres stored; equal to float4 precision.
        return sorted(
            (k, str([round(x, 6) for x in v] if k == "embedding" else v))
            for k, v in props.items()
            if k not in _VOLATILE
        )

    return (
        sorted((sorted(r["l"]), strip(r["p"])) for r in nodes),
        sorted((sorted(r["a"]), r["ak"], r["t"], sorted(r["b"]), r["bk"], strip(r["p"])) for r in rels),
    )


def test_rebuild_from_postgres_reproduces_the_projected_graph(migrated):
    """What inline projection wrote, a rebuild from Postgres writes again: every event kind."""
    from memstack.recovery.graph import rebuild_stack

    tenant = "t-rebuild"

    async def write() -> None:
        settings = migrated.backend.endpoints().settings()
        async with AgentMemory(tenant, "u1", "c1", settings=settings) as m:
            first = await m.store_turn("user", "I met Ada at the conference")
            await m.store_turn("assistant", "Noted.")
            ada = await m.upsert_entity("Ada", "Person", aliases=["Countess"], description="mathematician")
            engine = await m.upsert_entity("Analytical Engine", "Product", properties={"year": 1837})
            await m.relate(ada.id, engine.id, "CREATED_BY", weight=0.5)
            await m.learn_fact("Ada wrote the first program", entity_ids=[ada.id, engine.id], source_turn_id=first.id)
            blocker = await m.add_goal("find the notes")
            goal = await m.add_goal("publish", blocked_by=[blocker.id])
            await m.update_goal(goal.id, status="completed")
            await m.record_tool_usage("search", {"q": "ada"}, {"hits": 3}, True, 12)
        async with AgentMemory(tenant, "u1", settings=settings) as m:
            await m.learn_strategy("search, then summarise", tool_sequence=["search", "summarise"])

    asyncio.run(write())
    projected = _graph(migrated, tenant)
    assert len(projected[0]) >= 10 and len(projected[1]) >= 10
    state = migrated.state()
    with GraphDatabase.driver(state.services["neo4j"].url, auth=(NEO4J_USER, state.credentials.neo4j_password)) as d:
        d.execute_query("MATCH (n {tenant_id: $t}) DETACH DELETE n", t=tenant)
    assert _graph(migrated, tenant) == ([], [])
    # As a Kubernetes Job runs it: the application role, configured by the environment.
    env = {**os.environ, **migrated.backend.endpoints().env()}
    result = subprocess.run([*CLI, "graph", "rebuild"], env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["events"]["turn"] >= 2
    assert _graph(migrated, tenant) == projected
    # Again, over a graph that is already whole: nothing changes.
    rebuild_stack(migrated)
    assert _graph(migrated, tenant) == projected


def test_refusals(migrated, backup_id):
    _refused(memstack(migrated, "restore", "no-such-backup", "--force"), "unknown backup id")
    _refused(memstack(migrated, "restore", backup_id), "running")
    _refused(memstack(migrated, "restore", backup_id, "--force", "--to-time", "2000-01-01T00:00:00Z"), "outside")
    _refused(memstack(migrated, "restore", backup_id, "--force", "--to-time", "2999-01-01T00:00:00Z"), "outside")
    _refused(memstack(migrated, "restore", backup_id, "--to-time", "yesterday", "--force"), "ISO 8601")
    # Nothing was touched: the stack still runs on its data.
    assert migrated.running() == ["redis", "postgres", "neo4j"]
    assert not (migrated.home / "attic").exists()


def test_verify_passes_a_good_set_and_catches_a_corrupt_one(migrated, backup_id, tmp_path):
    result = memstack(migrated, "backup", "verify", backup_id)
    assert result.returncode == 0, result.stderr
    assert f"backup {backup_id} verified" in result.stdout

    other = tmp_path / "sets"
    corrupt = _backup(migrated, "--to", str(other))
    with open(other / corrupt / "redis" / "dump.rdb", "r+b") as f:
        f.seek(10)
        byte = f.read(1)
        f.seek(10)
        f.write(bytes([byte[0] ^ 0xFF]))
    _refused(
        memstack(migrated, "backup", "verify", corrupt, "--dir", str(other)), "checksum mismatch in redis/dump.rdb"
    )
    _refused(
        memstack(migrated, "restore", corrupt, "--force", "--dir", str(other)), "checksum mismatch in redis/dump.rdb"
    )
    assert migrated.running() == ["redis", "postgres", "neo4j"]


def test_verify_passes_a_set_taken_with_graph_outbox_rows_pending(migrated, tmp_path):
    """Turns written while no worker replays the outbox leave pending outbox rows in the set;
    the restore's graph rebuild projects them and drains the outbox, and verify must accept
    that (the Neo4j counts still prove the turns were projected)."""

    _store_unprojected(migrated, "t-outbox", [f"pending projection {i}" for i in range(3)])
    with migrated.admin() as conn:
        assert conn.execute("SELECT count(*) FROM graph_outbox").fetchone()[0] >= 3
    sets_dir = tmp_path / "sets"
    pending = _backup(migrated, "--to", str(sets_dir))
    result = memstack(migrated, "backup", "verify", pending, "--dir", str(sets_dir))
    assert result.returncode == 0, result.stderr
    assert f"backup {pending} verified" in result.stdout
    # Project them, as a worker would, for the tests that follow.
    rebuild_stack(migrated)


def test_verify_passes_a_set_whose_keys_expired_since(migrated, tmp_path):
    """Keys that expire after the backup are gone from the restored copy: verify must count
    them out, by their expiry times the manifest records, and still count the others."""
    client = migrated.redis()
    try:
        for i in range(20):
            client.set(f"verify-expiring-{i}", "x", px=2000)
        client.set("verify-persistent", "x")
    finally:
        client.close()
    sets_dir = tmp_path / "sets"
    backup = _backup(migrated, "--to", str(sets_dir))
    manifest = json.loads((sets_dir / backup / "manifest.json").read_text())["redis"]
    assert manifest["keys"] - manifest["keys_without_expiry"] >= 20
    assert sum(manifest["expiring_per_minute"].values()) == manifest["keys"] - manifest["keys_without_expiry"]
    time.sleep(2.5)
    result = memstack(migrated, "backup", "verify", backup, "--dir", str(sets_dir))
    assert result.returncode == 0, result.stderr
    assert f"backup {backup} verified" in result.stdout
    assert "expired since" in result.stdout


def test_verify_redis_check_catches_lost_keys():
    snapshot = {"keys": 30, "keys_without_expiry": 10, "expiring_per_minute": {"1000": 5, "2000": 15}}
    # At 1500 the 5 keys of minute 1000 may be gone, the 15 of minute 2000 may not.
    assert redis_problems(snapshot, 25, 15, 1500) == []
    assert redis_problems(snapshot, 30, 20, 1500) == []
    assert "without an expiry" in redis_problems(snapshot, 24, 15, 1500)[0]
    assert "expected 15..20" in redis_problems(snapshot, 24, 14, 1500)[0]
    # A set from before expiry times were recorded: the count alone.
    assert redis_problems({"keys": 30}, 29, 0, 1500) == ["redis: 29 keys, the snapshot has 30"]


def _store_unprojected(stack: LocalStack, tenant: str, texts: list[str]) -> None:
    """Turns whose outbox rows stay pending, as when no worker replays the outbox."""

    async def write() -> None:
        clients = await MemoryClients.connect(stack.backend.endpoints().settings())
        clients.project_inline = False
        try:
            async with AgentMemory(tenant, "u1", "c9", clients=clients) as memory:
                for text in texts:
                    await memory.store_turn("user", text)
        finally:
            await clients.close()

    asyncio.run(write())


def test_rebuild_while_others_drain_the_outbox(migrated, monkeypatch):
    """A worker or the service drains the outbox while a rebuild runs (a Kubernetes rebuild Job
    runs beside both). The rebuild must not fail on rows deleted under it, and must not delete
    an outbox row that committed after its snapshot: that row is not in the graph yet."""
    import memstack.recovery.graph as graph

    tenant = "t-drain"
    _store_unprojected(migrated, tenant, ["drained under the rebuild 1", "drained under the rebuild 2"])
    with migrated.admin() as late, migrated.admin() as worker:
        late.autocommit, worker.autocommit = False, True
        # An id taken before the rebuild's snapshot, committed after it.
        (late_id,) = late.execute(
            "INSERT INTO graph_outbox (tenant_id, event, payload) VALUES (%s, 'noop', '{}') RETURNING id", (tenant,)
        ).fetchone()
        apply_turns = graph._apply_turns

        async def drained_meanwhile(driver, rows):
            if late.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
                worker.execute("DELETE FROM graph_outbox WHERE tenant_id = %s AND event <> 'noop'", (tenant,))
                late.commit()
            await apply_turns(driver, rows)

        monkeypatch.setattr(graph, "_apply_turns", drained_meanwhile)
        result = rebuild_stack(migrated)
        assert result["outbox_position"] >= late_id
        left = worker.execute("SELECT id FROM graph_outbox WHERE tenant_id = %s", (tenant,)).fetchall()
        assert left == [(late_id,)]
        worker.execute("DELETE FROM graph_outbox WHERE id = %s", (late_id,))
    assert {"drained under the rebuild 1", "drained under the rebuild 2"} <= _turns(migrated, tenant)[1]


def test_point_in_time_restore_between_two_marked_writes(migrated, backup_id):
    tenant = "t-pitr"
    (first_at,) = _store_turns(migrated, tenant, ["first marked write"])
    time.sleep(1.0)
    target = datetime.now(UTC)
    time.sleep(1.0)
    _store_turns(migrated, tenant, ["second marked write"])
    flush_archive(migrated)
    assert first_at < target
    assert _turns(migrated, tenant) == ({"first marked write", "second marked write"},) * 2

    result = memstack(migrated, "restore", backup_id, "--to-time", target.isoformat(), "--force")
    assert result.returncode == 0, result.stderr
    pg, graph = _turns(migrated, tenant)
    assert pg == {"first marked write"}
    assert graph == pg
    # The data dirs it replaced were moved aside, not deleted.
    assert any((d / "postgres").is_dir() for d in (migrated.home / "attic").iterdir())


def test_prune_keeps_the_newest_sets_and_the_wal_they_need(migrated, backup_id):
    newest = _backup(migrated)
    wal = migrated.postgres().wal_dir.resolve()
    segments = sorted(p.name for p in wal.iterdir() if len(p.name) == 24)
    result = memstack(migrated, "backup", "prune", "--keep", "1")
    assert result.returncode == 0, result.stderr
    listed = memstack(migrated, "backup", "list").stdout
    assert newest in listed and backup_id not in listed
    left = sorted(p.name for p in wal.iterdir() if len(p.name) == 24)
    removed = set(segments) - set(left)
    # Everything before the newest set's first segment went (whatever its timeline), nothing after.
    assert removed and left and max(n[8:] for n in removed) < min(n[8:] for n in left)
    _refused(memstack(migrated, "restore", backup_id, "--force"), "unknown backup id")


@pytest.mark.timeout(1200)
def test_drill_passes(migrated, tmp_path):
    report = tmp_path / "drill.json"
    sets_dir = migrated.home / "backups" / "sets"
    sets_before = sorted(p.name for p in sets_dir.iterdir())
    result = memstack(migrated, "drill", "--writes", "1000", "--rounds", "2", "--json", str(report), timeout=1200)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr
    results = json.loads(report.read_text())
    assert results["passed"] and len(results["rounds"]) == 2
    for r in results["rounds"]:
        stores = r["stores"]
        assert stores["postgres"]["acknowledged"] >= 600 and stores["redis"]["acknowledged"] >= 300
        assert stores["neo4j"]["present"] == stores["postgres"]["present"]
        assert all(row["duplicated"] == 0 for row in stores.values())
    # The second round backed up and restored the stack the first one restored.
    assert results["rounds"][1]["backup_id"] != results["rounds"][0]["backup_id"]
    for store in ("postgres", "redis", "neo4j"):
        assert store in result.stdout
    # A line on stderr as each phase starts (a round takes minutes); none on stdout, which has the results.
    progress = [line for line in result.stderr.splitlines() if line.startswith("drill: ")]
    assert progress and progress[0].startswith("drill: starting the stack"), result.stderr
    phases = ["writing", "backup started", "disaster", "restoring", "reconciling", "passed; removed"]
    for n in (1, 2):
        said = [line.split(": ", 2)[2] for line in progress if line.startswith(f"drill: round {n}/2: ")]
        assert [next(p for p in phases if line.startswith(p)) for line in said] == phases, said
    assert "drill: " not in result.stdout
    # Each passed round removed the data it moved aside and its backup set, and nothing else.
    for r in results["rounds"]:
        removed = r["leftovers"]["removed"]
        assert any("/attic/disaster-" in p for p in removed) and any(r["backup_id"] in p for p in removed)
        assert not any(os.path.exists(p) for p in removed)
    assert not list((migrated.home / "attic").glob("disaster-*"))
    assert sorted(p.name for p in sets_dir.iterdir()) == sets_before
