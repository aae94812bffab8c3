import asyncio
import uuid

import psycopg
import pytest
from pydantic import SecretStr

from memory_core import AgentMemory, EmbeddingDimensionMismatch, SchemaNotMigrated
from memory_core.errors import from_store_exception
from memory_core.migrations import load, migrate_neo4j, migrate_postgres

TABLES = {
    "conversations",
    "conversation_logs",
    "memory_timeline",
    "tool_invocations",
    "tool_stats",
    "user_profiles",
    "memory_spaces",
    "space_grants",
    "graph_outbox",
    "entity_relations",
    "fact_entities",
}


@pytest.fixture
async def scratch_schema(settings):
    """A fresh, empty schema in the shared database, dropped afterwards."""
    name = f"mc_mig_{uuid.uuid4().hex[:12]}"
    url = settings.postgres_url.get_secret_value()
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        await conn.execute(f'CREATE SCHEMA "{name}"')
    try:
        yield name, {"options": f"-c search_path={name},public"}
    finally:
        async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
            await conn.execute(f'DROP SCHEMA "{name}" CASCADE')


async def test_two_concurrent_postgres_migrations_leave_one_schema(settings, scratch_schema):
    schema, kwargs = scratch_schema
    url = settings.postgres_url.get_secret_value()
    first, second = await asyncio.gather(
        migrate_postgres(url, settings, **kwargs), migrate_postgres(url, settings, **kwargs)
    )
    versions = [m.version for m in load("postgres")]
    assert sorted(first + second) == versions  # each version applied by exactly one runner
    async with await psycopg.AsyncConnection.connect(url, **kwargs) as conn:
        cur = await conn.execute("SELECT version FROM schema_migrations ORDER BY version")
        assert [r[0] for r in await cur.fetchall()] == versions
        cur = await conn.execute(
            "SELECT relname, relrowsecurity, relforcerowsecurity FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
            " WHERE n.nspname = %s AND c.relkind = 'r'",
            (schema,),
        )
        rows = {r[0]: r[1:] for r in await cur.fetchall()}
    assert set(rows) >= TABLES
    assert all(rows[t] == (True, True) for t in TABLES)
    assert await migrate_postgres(url, settings, **kwargs) == []  # idempotent


async def test_postgres_dimension_mismatch_is_a_clear_error(settings, scratch_schema):
    _, kwargs = scratch_schema
    url = settings.postgres_url.get_secret_value()
    await migrate_postgres(url, settings, **kwargs)
    with pytest.raises(EmbeddingDimensionMismatch, match="vector"):
        await migrate_postgres(url, settings.model_copy(update={"embedding_dim": settings.embedding_dim + 1}), **kwargs)


async def test_concurrent_neo4j_migrations_record_each_version_once(clients, graph_count):
    # Forget the recorded versions (every statement is IF NOT EXISTS), so that both runners find
    # work to do: without the lock both would apply, and record, every version.
    await clients.neo4j.execute_query("MATCH (v:SchemaVersion) DELETE v")
    first, second = await asyncio.gather(
        migrate_neo4j(clients.neo4j, clients.settings), migrate_neo4j(clients.neo4j, clients.settings)
    )
    assert sorted(first + second) == [m.version for m in load("neo4j")]
    for migration in load("neo4j"):
        assert await graph_count("MATCH (v:SchemaVersion {version: $v}) RETURN count(v)", v=migration.version) == 1
    assert await graph_count("MATCH (l:SchemaLock) RETURN count(l)") == 1
    records, _, _ = await clients.neo4j.execute_query("SHOW CONSTRAINTS YIELD name RETURN collect(name) AS names")
    assert {"turn_id", "entity_id", "conversation_key"} <= set(records[0]["names"])


async def test_neo4j_dimension_mismatch_is_a_clear_error(clients):
    wrong = clients.settings.model_copy(update={"embedding_dim": clients.settings.embedding_dim + 1})
    with pytest.raises(EmbeddingDimensionMismatch, match="Neo4j"):
        await migrate_neo4j(clients.neo4j, wrong)


async def test_an_unmigrated_database_is_a_typed_error_naming_the_fix(settings, scratch_schema):
    schema, _ = scratch_schema
    url = settings.postgres_url.get_secret_value()
    # Only the empty schema on the search path: neither the tables nor the vector type exist.
    bare = f"{url}{'&' if '?' in url else '?'}options=-csearch_path%3D{schema}"
    unmigrated = settings.model_copy(update={"postgres_url": SecretStr(bare)})
    async with AgentMemory("tenant", "user", "conversation", settings=unmigrated) as memory:
        with pytest.raises(SchemaNotMigrated, match=r"schema not migrated: run `memstack migrate`"):
            await memory.store_turn("user", "hello")
        with pytest.raises(SchemaNotMigrated):
            await memory.remember("hello")
        with pytest.raises(SchemaNotMigrated):
            await memory.add_goal("ship it")


@pytest.mark.parametrize(
    "error",
    [
        psycopg.errors.UndefinedTable('relation "conversations" does not exist'),
        psycopg.errors.UndefinedColumn('column "space" does not exist'),
    ],
)
def test_a_missing_table_or_column_means_the_schema_is_not_migrated(error):
    mapped = from_store_exception(error, "postgres")
    assert isinstance(mapped, SchemaNotMigrated) and "run `memstack migrate`" in str(mapped)


def test_a_row_level_security_violation_is_a_bug_not_a_store_outage():
    assert from_store_exception(psycopg.errors.InsufficientPrivilege("new row violates"), "postgres") is None


# The checksum of every applied migration is stored in each database it ran on, so a released
# migration is never edited, not even its comments: a change goes into a new numbered file.
RELEASED = {
    ("postgres", 1): "254820918c9d1ab7a93d1d2ef16cc04bb9e7ad7fe1c056be7827f21448584817",
    ("neo4j", 1): "34599feb7fa88747587f9611f94242bb8468156a5760b810659d4bb65e499e91",
}


@pytest.mark.parametrize(("kind", "version"), sorted(RELEASED))
def test_released_migrations_are_never_edited(kind, version):
    (migration,) = [m for m in load(kind) if m.version == version]
    assert migration.checksum == RELEASED[kind, version], (
        f"{kind} migration {migration.name} was edited after release; put the change in a new migration"
    )
