"""The local stack's services are the real thing: each is checked through its official client."""

from __future__ import annotations

import math
import os
import random
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path

import neo4j
import psycopg
import pytest
import redis
from neo4j.exceptions import AuthError
from pgvector.psycopg import register_vector
from psycopg import sql

from memstack.errors import MemstackError
from memstack.local.backend import BACKEND_ENV
from memstack.testing import start_stack

DIM = 384


def unit_vectors(n: int, seed: int) -> list[list[float]]:
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        v = [rng.gauss(0, 1) for _ in range(DIM)]
        norm = math.sqrt(sum(x * x for x in v))
        out.append([x / norm for x in v])
    return out


def cosine_distance(a: list[float], b: list[float]) -> float:
    return 1 - sum(x * y for x, y in zip(a, b))


def near(v: list[float], seed: int, noise: float = 0.05) -> list[float]:
    rng = random.Random(seed)
    return [x + rng.gauss(0, noise / math.sqrt(DIM)) for x in v]


# Every test of this module runs against each backend that runs its own servers: the same
# checks, whichever way the stack runs.
BACKENDS_UNDER_TEST = ("process", "containers")


@pytest.fixture(scope="module", params=BACKENDS_UNDER_TEST)
def stack(request, tmp_path_factory):
    """The session's stack for its own backend; for the other, a stack of that backend in a fresh
    home, removed afterwards (skipped, with the reason, where that backend cannot run here)."""
    configured = request.config.getoption("--backend") or os.environ.get(BACKEND_ENV) or "process"
    if request.param == configured:
        # The session fixture of the same name (memstack.testing), started only when needed.
        return request.getfixturevalue("stack")
    home = tmp_path_factory.mktemp(f"stack-{request.param}")
    try:
        other, _ = start_stack(request.param, home)
    except MemstackError as exc:
        if request.param == "containers" and "Docker engine" in str(exc):
            pytest.skip(str(exc))
        raise
    request.addfinalizer(getattr(other.backend, "remove", other.backend.down))
    return other


def memstack_cli(stack, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "MEMSTACK_BACKEND": stack.backend.name}
    if stack.home:
        env["MEMSTACK_HOME"] = str(stack.home)
    return subprocess.run(
        [str(Path(sys.executable).parent / "memstack"), *args], env=env, capture_output=True, text=True, timeout=300
    )


# -- Redis ---------------------------------------------------------------------------------


def test_redis_appendonly_is_on(stack):
    client = redis.Redis.from_url(stack.redis_url)
    assert client.config_get("appendonly") == {"appendonly": "yes"}
    assert client.config_get("appendfsync")["appendfsync"] in ("everysec", "always")


def test_redis_requires_auth(stack):
    url = stack.redis_url
    host_port = url.rsplit("@", 1)[1].split("/", 1)[0]
    host, port = host_port.split(":")
    with pytest.raises(redis.AuthenticationError):
        redis.Redis(host=host, port=int(port)).get("anything")
    with pytest.raises(redis.AuthenticationError):
        redis.Redis(host=host, port=int(port), password="not-the-password").ping()


def test_store_files_are_readable_by_their_owner_only(stack):
    if stack.backend.name != "process":
        pytest.skip("container stores write with their image's own users into volumes")
    client = redis.Redis.from_url(stack.redis_url)
    client.set("mode-check", "tenant data")
    client.bgrewriteaof()
    # Until the rewrite ends, its temporary file may vanish between listing and stat.
    deadline = time.monotonic() + 30
    while (info := client.info("persistence"))["aof_rewrite_in_progress"] or info["aof_rewrite_scheduled"]:
        assert time.monotonic() < deadline, "the AOF rewrite did not end within 30 s"
        time.sleep(0.05)
    home = Path(stack.home)
    files = [
        path
        for top in ("redis", "neo4j", "logs", "backups/redis-aof")
        for path in (home / top).rglob("*")
        if path.is_file() and not path.is_symlink()
    ]
    assert any(p.parent.name == "redis-aof" for p in files) and any("neo4j" in p.parts for p in files)
    assert [(str(p), oct(p.stat().st_mode & 0o777)) for p in files if p.stat().st_mode & 0o077] == []


# -- Postgres ------------------------------------------------------------------------------


