"""Date-times in bodies: an offset no zone has (beyond +-18:00) is the caller's 422, not a
write the graph projection then refuses."""

from __future__ import annotations


async def test_an_offset_beyond_18_hours_is_refused(api):
    r = await api.call("POST", "/v1/goals/user-1", json={"description": "d", "deadline": "2030-01-01T00:00:00-20:00"})
    assert r.status_code == 422 and "deadline" in r.text and "18:00" in r.text, r.text
    r = await api.call("POST", "/v1/remember/user-1", json={"query": "q", "since": "2030-01-01T00:00:00+18:30"})
    assert r.status_code == 422 and "since" in r.text, r.text


async def test_offsets_of_real_zones_are_accepted(api):
    for offset in ("+14:00", "-12:00", "+18:00", "Z"):
        deadline = f"2030-01-01T00:00:00{offset}"
        r = await api.call("POST", "/v1/goals/user-1", json={"description": "d", "deadline": deadline})
        assert r.status_code == 201, (offset, r.text)
