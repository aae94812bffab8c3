import asyncio
import json
import os
import signal
import subprocess
import sys
import uuid

import pytest

from memory_core.worker import Worker, jobs


@pytest.fixture
def private_queue(clients):
    """Give the test its own stream, group and lease keys, restored afterwards."""
    original = clients.settings
    suffix = uuid.uuid4().hex[:12]
    clients.settings = original.model_copy(
        update={
            "reflection_stream": f"mc:test:{suffix}",
            "working_key_prefix": f"mct{suffix}",
            "job_claim_idle_ms": 1,
            "reflection_max_deliveries": 2,
        }
    )
    yield clients.settings
    clients.settings = original


async def _age(clients, tenant_id: str, sql: str, *params) -> None:
    async with clients.tenant_transaction(tenant_id) as conn:
        await conn.execute(sql, params)


async def test_reflection_job_is_applied_once(memory, clients, private_queue, tenant_id):
    strategy = await memory.learn_strategy("search the docs first", tool_sequence=["docs_search"])
    job_id = await memory.reflect({"success": True, "summary": "docs answered it", "strategy_id": strategy.id})
    worker = Worker(clients, "w1")
    await worker.ensure_group()
    assert await worker.process_reflections(block_ms=10) == 1
    found = await memory.what_worked_for("search the docs")
    assert found[0].success_count == 2
    # A redelivered job (crash between apply and XACK) changes nothing.
    fields = {
        "job_id": job_id,
        "tenant_id": tenant_id,
        "user_id": memory.user_id,
        "conversation_id": "conv-1",
        "agent_id": "",
        "outcome": json.dumps({"success": True, "summary": "docs answered it", "strategy_id": strategy.id}),
    }
    assert await jobs.process_reflection(clients, fields) is False
    assert (await memory.what_worked_for("search the docs"))[0].success_count == 2
    async with clients.tenant_transaction(tenant_id) as conn:
        cur = await conn.execute("SELECT count(*) FROM memory_timeline WHERE memory_type = 'reflection'")
        assert (await cur.fetchone())[0] == 1
    assert (await clients.redis.xpending(private_queue.reflection_stream, private_queue.reflection_group))[
        "pending"
    ] == 0


async def test_reflection_with_tools_learns_a_strategy(memory, clients, private_queue):
    await memory.reflect({"success": True, "task_type": "data_analysis", "tools": ["code_interpreter"]})
    worker = Worker(clients, "w1")
    await worker.ensure_group()
    await worker.process_reflections(block_ms=10)
    found = await memory.what_worked_for("code_interpreter data_analysis tasks")
    assert found and found[0].tool_sequence == ["code_interpreter"]


async def test_failing_job_is_retried_then_dead_lettered(clients, private_queue):
    worker = Worker(clients, "w1")
    await worker.ensure_group()
    await clients.redis.xadd(private_queue.reflection_stream, {"job_id": "broken", "tenant_id": "\x01bad"})
    assert await worker.process_reflections(block_ms=10) == 0  # delivery 1 fails
    await asyncio.sleep(0.01)
    assert await worker.process_reflections(block_ms=10) == 0  # delivery 2 (claimed) fails
    await asyncio.sleep(0.01)
    await worker.process_reflections(block_ms=10)  # delivered twice already: dead-lettered
    dead = await clients.redis.xrange(worker.dead_letter_stream)
    assert len(dead) == 1 and dead[0][1][b"job_id"] == b"broken"
    assert (await clients.redis.xpending(private_queue.reflection_stream, private_queue.reflection_group))[
        "pending"
    ] == 0
    await clients.redis.delete(private_queue.reflection_stream, worker.dead_letter_stream)


async def test_periodic_jobs_run_once_across_replicas(clients, private_queue, tenant_id):
    a, b = Worker(clients, "a", only_tenant=tenant_id), Worker(clients, "b", only_tenant=tenant_id)
    results = await asyncio.gather(a.run_periodic(), b.run_periodic())
    ran = [name for r in results for name in r]
    assert sorted(ran) == sorted(["decay", "archive", "cleanup", "tenant_indexes"])
    assert await a.run_periodic() == {}  # not due again within the interval


