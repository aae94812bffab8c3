"""`remember` sends its independent reads in one pipelined transaction: every part of the bundle
must still come from the statement that reads it, and the whole call takes one pooled connection."""

from __future__ import annotations

from memory_core.stores import episodic


async def test_every_part_of_the_bundle_in_one_checkout(memory, clients):
    await memory.store_turn("user", "the deploy pipeline uses blue green releases")
    await memory.store_turn("assistant", "blue green releases switch traffic at the load balancer")
    lb = await memory.upsert_entity("Load Balancer", "Component", description="blue green traffic switch")
    pipeline = await memory.upsert_entity("Deploy Pipeline", "Component", description="release automation")
    await memory.relate(lb.id, pipeline.id, "PART_OF")
    await memory.learn_fact("releases are blue green", entity_ids=[pipeline.id])
    await memory.learn_strategy("blue green release with a load balancer switch", tool_sequence=["deploy"])
    await memory.add_goal("finish the blue green rollout", priority=7)
    await memory.set_preferences(tone="terse")

    before = clients.pg_pool.get_stats().get("requests_num", 0)
    bundle = await memory.remember("blue green release load balancer", top_k=5)
    assert clients.pg_pool.get_stats().get("requests_num", 0) - before == 1

    assert {t["content"] for t in bundle.relevant_turns} == {
        "the deploy pipeline uses blue green releases",
        "blue green releases switch traffic at the load balancer",
    }
    assert [f["claim"] for f in bundle.facts] == ["releases are blue green"]
    assert {e["name"] for e in bundle.entities} == {"Load Balancer", "Deploy Pipeline"}
    assert [s["description"] for s in bundle.strategies] == ["blue green release with a load balancer switch"]
    assert [g["description"] for g in bundle.active_goals] == ["finish the blue green rollout"]
    assert bundle.user_context["preferences"] == {"tone": "terse"}


async def test_parts_left_out_stay_empty(memory):
    await memory.store_turn("user", "kept out of this bundle")
    await memory.learn_fact("also kept out")
    await memory.learn_strategy("kept out too", tool_sequence=["x"])
    await memory.add_goal("goals are always attached")
    bundle = await memory.remember("kept out", include_episodic=False, include_semantic=False, include_procedural=False)
    assert (bundle.relevant_turns, bundle.facts, bundle.entities, bundle.strategies) == ([], [], [], [])
    assert [g["description"] for g in bundle.active_goals] == ["goals are always attached"]


async def test_the_turn_search_reads_the_newest_turns_too_and_leaves_sorting_as_it_was(memory, clients):
    for i in range(6):
        await memory.store_turn("user", f"turn number {i} about the release train")
    vector = (await clients.embedder.embed(["release train"]))[0]
    where = {"tenant_id": memory.tenant_id, "user_id": memory.user_id, "embedding": vector}
    async with clients.tenant_transaction(memory.tenant_id, pipeline=True) as conn:
        alone = await episodic.start_recent_turns(conn, limit=2, **where)
        together = await episodic.start_search_turns(conn, limit=3, recent=2, **where)
        nearest = await episodic.start_search_turns(conn, limit=3, **where)
        newest, rows = await alone(), await together()
        assert rows == await nearest() + newest
        assert [t["content"] for t in newest] == [
            "turn number 5 about the release train",
            "turn number 4 about the release train",
        ]
        # The search was planned without sorting; the statements after it are planned with it.
        cur = await conn.execute("SELECT current_setting('enable_sort')")
        assert await cur.fetchone() == ("on",)
