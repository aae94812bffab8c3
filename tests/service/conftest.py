"""Fixtures for the memory service: the app in-process over real stores (httpx + ASGITransport),
tokens for two tenants, and an in-memory span exporter."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import httpx
import pytest
import pytest_asyncio
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from memory_core import MemoryClients, migrate
from memory_core.service import create_app
from memory_core.service.auth import TokenTable, hash_line, new_token
from memory_core.service.config import ServiceSettings


@pytest.fixture(scope="session")
def migrated(settings):
    asyncio.run(migrate(settings))
    return settings


@pytest.fixture(scope="session")
def span_exporter():
    return InMemorySpanExporter()


@pytest.fixture(scope="session")
def tracer_provider(span_exporter):
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(span_exporter))
    return provider


@dataclass
class Api:
    client: httpx.AsyncClient
    tenant_id: str
    token: str
    other_token: str
    clients: MemoryClients

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    @property
    def other_auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.other_token}"}

    async def call(self, method: str, url: str, *, auth: dict | None = None, **kwargs) -> httpx.Response:
        headers = {**(self.auth if auth is None else auth), **kwargs.pop("headers", {})}
        return await self.client.request(method, url, headers=headers, **kwargs)


@pytest.fixture
def service_settings() -> ServiceSettings:
    return ServiceSettings()


@pytest_asyncio.fixture
async def api(migrated, tenant_id, tracer_provider, service_settings):
    token, other = new_token(), new_token()
    tokens = TokenTable.parse(f"{hash_line(tenant_id, token)}\n{hash_line(tenant_id + '-other', other)}\n", "test")
    clients = await MemoryClients.connect(migrated)
    app = create_app(migrated, service_settings, clients=clients, tokens=tokens, tracer_provider=tracer_provider)
    try:
        async with app.router.lifespan_context(app.app):
            async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://memstack") as client:
                yield Api(client, tenant_id, token, other, clients)
    finally:
        await clients.close()
