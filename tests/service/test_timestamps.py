"""One turn's timestamp is written the same way by every route that returns it: the episodic
answer (a pydantic model), working memory's recent turns and `remember` (built from dicts)."""

from __future__ import annotations


async def test_a_turn_has_one_timestamp_text_on_every_route(api):
    stored = await api.call(
        "POST", "/v1/episodic/u1/c1/turns", json={"role": "user", "content": "window seats on long flights"}
    )
    assert stored.status_code == 201, stored.text
    turn = stored.json()
    assert turn["timestamp"].endswith("Z"), turn

    working = await api.call("GET", "/v1/working/u1/c1/context")
    assert working.status_code == 200, working.text
    [recent] = [t for t in working.json()["recent_turns"] if t["id"] == turn["id"]]

    found = await api.call("POST", "/v1/remember/u1", json={"query": "window seats"})
    assert found.status_code == 200, found.text
    [relevant] = [t for t in found.json()["relevant_turns"] if t["id"] == turn["id"]]

    assert recent["timestamp"] == relevant["timestamp"] == turn["timestamp"]