def test_postgres_hnsw_returns_true_nearest_row(stack):
    schema = f"smoke_{uuid.uuid4().hex[:12]}"
    vectors = unit_vectors(2000, seed=7)
    query = near(vectors[1234], seed=11)
    exact = min(range(len(vectors)), key=lambda i: cosine_distance(vectors[i], query))
    with psycopg.connect(stack.postgres_url, autocommit=True) as conn:
        register_vector(conn)
        conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))
        try:
            conn.execute(sql.SQL("SET search_path = {}, public").format(sql.Identifier(schema)))
            conn.execute(f"CREATE TABLE items (id int PRIMARY KEY, embedding vector({DIM}) NOT NULL)")
            with conn.cursor().copy("COPY items (id, embedding) FROM STDIN WITH (FORMAT BINARY)") as copy:
                copy.set_types(["int4", "vector"])
                for i, v in enumerate(vectors):
                    copy.write_row((i, v))
            conn.execute("CREATE INDEX items_embedding ON items USING hnsw (embedding vector_cosine_ops)")
            conn.execute("ANALYZE items")
            with conn.transaction():
                conn.execute("SET LOCAL enable_seqscan = off")
                plan = "\n".join(
                    r[0]
                    for r in conn.execute(
                        "EXPLAIN SELECT id FROM items ORDER BY embedding <=> %s::vector LIMIT 1", (query,)
                    )
                )
                nearest = conn.execute(
                    "SELECT id FROM items ORDER BY embedding <=> %s::vector LIMIT 1", (query,)
                ).fetchone()[0]
            assert "items_embedding" in plan
            assert nearest == exact == 1234
        finally:
            conn.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(schema)))


def test_postgres_app_role_is_not_superuser_and_has_vector(stack):
    with psycopg.connect(stack.postgres_url) as conn:
        assert conn.execute("SELECT rolsuper FROM pg_roles WHERE rolname = current_user").fetchone() == (False,)
        assert conn.execute("SELECT extversion FROM pg_extension WHERE extname = 'vector'").fetchone() is not None
        assert conn.execute("SHOW server_version_num").fetchone()[0].startswith("16")


def test_postgres_refuses_wrong_password(stack):
    wrong = stack.postgres_url.replace(stack.postgres_url.split("@")[0].split(":")[-1], "wrong-password")
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        psycopg.connect(wrong, connect_timeout=5)


# -- Neo4j ---------------------------------------------------------------------------------


def test_neo4j_vector_index_returns_nearest_node(stack):
    # Labels cannot be parameters; this one is generated here, never taken from input.
    label = f"Smoke{uuid.uuid4().hex[:12]}"
    index = f"smoke_{label.lower()}"
    vectors = unit_vectors(300, seed=3)
    query = near(vectors[42], seed=5)
    exact = min(range(len(vectors)), key=lambda i: cosine_distance(vectors[i], query))
    with neo4j.GraphDatabase.driver(stack.neo4j_uri, auth=(stack.neo4j_user, stack.neo4j_password)) as driver:
        driver.execute_query(
            f"CREATE VECTOR INDEX {index} IF NOT EXISTS FOR (n:{label}) ON n.embedding "
            "OPTIONS {indexConfig: {`vector.dimensions`: $dim, `vector.similarity_function`: 'cosine'}}",
            dim=DIM,
        )
        try:
            driver.execute_query(
                f"UNWIND $rows AS row CREATE (n:{label} {{id: row.id, embedding: row.embedding}})",
                rows=[{"id": i, "embedding": v} for i, v in enumerate(vectors)],
            )
            driver.execute_query("CALL db.awaitIndexes(60)")
            records, _, _ = driver.execute_query(
                "CALL db.index.vector.queryNodes($index, 1, $query) YIELD node, score RETURN node.id AS id, score",
                index=index,
                query=query,
            )
            assert [r["id"] for r in records] == [exact] == [42]
        finally:
            driver.execute_query(f"DROP INDEX {index} IF EXISTS")
            driver.execute_query(f"MATCH (n:{label}) DETACH DELETE n")


def test_neo4j_refuses_wrong_credentials(stack):
    with neo4j.GraphDatabase.driver(stack.neo4j_uri, auth=(stack.neo4j_user, "wrong-password")) as driver:
        with pytest.raises(AuthError):
            driver.execute_query("RETURN 1")


# -- Prometheus ----------------------------------------------------------------------------


def test_prometheus_is_ready(stack):
    if stack.prometheus_url is None:
        pytest.skip("this backend has no Prometheus (set PROMETHEUS_URL for the external backend)")
    with urllib.request.urlopen(f"{stack.prometheus_url}/-/ready", timeout=5) as resp:
        assert resp.status == 200


# -- Idempotence ---------------------------------------------------------------------------


def test_up_reuses_the_running_stack(stack):
    before = {row.name: row.pid for row in stack.backend.status()}
    result = memstack_cli(stack, "up")
    assert result.returncode == 0, result.stderr
    after = {row.name: row.pid for row in stack.backend.status()}
    assert after == before