async def test_cleanup_deletes_only_orphan_idle_low_salience_entities(memory, clients, tenant_id, graph_count):
    orphan = await memory.upsert_entity("Forgotten Thing", salience=0.05)
    cited = await memory.upsert_entity("Cited Thing", salience=0.05)
    await memory.learn_fact("a fact about the cited thing", entity_ids=[cited.id])
    await _age(
        clients,
        tenant_id,
        "UPDATE memory_timeline SET last_accessed = now() - interval '60 days',"
        " updated_at = now() - interval '60 days' WHERE memory_type = 'entity'",
    )
    counts = await jobs.cleanup(clients, tenant_id)
    assert counts["orphan_entities"] == 1
    assert await graph_count("MATCH (e:Entity {id: $id}) RETURN count(e)", id=orphan.id) == 0
    assert await graph_count("MATCH (e:Entity {id: $id}) RETURN count(e)", id=cited.id) == 1
    assert (await jobs.cleanup(clients, tenant_id))["orphan_entities"] == 0


async def test_decay_is_idempotent_within_a_day(memory, clients, tenant_id, graph_count):
    entity = await memory.upsert_entity("Fading Memory", salience=0.8)
    await _age(clients, tenant_id, "UPDATE memory_timeline SET last_accessed = now() - interval '2 days'")
    assert await jobs.decay_salience(clients, tenant_id) == 1
    assert await jobs.decay_salience(clients, tenant_id) == 0
    expected = 0.8 * clients.settings.salience_decay_rate
    assert (
        await graph_count(
            "MATCH (e:Entity {id: $id}) WHERE abs(e.salience - $s) < 1e-9 RETURN count(e)", id=entity.id, s=expected
        )
        == 1
    )


async def test_archival_hides_old_conversations(memory, clients, tenant_id):
    await memory.store_turn("user", "an ancient conversation")
    await _age(clients, tenant_id, "UPDATE conversations SET last_turn_at = now() - interval '400 days'")
    assert await jobs.archive_old_conversations(clients, tenant_id) == 1
    assert await jobs.archive_old_conversations(clients, tenant_id) == 0
    assert await memory.get_conversation() == []
    # A new turn reopens the conversation; once idle past retention again, it is archived again.
    await memory.store_turn("user", "back after a long break")
    assert [t.content for t in await memory.get_conversation()] == ["back after a long break"]
    await _age(clients, tenant_id, "UPDATE conversations SET last_turn_at = now() - interval '400 days'")
    assert await jobs.archive_old_conversations(clients, tenant_id) == 1
    assert await memory.get_conversation() == []


