"""A Redis lease: SET NX PX with a random token; release and renewal check the token, so a
worker whose lease expired cannot free or extend another worker's lease."""

from __future__ import annotations

import secrets

import redis.asyncio as aioredis

_RELEASE = "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end return 0"


class Lease:
    def __init__(self, redis: aioredis.Redis, key: str, ttl_ms: int):
        self._redis = redis
        self.key = key
        self.ttl_ms = ttl_ms
        self.token = secrets.token_hex(16)
        self._release = redis.register_script(_RELEASE)

    async def acquire(self) -> bool:
        return bool(await self._redis.set(self.key, self.token, nx=True, px=self.ttl_ms))

    async def release(self) -> bool:
        return bool(await self._release(keys=[self.key], args=[self.token]))
