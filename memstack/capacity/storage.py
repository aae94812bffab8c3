"""Bytes per stored item, measured on a running stack after loading a known number of items
into a fresh tenant through the library (as the service writes them):

- Redis: `MEMORY USAGE` of each working-memory key kind (context hash, turns list, thoughts list);
- Postgres: growth of `pg_total_relation_size` of each memory table, and of each HNSW index,
  per row added;
- Neo4j: the store files per node and per relationship of the whole database, after the load.
  Neo4j writes its store files from the page cache at checkpoints, and the community edition
  has no procedure to force one, so a local Neo4j is restarted cleanly (a shutdown
  checkpoints) after the load; a stack this machine does not run gets no Neo4j figure. Its
  store files are fixed-size records allocated by id, so the average over the database is the
  cost of one more node or relationship; the loaded tenant's own counts are read back too.

Postgres sizes are deltas over the load, so data already in the stack does not count; its files
grow in 8 KiB pages: the more items, the finer the figure.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from pathlib import Path

from memory_core import AgentMemory, MemoryClients, Settings, migrate
from memory_core.stores.working import conversation_tag

TABLES = ("conversation_logs", "conversations", "memory_timeline", "graph_outbox")
HNSW_INDEXES = ("conversation_logs_embedding", "memory_timeline_embedding")
NODE_FILES = ("neostore.nodestore", "neostore.labeltokenstore")
RELATIONSHIP_FILES = ("neostore.relationshipstore", "neostore.relationshipgroupstore", "neostore.relationshiptypestore")


def neo4j_store_files(data_dir: Path) -> dict[str, int]:
    """Sizes of the default database's store files by kind: node, relationship, other (properties,
    schema indexes, counts)."""
    store = data_dir / "data" / "databases" / "neo4j"
    sizes = {"node": 0, "relationship": 0, "other": 0}
    for path in store.rglob("*"):
        if not path.is_file():
            continue
        kind = (
            "node"
            if path.name.startswith(NODE_FILES)
            else "relationship"
            if path.name.startswith(RELATIONSHIP_FILES)
            else "other"
        )
        sizes[kind] += path.stat().st_size
    return sizes


async def _pg_sizes(clients: MemoryClients) -> dict[str, int]:
    async with clients.maintenance_transaction() as conn:
        sizes = {}
        for name in (*TABLES, *HNSW_INDEXES):
            cur = await conn.execute(
                "SELECT pg_total_relation_size(%s::regclass)"
                if name in TABLES
                else "SELECT pg_relation_size(%s::regclass)",
                (name,),
            )
            sizes[name] = (await cur.fetchone())[0]
        return sizes


async def _neo4j_counts(clients: MemoryClients, tenant: str) -> dict[str, int]:
    """The tenant's nodes and relationships, and the whole database's."""
    queries = {
        "nodes": "MATCH (n {tenant_id: $t}) RETURN count(n) AS c",
        "relationships": "MATCH (n {tenant_id: $t})-[r]->() RETURN count(r) AS c",
        "database_nodes": "MATCH (n) RETURN count(n) AS c",
        "database_relationships": "MATCH ()-[r]->() RETURN count(r) AS c",
    }
    async with clients.neo4j.session() as session:
        return {name: (await (await session.run(query, t=tenant)).single())["c"] for name, query in queries.items()}


async def _pg_counts(clients: MemoryClients, tenant: str) -> dict[str, int]:
    async with clients.tenant_transaction(tenant) as conn:
        cur = await conn.execute(
            "SELECT (SELECT count(*) FROM conversation_logs WHERE tenant_id = %(t)s),"
            " (SELECT count(*) FROM conversations WHERE tenant_id = %(t)s),"
            " (SELECT count(*) FROM memory_timeline WHERE tenant_id = %(t)s),"
            " (SELECT count(*) FROM graph_outbox WHERE tenant_id = %(t)s)",
            {"t": tenant},
        )
        return dict(zip(TABLES, await cur.fetchone()))


async def _load(
    clients: MemoryClients, tenant: str, conversations: int, turns: int, facts: int, context_keys: int, thoughts: int
) -> None:
    for c in range(conversations):
        memory = AgentMemory(tenant, "user-0", f"conversation-{c}", clients=clients)
        for i in range(turns):
            await memory.store_turn(
                "user" if i % 2 == 0 else "assistant",
                f"turn {i} of conversation {c}: a sentence of ordinary length about the task {uuid.uuid4().hex}",
            )
        for k in range(context_keys):
            await memory.set_working_context(f"key-{k}", {"step": k, "note": "x" * 120}, ttl_seconds=3600)
        for t in range(thoughts):
            await memory.push_thought(f"thought {t}: consider the next step of the plan")
    memory = AgentMemory(tenant, "user-0", clients=clients)
    for f in range(facts):
        await memory.learn_fact(f"the user prefers option {f} for task {uuid.uuid4().hex[:8]}")


async def _redis_usage(clients: MemoryClients, settings: Settings, tenant: str, conversations: int) -> dict[str, dict]:
    result: dict[str, dict] = {}
    for kind in ("ctx", "turns", "thoughts"):
        total, items, keys = 0, 0, 0
        for c in range(conversations):
            key = f"{conversation_tag(settings.working_key_prefix, tenant, 'user-0', f'conversation-{c}')}:{kind}"
            usage = await clients.redis.memory_usage(key, samples=0)
            if usage is None:
                continue
            keys += 1
            total += usage
            items += await (clients.redis.hlen(key) if kind == "ctx" else clients.redis.llen(key))
        result[kind] = {
            "keys": keys,
            "items": items,
            "bytes": total,
            "bytes_per_key": total / keys if keys else None,
            "bytes_per_item": total / items if items else None,
        }
    return result


async def measure_storage(
    settings: Settings,
    neo4j_data_dir: Path | None,
    flush_neo4j: Callable[[], None] | None,
    conversations: int = 4,
    turns: int = 50,
    facts: int = 200,
    context_keys: int = 16,
    thoughts: int = 20,
) -> dict:
    """Load the items into a new tenant and return bytes per item per store, with the counts
    read back from each store. `flush_neo4j` restarts Neo4j cleanly (see above), last, once
    nothing more is read from it."""
    tenant = f"capacity-{uuid.uuid4().hex[:12]}"
    clients = await MemoryClients.connect(settings)
    try:
        await migrate(settings, clients.neo4j)
        pg_before = await _pg_sizes(clients)
        await _load(clients, tenant, conversations, turns, facts, context_keys, thoughts)
        pg_after = await _pg_sizes(clients)
        rows = await _pg_counts(clients, tenant)
        graph = await _neo4j_counts(clients, tenant)
        redis = await _redis_usage(clients, settings, tenant, conversations)
        files = None
        if neo4j_data_dir is not None and flush_neo4j is not None:
            await asyncio.to_thread(flush_neo4j)
            files = neo4j_store_files(neo4j_data_dir)
    finally:
        await clients.close()
    row_of_index = {"conversation_logs_embedding": "conversation_logs", "memory_timeline_embedding": "memory_timeline"}
    postgres = {
        name: {
            "bytes": pg_after[name] - pg_before[name],
            "rows": rows[row_of_index.get(name, name)],
            "bytes_per_row": (pg_after[name] - pg_before[name]) / rows[row_of_index.get(name, name)]
            if rows[row_of_index.get(name, name)]
            else None,
        }
        for name in (*TABLES, *HNSW_INDEXES)
    }
    neo4j: dict = {**graph, "store_files": files}
    if files is not None:
        nodes, rels = graph["database_nodes"], graph["database_relationships"]
        # Properties and indexes serve both kinds: shared out per element.
        shared = files["other"] / (nodes + rels) if nodes + rels else 0.0
        neo4j.update(
            {
                "bytes_per_node": files["node"] / nodes + shared if nodes else None,
                "bytes_per_relationship": files["relationship"] / rels + shared if rels else None,
            }
        )
    return {
        "tenant": tenant,
        "embedding_dim": settings.embedding_dim,
        # A conversation's working memory keeps at most this many turns: the projection's full list.
        "working_max_turns": settings.working_max_turns,
        "inserted": {
            "conversations": conversations,
            "turns": conversations * turns,
            "facts": facts,
            "context_keys": conversations * context_keys,
            "thoughts": conversations * thoughts,
        },
        "redis": redis,
        "postgres": postgres,
        "neo4j": neo4j,
        "source": f"loaded into tenant {tenant} and measured on the running stack",
    }


def run(settings: Settings, neo4j_data_dir: Path | None, flush_neo4j: Callable[[], None] | None, **counts: int) -> dict:
    return asyncio.run(measure_storage(settings, neo4j_data_dir, flush_neo4j, **counts))


def local_neo4j(backend) -> tuple[Path | None, Callable[[], None] | None]:
    """The data directory of a Neo4j this machine runs, and how to restart it cleanly."""
    from memstack.local import state as stack_state
    from memstack.local.processes import stop_pid

    home = getattr(backend, "home", None)
    loaded = stack_state.load(home) if home is not None else None
    record = loaded.services.get("neo4j") if loaded else None
    if record is None or not record.pid:
        return None, None

    def restart() -> None:
        current = stack_state.load(home).services["neo4j"]
        stop_pid(current.pid, current.started, timeout=120)
        backend.start("neo4j")

    return Path(record.data_dir), restart
