"""Postgres runs with memory and planner settings sized to the machine (both local backends take
them from `server_settings`), and a bad buffer-pool size is refused in one line naming it."""

from __future__ import annotations

import psycopg
import pytest

from memstack.errors import MemstackError
from memstack.local.postgres_server import SHARED_BUFFERS_ENV, server_settings

GB = 1024**3


def as_dict(args: list[str]) -> dict[str, str]:
    assert args[::2] == ["-c"] * (len(args) // 2)
    return dict(arg.split("=", 1) for arg in args[1::2])


def test_the_running_server_has_the_settings(stack, settings, monkeypatch):
    if stack.backend.name == "external":
        pytest.skip("an external Postgres is configured by its operator")
    monkeypatch.delenv(SHARED_BUFFERS_ENV, raising=False)
    expected = as_dict(server_settings())
    with psycopg.connect(settings.postgres_url.get_secret_value()) as conn:
        for name in ("shared_buffers", "effective_cache_size", "random_page_cost", "jit"):
            (value,) = conn.execute("SELECT current_setting(%s)", (name,)).fetchone()
            wanted = expected[name]
            if wanted.endswith("MB") and int(wanted[:-2]) % 1024 == 0:
                wanted = f"{int(wanted[:-2]) // 1024}GB"  # Postgres shows whole gigabytes so
            assert value == wanted, name


@pytest.mark.parametrize(
    ("memory", "shared_buffers", "effective_cache_size"),
    [
        (256 * 1024**2, "128MB", "192MB"),  # the floor: Postgres' own default
        (2 * GB, "512MB", "1536MB"),
        (24 * GB, "6144MB", "18432MB"),
        (256 * GB, "8192MB", "196608MB"),  # the ceiling
    ],
)
def test_the_buffer_pool_is_a_quarter_of_memory_within_bounds(
    memory, shared_buffers, effective_cache_size, monkeypatch
):
    monkeypatch.delenv(SHARED_BUFFERS_ENV, raising=False)
    chosen = as_dict(server_settings(memory))
    assert (chosen["shared_buffers"], chosen["effective_cache_size"]) == (shared_buffers, effective_cache_size)
    assert chosen["jit"] == "off"


def test_the_buffer_pool_size_can_be_set(monkeypatch):
    monkeypatch.setenv(SHARED_BUFFERS_ENV, "1000")
    assert as_dict(server_settings(24 * GB))["shared_buffers"] == "1000MB"


@pytest.mark.parametrize("value", ["64", "lots", "-5", ""])
def test_a_bad_buffer_pool_size_is_refused_naming_it(value, monkeypatch):
    monkeypatch.setenv(SHARED_BUFFERS_ENV, value)
    with pytest.raises(MemstackError, match=SHARED_BUFFERS_ENV):
        server_settings(24 * GB)
