"""The reflection queue: a Redis Stream the consolidation worker consumes (`memory_core.worker`).

The producer lives here, below AgentMemory, so that the library never imports the worker; the
two sides share only the stream's name and field layout through `Settings`.
"""

from __future__ import annotations

import uuid
from typing import Any

import redis.asyncio as aioredis
from redis.typing import EncodableT, FieldT

from ..errors import InvalidInput
from ..settings import Settings
from ..validation import check_json
from .semantic import Caller


async def enqueue_reflection(
    redis: aioredis.Redis,
    settings: Settings,
    caller: Caller,
    conversation_id: str | None,
    outcome: dict[str, Any],
) -> str:
    """Queue one reflection job; returns its id."""
    # Rejected here, not in the worker, where a bad job would only fail and be dead-lettered.
    if not isinstance(outcome, dict):
        raise InvalidInput(f"outcome must be a dict, got {type(outcome).__name__}")
    encoded = check_json(outcome, "outcome")
    if len(encoded) > settings.max_text_chars:
        raise InvalidInput(f"outcome is {len(encoded)} characters as JSON; the limit is {settings.max_text_chars}")
    job_id = str(uuid.uuid4())
    fields: dict[FieldT, EncodableT] = {
        "job_id": job_id,
        "tenant_id": caller.tenant_id,
        "user_id": caller.user_id,
        "conversation_id": conversation_id or "",
        "agent_id": caller.agent_id or "",
        "outcome": encoded,
    }
    await redis.xadd(settings.reflection_stream, fields, maxlen=settings.reflection_stream_maxlen, approximate=True)
    return job_id
