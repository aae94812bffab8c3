"""An id in a path that is not a UUID is the caller's mistake (422 naming it), not an unknown item (404)."""

from __future__ import annotations

import pytest


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("PATCH", "/v1/goals/u1/not-a-uuid", {"status": "completed"}),
        ("POST", "/v1/procedural/u1/strategies/not-a-uuid/outcomes", {"success": True}),
    ],
)
async def test_a_malformed_path_id_is_422_naming_it(api, method, path, body):
    r = await api.call(method, path, json=body)
    assert r.status_code == 422, r.text
    assert "'not-a-uuid' is not a memory item id" in r.text


async def test_a_well_formed_unknown_goal_id_is_still_404(api):
    r = await api.call("PATCH", "/v1/goals/u1/00000000-0000-0000-0000-000000000000", json={"status": "completed"})
    assert r.status_code == 404, r.text
