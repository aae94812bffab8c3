"""Working memory in Redis: recent turns, context values with TTL and priority, thoughts.

Key layout, one hash tag per conversation so its keys share a Redis Cluster slot:
    {prefix}:{tenant|user|conversation}:ctx       hash  field -> "<expires_ms>|<priority>|<json>"
    {prefix}:{tenant|user|conversation}:turns     list  newest first, capped
    {prefix}:{tenant|user|conversation}:thoughts  list  newest first, capped
Identifiers are percent-encoded, so caller text cannot contain the tag's braces or separators.
Every operation is one round trip (one command, a Lua script or a MULTI/EXEC transaction; a
whole-context read that finds expired fields takes a second one to drop them); every key has a
TTL; every collection has a cap. Redis 7.0 has no per-field TTL, so context fields carry their
own expiry, checked against the server clock, and expired fields are dropped lazily.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Awaitable
from json.encoder import encode_basestring_ascii as _json_string
from typing import TYPE_CHECKING, Any, cast
from urllib.parse import quote

from pydantic_core import from_json
from redis.exceptions import NoScriptError

from ..errors import Conflict, InvalidInput
from ..settings import Settings
from ..validation import check_positive, check_priority, check_text

if TYPE_CHECKING:  # clients imports this module
    from ..clients import RedisClient, Transaction

# `now` in ms from the server clock (`WorkingMemory._snapshot` computes it the same way).
_NOW = """local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
"""

# `now` and a parser for stored fields (the other scripts cut the stored text themselves:
# cheaper where they run on every read).
_PRELUDE = (
    "\n"
    + _NOW
    + """local function parse(v)
  local e, p, body = string.match(v, '^(%d+)|(%-?%d+)|(.*)$')
  return tonumber(e), tonumber(p), body
end
"""
)

# KEYS[1] ctx; ARGV field, json, ttl_ms, priority, cap. Returns 1, or 0 when the hash is full
# of higher-priority live values.
_SET = (
    _PRELUDE
    + """
local field, ttl, prio, cap = ARGV[1], tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])
if redis.call('HLEN', KEYS[1]) >= cap and redis.call('HEXISTS', KEYS[1], field) == 0 then
  local all = redis.call('HGETALL', KEYS[1])
  local live, victim, vprio, vexp = 0, nil, nil, nil
  for i = 1, #all, 2 do
    local e, p = parse(all[i + 1])
    if e <= now then
      redis.call('HDEL', KEYS[1], all[i])
    else
      live = live + 1
      if victim == nil or p < vprio or (p == vprio and e < vexp) then
        victim, vprio, vexp = all[i], p, e
      end
    end
  end
  if live >= cap then
    if vprio > prio then return 0 end
    redis.call('HDEL', KEYS[1], victim)
  end
end
redis.call('HSET', KEYS[1], field, (now + ttl) .. '|' .. prio .. '|' .. ARGV[2])
local pttl = redis.call('PTTL', KEYS[1])
if pttl < ttl then redis.call('PEXPIRE', KEYS[1], ttl) end
return 1
"""
)

# KEYS[1] ctx; ARGV field. Returns the json or nil. The hottest script: the clock is read only
# for a field that exists, and the stored text is cut at its separators rather than matched
# with captures (measured: 7.7 -> 6.7 us of Redis CPU per call).
_GET = (
    """
local v = redis.call('HGET', KEYS[1], ARGV[1])
if not v then return false end
"""
    + _NOW
    + """local e = string.find(v, '|', 1, true)
if tonumber(string.sub(v, 1, e - 1)) <= now then redis.call('HDEL', KEYS[1], ARGV[1]) return false end
return string.sub(v, string.find(v, '|', e + 1, true) + 1)
"""
)

# KEYS[1] ctx; ARGV fields a read found expired. Drops each that is still expired: one set again
# since the read has a new expiry and stays. The whole-context read runs this only when it found
# an expired field; it reads the clock and the hash in a transaction (TIME, HGETALL) and parses
# the fields itself: a script costs Redis 6 us per call even for one field, those two 0.6 us.
_DROP_EXPIRED = (
    "\n"
    + _NOW
    + """for i = 1, #ARGV do
  local v = redis.call('HGET', KEYS[1], ARGV[i])
  if v and tonumber(string.sub(v, 1, string.find(v, '|', 1, true) - 1)) <= now then
    redis.call('HDEL', KEYS[1], ARGV[i])
  end
