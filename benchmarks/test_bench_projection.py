"""The Neo4j projection alone: outbox rows applied to Neo4j by `apply_rows`, without Postgres or
the service, in batches of the sizes the projection paths send.

The rows are those of the mixed load profile's durable writes: two turns (spread over 20
conversations, each turn following the one before it) for every fact, interleaved in id order as
the service writes them. Batch sizes: 1 (one write projected alone, as the inline path does),
4 and 16 (what the service's background projector gathers in its 0.2 s linger at about 20 and 80
durable writes a second) and 100 (a worker replaying a backlog).

Recorded in `$MEMSTACK_HOME/benchmarks/memory_core.json`, section `projection`: the latency of one batch, rows
projected per second, and the CPU the Neo4j process spent per row (from /proc/<pid>/stat, over all
rounds of the benchmark), the figure the service's Neo4j cost per request is made of. Informational:
no target (the CPU per row moves with the machine's load; compare runs made one after the other).
"""

from __future__ import annotations

import itertools
import time
import uuid
from datetime import UTC, datetime

import pytest
from latency import record, summarize

from memory_core.stores.graph import OutboxRow, apply_rows
from memstack.capacity.measure import store_processes
from memstack.capacity.procstat import process_cpu_seconds

ROWS = 600  # rows projected per batch size, warm-up excluded
WARMUP_ROWS = 100
CONVERSATIONS = 20


@pytest.fixture(scope="module")
def neo4j_pid(stack) -> int:
    pid = store_processes(stack.backend).get("neo4j", {}).get("pid")
    if not pid:
        pytest.skip("the Neo4j process is not on this machine (external stack)")
    return pid


class MixedRows:
    """Outbox rows of one tenant in the mixed profile's proportions, with increasing ids."""

    def __init__(self) -> None:
        self.tenant = f"bench-projection-{uuid.uuid4().hex[:8]}"
        # Outbox ids are versions: above any a real outbox of this stack has handed out.
        self.ids = itertools.count(time.time_ns() // 1000)
        self.turns = dict.fromkeys(range(CONVERSATIONS), 0)
        self.written = itertools.count()

    def next(self) -> OutboxRow:
        n = next(self.written)
        now = datetime.now(UTC).isoformat()
        if n % 3 == 2:
            payload = {
                "id": str(uuid.uuid4()),
                "claim": f"the user likes topic {n % 50}",
                "confidence": 0.7,
                "source": "extraction",
                "scope": "u:user",
                "source_turn_id": None,
                "entity_ids": [],
                "created_at": now,
            }
            return OutboxRow(next(self.ids), self.tenant, "fact", payload)
        conversation = n % CONVERSATIONS
        index, self.turns[conversation] = self.turns[conversation], self.turns[conversation] + 1
        payload = {
            "user_id": "user",
            "conversation_id": f"c{conversation}",
            "turn_id": str(uuid.uuid4()),
            "index": index,
            "role": "user",
            "timestamp": now,
            "content": f"durable turn about topic {n % 50}",
        }
        return OutboxRow(next(self.ids), self.tenant, "turn", payload)

    def batch(self, size: int) -> list[OutboxRow]:
        return [self.next() for _ in range(size)]


@pytest.mark.parametrize("batch_size", [1, 4, 16, 100])
def test_projection(benchmark, bench, neo4j_pid, batch_size):
    loop, clients = bench
    rows = MixedRows()

    def project(batch: list[OutboxRow]) -> None:
        # As the service's background projector calls it: one attempt, the outbox covers a failure.
        loop.run_until_complete(apply_rows(clients.neo4j, batch, retry=False, path="background"))

    for _ in range(max(1, WARMUP_ROWS // batch_size)):
        project(rows.batch(batch_size))
    rounds = max(1, ROWS // batch_size)
    batches = iter([rows.batch(batch_size) for _ in range(rounds)])

    cpu_before, started = process_cpu_seconds(neo4j_pid), time.perf_counter()
    benchmark.pedantic(lambda: project(next(batches)), rounds=rounds, iterations=1)
    elapsed, cpu = time.perf_counter() - started, process_cpu_seconds(neo4j_pid) - cpu_before
    projected = rounds * batch_size
    record(
        "projection",
        f"mixed rows, batches of {batch_size}",
        {
            **summarize(benchmark.stats.stats.data),
            "rows": projected,
            "rows_per_s": projected / elapsed,
            "neo4j_cpu_us_per_row": cpu / projected * 1e6,
        },
    )
