"""A conversation is read a page at a time: at most MEMSTACK_MAX_LIST_LIMIT turns per answer,
then the turns after the page's `next_after_index`."""

from __future__ import annotations

import pytest

from memory_core.service.config import ServiceSettings

URL = "/v1/episodic/u1/c1/turns"


@pytest.fixture
def service_settings() -> ServiceSettings:
    return ServiceSettings(max_list_limit=3)


async def test_a_long_conversation_is_read_in_pages(api):
    for n in range(5):
        r = await api.call("POST", URL, json={"role": "user", "content": f"turn {n}"})
        assert r.status_code == 201, r.text
    first = (await api.call("GET", URL)).json()
    assert [t["content"] for t in first["turns"]] == ["turn 0", "turn 1", "turn 2"]
    assert first["next_after_index"] == 2
    rest = (await api.call("GET", URL, params={"after_index": first["next_after_index"]})).json()
    assert [t["content"] for t in rest["turns"]] == ["turn 3", "turn 4"]
    assert rest["next_after_index"] is None
    two = (await api.call("GET", URL, params={"limit": 2, "after_index": 1})).json()
    assert [t["index"] for t in two["turns"]] == [2, 3] and two["next_after_index"] == 3


@pytest.mark.parametrize("query", ["limit=4", "limit=0", "limit=-1", "limit=99999999999999999999", "after_index=-1"])
async def test_a_page_beyond_the_limits_is_refused(api, query):
    r = await api.call("GET", f"{URL}?{query}")
    assert r.status_code == 422, r.text
    assert r.json()["detail"], r.text