end
return 1
"""
)


# KEYS[1] list; ARGV item, cap, ttl_ms. What a MULTI of LPUSH, LTRIM and PEXPIRE does, as one
# command: a transaction pipeline costs the client several times one EVALSHA.
_PUSH = """
redis.call('LPUSH', KEYS[1], ARGV[1])
redis.call('LTRIM', KEYS[1], 0, tonumber(ARGV[2]) - 1)
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return 1
"""


class WorkingMemoryFull(Conflict):
    """The context hash is at its cap and every live value outranks the new one."""


def conversation_tag(prefix: str, tenant_id: str, user_id: str, conversation_id: str | None) -> str:
    parts = (tenant_id, user_id, conversation_id if conversation_id is not None else "")
    return prefix + ":{" + "|".join(quote(p, safe="") for p in parts) + "}"


# What `json.dumps(value, allow_nan=False, separators=(",", ":"))` builds on every call, built
# once; the same text. ASCII only (ensure_ascii): its length in characters is its size in bytes.
_ENCODER = json.JSONEncoder(allow_nan=False, separators=(",", ":"))


def _dumps(value: Any) -> str:
    try:
        return _ENCODER.encode(value)
    except (TypeError, ValueError) as exc:
        raise InvalidInput(f"working-memory value is not JSON-serialisable: {exc}") from None


def _loads(text: bytes) -> Any:
    """`json.loads(text)`, parsed by pydantic's JSON parser (jiter) where it can: twice as fast
    for a whole context (4 KB: 10.8 -> 5.8 us), the same values (floats, big integers, escapes,
    duplicate keys). What it refuses goes to `json.loads`, which reads it or raises as before:
    a lone surrogate's escape (which `json.dumps` writes), nesting deeper than 200, bad JSON."""
    try:
        return from_json(text)
    except ValueError:
        return json.loads(text)


def _parse_all(texts: list[bytes]) -> list[Any]:
    """JSON texts parsed as one array: one parse costs less than one per text."""
    parsed: list[Any] = _loads(b"[" + b",".join(texts) + b"]")
    return parsed


class _Script:
    """One Lua script run by its SHA1 (EVALSHA), loaded into Redis (SCRIPT LOAD) the first time
    the server answers that it does not know it: after a restart, a flush or on a new server.

    Not redis-py's `Script`: its call checks whether the client is a pipeline and imports the
    pipeline class on every call, a measurable part of a working-memory request."""

    __slots__ = ("_redis", "sha", "source")

    def __init__(self, redis: RedisClient, source: str):
        self._redis = redis
        self.source = source
        self.sha = hashlib.sha1(source.encode()).hexdigest()

    async def __call__(self, keys: list[str], args: list[Any]) -> Any:
        # The command itself, as `evalsha` sends it through two more calls.
        try:
            return await self._redis.execute_command("EVALSHA", self.sha, len(keys), *keys, *args)
        except NoScriptError:
            await self._redis.script_load(self.source)
            return await self._redis.execute_command("EVALSHA", self.sha, len(keys), *keys, *args)


class WorkingScripts:
    """The Lua scripts, one set per Redis client."""

    def __init__(self, redis: RedisClient):
        self.set = _Script(redis, _SET)
        self.get = _Script(redis, _GET)
        self.drop_expired = _Script(redis, _DROP_EXPIRED)
        self.push = _Script(redis, _PUSH)