@pytest.mark.parametrize("command", ["start", "up"])
def test_start_and_up_resume_a_paused_container(stack, command):
    # `docker pause` (a chaos fault, or an operator's) leaves a container running but answering
    # nothing: waiting for it to answer would time out and blame a crash.
    if stack.backend.name != "containers":
        pytest.skip("only a container can be paused")
    container = stack.backend.container("redis")
    container.pause()
    try:
        result = memstack_cli(stack, *([command, "redis"] if command == "start" else [command]))
        assert result.returncode == 0, result.stderr
        if command == "start":
            assert result.stdout.strip() == "redis started"
        container.reload()
        assert container.status == "running"
        assert redis.Redis.from_url(stack.redis_url).ping()
    finally:
        container.reload()
        if container.status == "paused":
            container.unpause()


def test_env_prints_exports_for_every_setting(stack):
    result = memstack_cli(stack, "env")
    assert result.returncode == 0, result.stderr
    names = [line.split()[1].split("=")[0] for line in result.stdout.splitlines()]
    assert names == ["REDIS_URL", "POSTGRES_URL", "NEO4J_URI", "NEO4J_USER", "NEO4J_PASSWORD", "PROMETHEUS_URL"]
    exported = dict(
        line.removeprefix("export ").split("=", 1) for line in result.stdout.splitlines() if line.startswith("export")
    )
    assert exported["NEO4J_URI"] == stack.neo4j_uri


# -- Crash and restart: committed data survives SIGKILL ---------------------------------------


def _crash_and_restart(stack, service: str) -> None:
    if stack.backend.name == "external":
        pytest.skip("the external backend cannot kill its servers")
    killed = memstack_cli(stack, "kill", service)
    assert killed.returncode == 0, killed.stderr
    assert {r.name: r.running for r in stack.backend.status()}[service] is False
    started = memstack_cli(stack, "start", service)
    assert started.returncode == 0, started.stderr


@pytest.mark.slow
def test_redis_keeps_acknowledged_writes_across_sigkill(stack, tenant_id):
    client = redis.Redis.from_url(stack.redis_url)
    keys = {f"{tenant_id}:crash:{i}": str(i) for i in range(500)}
    for key, value in keys.items():
        client.set(key, value)
    _crash_and_restart(stack, "redis")
    client = redis.Redis.from_url(stack.redis_url)
    assert client.mget(list(keys)) == [v.encode() for v in keys.values()]
    client.delete(*keys)


@pytest.mark.slow
def test_postgres_keeps_committed_rows_across_sigkill(stack, tenant_id):
    table = f"crash_{tenant_id.replace('-', '_')}"
    with psycopg.connect(stack.postgres_url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE TABLE {} (id int PRIMARY KEY)").format(sql.Identifier(table)))
        conn.execute(sql.SQL("INSERT INTO {} SELECT generate_series(1, 1000)").format(sql.Identifier(table)))
    _crash_and_restart(stack, "postgres")
    with psycopg.connect(stack.postgres_url, autocommit=True) as conn:
        count = conn.execute(sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(table))).fetchone()[0]
        conn.execute(sql.SQL("DROP TABLE {}").format(sql.Identifier(table)))
    assert count == 1000


@pytest.mark.slow
def test_neo4j_keeps_committed_nodes_across_sigkill(stack, tenant_id):
    auth = (stack.neo4j_user, stack.neo4j_password)
    with neo4j.GraphDatabase.driver(stack.neo4j_uri, auth=auth) as driver:
        driver.execute_query("UNWIND range(1, 200) AS i CREATE (:CrashProbe {tenant: $t, i: i})", t=tenant_id)
    _crash_and_restart(stack, "neo4j")
    with neo4j.GraphDatabase.driver(stack.neo4j_uri, auth=auth) as driver:
        records, _, _ = driver.execute_query("MATCH (n:CrashProbe {tenant: $t}) RETURN count(n) AS c", t=tenant_id)
        driver.execute_query("MATCH (n:CrashProbe {tenant: $t}) DELETE n", t=tenant_id)
    assert records[0]["c"] == 200


# -- The other backends reach the same kind of stack ------------------------------------------


def test_external_backend_reaches_the_running_servers(stack, monkeypatch):
    from memstack.local.external import ExternalBackend

    for name, value in stack.env().items():
        monkeypatch.setenv(name, value)
    backend = ExternalBackend()
    backend.up()
    assert backend.endpoints() == stack.endpoints
    rows = {row.name: row.healthy for row in backend.status()}
    assert rows["redis"] and rows["postgres"] and rows["neo4j"]
