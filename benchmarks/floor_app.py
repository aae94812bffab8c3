"""The floor app of the service-efficiency benchmark: the cheapest request that still
authenticates and does one Redis command, with the service's Redis client and server.

A raw ASGI app: the bearer token is checked by a SHA-256 dict lookup (the service's token
table), then a read is one HGET and a write one HSET, with the redis-py client memory_core
builds, under the working-memory key prefix (MEMORY_WORKING_KEY_PREFIX) as the service's
keys are. It answers the working-memory routes of the Locust working profile with their status
codes (200/404 for reads, 204 for PUT, 201 for POST), so Locust counts the same requests.

    uvicorn --app-dir benchmarks floor_app:create --factory --loop uvloop --http httptools
"""

from __future__ import annotations

import hashlib
import os
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialWithJitterBackoff

from memory_core.clients import make_redis
from memory_core.service.auth import TokenTable
from memory_core.service.config import ServiceSettings
from memory_core.settings import Settings

_UNAUTHORIZED = b'{"detail":"invalid bearer token"}'


# The Redis client variant, for lowering the floor itself: "pool" (the default: the client
# memory_core builds, a pool of its connections with hiredis's parser), "python-parser"
# (the same with redis-py's own RESP parser), "single" (one of its connections, no pool),
# "redis-py" (redis-py's own client, pool and connection, with the same timeouts and retries).
REDIS_VARIANT_ENV = "FLOOR_REDIS"
REDIS_VARIANTS = ("pool", "python-parser", "single", "redis-py")


def create() -> Any:
    """The uvicorn factory: tokens and Redis from the environment, as the service reads them."""
    tokens = TokenTable.load(ServiceSettings())
    settings = Settings()
    redis = make_redis(settings)
    variant = os.environ.get(REDIS_VARIANT_ENV, "pool")
    if variant == "python-parser":
        from redis._parsers import _AsyncRESP2Parser

        redis.connection_pool.connection_kwargs["parser_class"] = _AsyncRESP2Parser
    elif variant == "single":
        redis = aioredis.Redis(connection_pool=redis.connection_pool, single_connection_client=True)
    elif variant == "redis-py":
        redis = aioredis.Redis.from_url(
            settings.redis_url.get_secret_value(),
            decode_responses=False,
            retry=Retry(ExponentialWithJitterBackoff(base=0.005, cap=0.05), retries=2),
            socket_timeout=settings.redis_timeout_s,
            socket_connect_timeout=settings.redis_timeout_s,
        )
    elif variant != "pool":
        raise SystemExit(f"{REDIS_VARIANT_ENV} must be one of {', '.join(REDIS_VARIANTS)}, not {variant!r}")
    return make_app(tokens._tenants_by_hash, redis, settings.working_key_prefix)


def make_app(by_hash: dict[str, str], redis: aioredis.Redis, prefix: str = "floor") -> Any:

    async def respond(send: Any, status: int, body: bytes = b"") -> None:
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    async def app(scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await redis.aclose()
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        path: str = scope["path"]
        if path == "/ready":
            await respond(send, 200, b'{"status":"ok"}')
            return
        token = b""
        for name, value in scope["headers"]:
            if name == b"authorization":
                token = value[7:]
                break
        tenant = by_hash.get(hashlib.sha256(token).hexdigest())
        if tenant is None:
            await respond(send, 401, _UNAUTHORIZED)
            return
        key = f"{prefix}:floor:{tenant}:{path}"
        if scope["method"] == "GET":
            value = await redis.hget(key, "v")
            if value is None:
                await respond(send, 404, b'{"detail":"not found"}')
            else:
                await respond(send, 200, b'{"value":' + value + b"}")
            return
        body = b""
        more = True
        while more:
            message = await receive()
            body += message.get("body", b"")
            more = message.get("more_body", False)
        await redis.hset(key, "v", body)
        await respond(send, 201 if scope["method"] == "POST" else 204)

    return app