class WorkingMemory:
    def __init__(
        self,
        redis: RedisClient,
        scripts: WorkingScripts,
        settings: Settings,
        tenant_id: str,
        user_id: str,
        conversation_id: str | None,
    ):
        self._redis = redis
        self._settings = settings
        tag = conversation_tag(settings.working_key_prefix, tenant_id, user_id, conversation_id)
        self.ctx_key = tag + ":ctx"
        self.turns_key = tag + ":turns"
        self.thoughts_key = tag + ":thoughts"
        self._scripts = scripts
        # Every turn and thought, and a value set without a TTL, live this long.
        self._default_ttl_ms = max(1, int(min(settings.working_ttl_s, settings.working_max_ttl_s) * 1000))
        # The whole-context read's transaction, packed for the limits it last ran with.
        self._snapshot_reads: tuple[tuple[int, int], Transaction] | None = None

    def _ttl_ms(self, ttl_seconds: float | None) -> int:
        if ttl_seconds is None:
            return self._default_ttl_ms
        return max(1, int(min(check_positive(ttl_seconds, "ttl_seconds"), self._settings.working_max_ttl_s) * 1000))

    def _encode(self, value: Any) -> str:
        text = _dumps(value)
        if len(text) > self._settings.working_max_value_bytes:
            raise InvalidInput(f"working-memory value exceeds {self._settings.working_max_value_bytes} bytes")
        return text

    async def set(self, key: str, value: Any, ttl_seconds: float | None = None, priority: int = 0) -> None:
        field = check_text(key, "key", 256)
        check_priority(priority)
        stored = await self._scripts.set(
            keys=[self.ctx_key],
            args=[
                field,
                self._encode(value),
                self._ttl_ms(ttl_seconds),
                priority,
                self._settings.working_max_context_keys,
            ],
        )
        if not stored:
            raise WorkingMemoryFull(
                f"working context is at its cap of {self._settings.working_max_context_keys} keys "
                f"and every live key has priority > {priority}"
            )

    def get_json(self, key: str) -> Awaitable[bytes | None]:
        """The value as its stored JSON text (compact, as `json.dumps` wrote it), or None.
        The script's call itself, awaited by the caller: no coroutine of its own in between."""
        return self._scripts.get(keys=[self.ctx_key], args=[check_text(key, "key", 256)])

    async def get(self, key: str) -> Any | None:
        raw = await self.get_json(key)
        return None if raw is None else _loads(raw)

    async def delete(self, key: str) -> bool:
        return bool(await self._redis.hdel(self.ctx_key, check_text(key, "key", 256)))

    async def _push(self, key: str, item: dict[str, Any], cap: int) -> None:
        await self._scripts.push(keys=[key], args=[_dumps(item), cap, self._ttl_ms(None)])

    async def add_turn(self, turn: dict[str, Any]) -> None:
        limit = self._settings.working_max_value_bytes // 4  # a char is at most 4 UTF-8 bytes
        if len(turn["content"]) > limit:
            turn = {**turn, "content": turn["content"][:limit], "truncated": True}
        await self._push(self.turns_key, turn, self._settings.working_max_turns)

    async def push_thought(self, thought: str, timestamp: str) -> None:
        text = check_text(thought, "thought", self._settings.working_max_value_bytes // 4)
        await self._push(
            self.thoughts_key, {"thought": text, "timestamp": timestamp}, self._settings.working_max_thoughts
        )

    async def _newest_json(self, key: str, limit: int) -> list[bytes]:
        # Bytes: the client does not decode responses (MemoryClients' Redis client).
        return cast(list[bytes], await self._redis.lrange(key, 0, limit - 1)) if limit > 0 else []

    async def recent_turns_json(self, limit: int = 10) -> list[bytes]:
        """The newest turns as their stored JSON texts (compact, as `json.dumps` wrote them)."""
        return await self._newest_json(self.turns_key, limit)

    async def thoughts_json(self, limit: int = 10) -> list[bytes]:
        """The newest thoughts as their stored JSON texts."""
        return await self._newest_json(self.thoughts_key, limit)

    async def recent_turns(self, limit: int = 10) -> list[dict[str, Any]]:
        return _parse_all(await self.recent_turns_json(limit))

    async def thoughts(self, limit: int = 10) -> list[dict[str, Any]]:
        return _parse_all(await self.thoughts_json(limit))

    async def _snapshot(self, turns: int, thoughts: int) -> tuple[list[bytes], list[bytes], list[bytes]]:
        """Live context as a flat field/JSON list, recent turns and thoughts as JSON texts."""
        if self._snapshot_reads is None or self._snapshot_reads[0] != (turns, thoughts):
            # No LRANGE for a limit of 0: LRANGE 0 -1 would be the whole list.
            reads = []
            if turns > 0:
                reads.append(("LRANGE", self.turns_key, 0, turns - 1))
            if thoughts > 0:
                reads.append(("LRANGE", self.thoughts_key, 0, thoughts - 1))
            transaction = self._redis.pack_transaction(("TIME",), ("HGETALL", self.ctx_key), *reads)
            self._snapshot_reads = (turns, thoughts), transaction
        (seconds, microseconds), stored, *lists = await self._redis.run_transaction(self._snapshot_reads[1])
        now = int(seconds) * 1000 + int(microseconds) // 1000  # as _NOW computes it
        flat: list[bytes] = []
        expired: list[bytes] = []
        # HGETALL answers a map in RESP3 (redis-py's default), a flat list in RESP2.
        fields = stored.items() if isinstance(stored, dict) else zip(stored[::2], stored[1::2], strict=True)
        for field, value in fields:
            expires, _, rest = value.partition(b"|")  # "<expires_ms>|<priority>|<json>"
            if int(expires) <= now:
                expired.append(field)
            else:
                flat += (field, rest.partition(b"|")[2])
        if expired:
            await self._scripts.drop_expired(keys=[self.ctx_key], args=expired)
        recent = lists.pop(0) if turns > 0 else []
        return flat, recent, lists.pop(0) if thoughts > 0 else []

    async def snapshot(self, turns: int = 10, thoughts: int = 10) -> dict[str, Any]:
        """All live context values plus recent turns and thoughts, in one round trip."""
        # One parse of the whole document costs less than one per stored value.
        snapshot: dict[str, Any] = _loads(await self.snapshot_json(turns, thoughts))
        return snapshot

    async def snapshot_json(self, turns: int = 10, thoughts: int = 10) -> bytes:
        """`snapshot()` as compact JSON text, the stored values embedded as they are: the same
        bytes as `json.dumps(snapshot(), separators=(",", ":"))`."""
        flat, recent, recent_thoughts = await self._snapshot(turns, thoughts)
        # Each field name as `json.dumps` quotes a string, by the C function it calls (a third
        # of the cost: 5.1 -> 1.8 us for eight keys).
        context = b",".join(
            _json_string(flat[i].decode()).encode() + b":" + flat[i + 1] for i in range(0, len(flat), 2)
        )
        return (
            b'{"context":{'
            + context
            + b'},"recent_turns":['
            + b",".join(recent)
            + b'],"thoughts":['
            + b",".join(recent_thoughts)
            + b"]}"
        )

    async def clear(self) -> None:
        await self._redis.delete(self.ctx_key, self.turns_key, self.thoughts_key)
