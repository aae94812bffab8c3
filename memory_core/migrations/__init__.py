"""Versioned, recorded, idempotent schema migrations for Postgres and Neo4j.

Postgres: files `postgres/NNNN_name.sql`, applied in order under a session advisory lock,
each in its own transaction together with its row in `schema_migrations`.
Neo4j: files `neo4j/NNNN_name.cypher`, every statement `IF NOT EXISTS`, applied while holding
a write lock on a `:SchemaLock` node (unique by name) and recorded as `:SchemaVersion` nodes.
Several pods may run `migrate` at once; exactly one applies each version.

`{{embedding_dim}}` is substituted from the validated setting. After applying,
the vector columns and indexes are checked against `settings.embedding_dim`: a mismatch raises
`EmbeddingDimensionMismatch` instead of letting vectors of the wrong size reach a store.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
from neo4j import AsyncDriver
from neo4j.exceptions import ClientError, TransientError

from ..settings import Settings

log = logging.getLogger(__name__)

_HERE = Path(__file__).parent
_FILE = re.compile(r"^(\d{4})_[a-z0-9_]+\.(sql|cypher)$")
# Arbitrary constant: the advisory lock key for memory_core schema changes ("memcore").
PG_LOCK_KEY = 0x6D656D636F7265
PG_VECTOR_COLUMNS = (("conversation_logs", "embedding"), ("memory_timeline", "embedding"))
NEO4J_VECTOR_INDEXES = ("entity_embeddings", "strategy_embeddings")


class EmbeddingDimensionMismatch(ValueError):
    pass


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    template: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.template.encode()).hexdigest()

    def render(self, settings: Settings) -> str:
        return self.template.replace("{{embedding_dim}}", str(int(settings.embedding_dim)))


def load(kind: str) -> list[Migration]:
    found = []
    for path in sorted((_HERE / kind).iterdir()):
        match = _FILE.match(path.name)
        if match:
            found.append(Migration(int(match.group(1)), path.stem, path.read_text()))
    versions = [m.version for m in found]
    if len(set(versions)) != len(versions):
        raise RuntimeError(f"duplicate migration versions in {kind}: {versions}")
    return found


async def migrate_postgres(conninfo: str, settings: Settings, **connect_kwargs: Any) -> list[int]:
    """Apply pending Postgres migrations; returns the versions this call applied.
    `connect_kwargs` go to psycopg (e.g. `options="-c search_path=..."`)."""
    applied: list[int] = []
    async with await psycopg.AsyncConnection.connect(conninfo, autocommit=True, **connect_kwargs) as conn:
        await conn.execute("SELECT pg_advisory_lock(%s)", (PG_LOCK_KEY,))
        try:
            await conn.execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations ("
                " version integer PRIMARY KEY, name text NOT NULL, checksum text NOT NULL,"
                " applied_at timestamptz NOT NULL DEFAULT now())"
            )
            cur = await conn.execute("SELECT version, checksum FROM schema_migrations")
            done = dict(await cur.fetchall())
            for migration in load("postgres"):
                if migration.version in done:
                    if done[migration.version] != migration.checksum:
                        log.warning("postgres migration %s changed after it was applied", migration.name)
                    continue
                async with conn.transaction():
                    await conn.execute(migration.render(settings))
                    await conn.execute(
                        "INSERT INTO schema_migrations (version, name, checksum) VALUES (%s, %s, %s)",
                        (migration.version, migration.name, migration.checksum),
                    )
                applied.append(migration.version)
                log.info("applied postgres migration %s", migration.name)
            await _check_pg_dimensions(conn, settings.embedding_dim)
        finally:
            await conn.execute("SELECT pg_advisory_unlock(%s)", (PG_LOCK_KEY,))
    return applied


async def _check_pg_dimensions(conn: psycopg.AsyncConnection, dim: int) -> None:
    for table, column in PG_VECTOR_COLUMNS:
        cur = await conn.execute(
            "SELECT atttypmod FROM pg_attribute WHERE attrelid = %s::regclass AND attname = %s",
            (table, column),
        )
        row = await cur.fetchone()
        if row is None or row[0] != dim:
            raise EmbeddingDimensionMismatch(
                f"Postgres column {table}.{column} is vector({row[0] if row else '?'}) but embedding_dim is {dim}; "
                "re-embed into a new schema or set MEMORY_EMBEDDING_DIM to match"
            )


async def migrate_neo4j(driver: AsyncDriver, settings: Settings) -> list[int]:
    """Apply pending Neo4j migrations; returns the versions this call applied."""
    await _retry_schema(
        driver, "CREATE CONSTRAINT schema_lock_name IF NOT EXISTS FOR (l:SchemaLock) REQUIRE l.name IS UNIQUE"
    )
    await _retry_schema(
        driver, "CREATE CONSTRAINT schema_version IF NOT EXISTS FOR (v:SchemaVersion) REQUIRE v.version IS UNIQUE"
    )
    applied: list[int] = []
    async with driver.session() as lock_session:
        lock_tx = await lock_session.begin_transaction()
        try:
            # The write lock on this node is held until the transaction ends: other runners wait here.
            await lock_tx.run("MERGE (l:SchemaLock {name: 'memory_core'}) SET l.locked_at = datetime()")
            records, _, _ = await driver.execute_query("MATCH (v:SchemaVersion) RETURN v.version AS version")
            done = {r["version"] for r in records}
            for migration in load("neo4j"):
                if migration.version in done:
                    continue
                for statement in _statements(migration.render(settings)):
                    await _retry_schema(driver, statement)
                await driver.execute_query(
                    "MERGE (v:SchemaVersion {version: $version}) "
                    "ON CREATE SET v.name = $name, v.checksum = $checksum, v.applied_at = datetime()",
                    version=migration.version,
                    name=migration.name,
                    checksum=migration.checksum,
                )
                applied.append(migration.version)
                log.info("applied neo4j migration %s", migration.name)
            await lock_tx.commit()
        finally:
            if not lock_tx.closed():
                await lock_tx.rollback()
    await driver.execute_query("CALL db.awaitIndexes(300)")
    await _check_neo4j_dimensions(driver, settings.embedding_dim)
    return applied


def _statements(script: str) -> list[str]:
    body = "\n".join(line for line in script.splitlines() if not line.lstrip().startswith("//"))
    return [s.strip() for s in body.split(";") if s.strip()]


async def _retry_schema(driver: AsyncDriver, statement: str, attempts: int = 10) -> None:
    # Concurrent `CREATE ... IF NOT EXISTS` of the same rule can still lose a race; the rule
    # then exists, which the retry observes as a no-op.
    for attempt in range(attempts):
        try:
            await driver.execute_query(statement)
            return
        except (TransientError, ClientError) as exc:
            if isinstance(exc, ClientError) and "AlreadyExists" not in (exc.code or ""):
                raise
            if attempt == attempts - 1:
                raise
            await asyncio.sleep(0.05 * (attempt + 1))


async def _check_neo4j_dimensions(driver: AsyncDriver, dim: int) -> None:
    records, _, _ = await driver.execute_query(
        "SHOW VECTOR INDEXES YIELD name, options WHERE name IN $names RETURN name, options",
        names=list(NEO4J_VECTOR_INDEXES),
    )
    for record in records:
        actual = record["options"]["indexConfig"]["vector.dimensions"]
        if actual != dim:
            raise EmbeddingDimensionMismatch(
                f"Neo4j vector index {record['name']} has {actual} dimensions but embedding_dim is {dim}"
            )


async def migrate(settings: Settings, driver: AsyncDriver | None = None) -> dict[str, list[int]]:
    """Migrate both stores. Pass the process's Neo4j driver to reuse it."""
    result = {"postgres": await migrate_postgres(settings.postgres_url.get_secret_value(), settings)}
    if driver is not None:
        result["neo4j"] = await migrate_neo4j(driver, settings)
    else:
        from ..clients import make_neo4j_driver

        own = make_neo4j_driver(settings)
        try:
            result["neo4j"] = await migrate_neo4j(own, settings)
        finally:
            await own.close()
    return result
