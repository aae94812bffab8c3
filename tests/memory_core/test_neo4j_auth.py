"""A Neo4j that rejects the configured password is an outage of the deployment, not the caller's mistake."""

from __future__ import annotations

import asyncio

import pytest
from neo4j import AsyncGraphDatabase
from neo4j.exceptions import ClientError as Neo4jClientError

from memory_core.errors import StoreUnavailable, store_errors


async def test_wrong_neo4j_password_is_store_unavailable(stack):
    # Several attempts: after a few, Neo4j answers with a rate-limit error instead (another ClientError).
    driver = AsyncGraphDatabase.driver(stack.neo4j_uri, auth=(stack.neo4j_user, stack.neo4j_password + "-wrong"))
    try:
        for _ in range(4):
            with pytest.raises(StoreUnavailable) as caught:
                with store_errors("neo4j"):
                    await driver.execute_query("RETURN 1")
            assert caught.value.store == "neo4j"
            assert str(caught.value).startswith("neo4j is unavailable:")
    finally:
        await driver.close()
        await _until_the_lock_out_ends(stack)


async def _until_the_lock_out_ends(stack) -> None:
    # The lock-out applies to the right password too: leave Neo4j usable for the tests after this one.
    driver = AsyncGraphDatabase.driver(stack.neo4j_uri, auth=(stack.neo4j_user, stack.neo4j_password))
    try:
        for _ in range(60):
            try:
                await driver.execute_query("RETURN 1")
                return
            except Neo4jClientError:
                await asyncio.sleep(0.5)
    finally:
        await driver.close()