@pytest.mark.slow
def test_sigterm_stops_the_worker_cleanly(stack):
    env = {**os.environ, **stack.env(), "MEMORY_REFLECTION_STREAM": f"mc:test:{uuid.uuid4().hex}"}
    proc = subprocess.Popen(
        # Port 0: a fixed probe port can be taken by another worker on a shared machine.
        [sys.executable, "-m", "memory_core.worker", "--host", "127.0.0.1", "--port", "0"],
        env=env,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        for line in proc.stderr:
            if "started" in line:
                break
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0
        assert "stopped" in proc.stderr.read()
    finally:
        if proc.poll() is None:
            proc.kill()


async def test_an_undecodable_job_does_not_block_the_batch(memory, clients, private_queue):
    worker = Worker(clients, "w1")
    await worker.ensure_group()
    await clients.redis.xadd(private_queue.reflection_stream, {"job_id": b"\xff\xfe", "tenant_id": b"\xff"})
    await memory.reflect({"success": True, "summary": "a good job after a bad one"})
    assert await worker.process_reflections(block_ms=10) == 1
    pending = await clients.redis.xpending(private_queue.reflection_stream, private_queue.reflection_group)
    assert pending["pending"] == 1  # only the bad one, left for retry and then the dead-letter stream
    await clients.redis.delete(private_queue.reflection_stream)


async def test_cleanup_removes_expired_turns_from_the_graph(memory, clients, tenant_id, graph_count):
    kept = await memory.store_turn("user", "a turn that stays")
    expired = await memory.store_turn("user", "a secret that must not outlive its ttl", ttl_seconds=3600)
    await _age(
        clients,
        tenant_id,
        "UPDATE conversation_logs SET expires_at = now() - interval '1 second' WHERE turn_id = %s",
        expired.id,
    )
    assert (await jobs.cleanup(clients, tenant_id))["expired_turns"] == 1
    assert await graph_count("MATCH (t:Turn {id: $id}) RETURN count(t)", id=expired.id) == 0
    assert await graph_count("MATCH (t:Turn {id: $id}) RETURN count(t)", id=kept.id) == 1


async def test_forget_finds_nodes_through_indexes_not_a_scan_of_the_whole_graph(clients):
    from memory_core.stores.graph import _QUERIES

    _, summary, _ = await clients.neo4j.execute_query("EXPLAIN " + _QUERIES["forget"], ids=["x"], tenant_id="t")
    operators, todo = [], [summary.plan]
    while todo:
        node = todo.pop()
        operators.append(node["operatorType"])
        todo += node.get("children", [])
    assert not [op for op in operators if "AllNodesScan" in op or "NodeByLabelScan" in op], operators


async def test_replay_stops_between_batches_once_the_worker_is_stopping(clients, tenant_id):
    from memory_core.stores.graph import record

    async with clients.tenant_transaction(tenant_id) as conn:
        for i in range(3):
            await record(conn, tenant_id, "archive", {"conversation_ids": [f"c{i}"]})
    original = clients.settings
    clients.settings = original.model_copy(update={"outbox_batch": 1})
    try:
        worker = Worker(clients, "w1")
        worker.stopping.set()  # SIGTERM arrived: finish the batch under way, start no other
        assert await jobs.replay_outbox(clients, stop=worker.stopping) == 1
    finally:
        clients.settings = original
    async with clients.tenant_transaction(tenant_id) as conn:
        cur = await conn.execute("SELECT count(*) FROM graph_outbox WHERE tenant_id = %s", (tenant_id,))
        assert (await cur.fetchone())[0] >= 2
    await jobs.replay_outbox(clients)


async def test_a_stopped_worker_leaves_the_group_unless_it_holds_pending_jobs(memory, clients, private_queue):
    async def consumers() -> set[bytes]:
        infos = await clients.redis.xinfo_consumers(private_queue.reflection_stream, private_queue.reflection_group)
        return {i["name"] for i in infos}

    done, stuck = Worker(clients, "done"), Worker(clients, "stuck")
    await done.ensure_group()
    await memory.reflect({"success": True})
    assert await done.process_reflections(block_ms=10) == 1
    await clients.redis.xadd(private_queue.reflection_stream, {"job_id": "broken", "tenant_id": "\x01bad"})
    assert await stuck.process_reflections(block_ms=10) == 0  # fails: stays pending on "stuck"
    assert {b"done", b"stuck"} <= await consumers()
    for worker in (done, stuck):
        worker.stopping.set()
        await worker.run()
    assert b"done" not in await consumers()
    assert b"stuck" in await consumers()  # its pending job must survive for a retry
    await clients.redis.delete(private_queue.reflection_stream)


async def test_a_running_worker_projects_writes_left_to_it(memory, clients, private_queue, tenant_id, graph_count):
    from memory_core.stores.graph import set_projection

    set_projection(clients, "worker")
    turn = await memory.store_turn("user", "projected by the worker's loop")
    assert await graph_count("MATCH (t:Turn {id: $id}) RETURN count(t)", id=turn.id) == 0
    worker = Worker(clients, "w1", only_tenant=tenant_id, poll_s=0.05)
    running = asyncio.create_task(worker.run())
    try:
        for _ in range(200):  # the loop replays between polls for reflection jobs, without one arriving
            if await graph_count("MATCH (t:Turn {id: $id}) RETURN count(t)", id=turn.id):
                break
            await asyncio.sleep(0.05)
        assert await graph_count("MATCH (t:Turn {id: $id}) RETURN count(t)", id=turn.id) == 1
    finally:
        worker.stopping.set()
        await running
