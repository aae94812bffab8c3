"""The metrics side of the local stack: Prometheus brings the store exporters; the backend
interface knows its implementations only through the registry."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import memstack.local
from memstack.errors import MemstackError
from memstack.local import backend


def test_prometheus_brings_the_exporters_first_on_local_processes_only():
    core = ("redis", "postgres", "neo4j")
    assert backend.with_companions(core + ("prometheus",)) == core + (
        "redis-exporter",
        "postgres-exporter",
        "prometheus",
    )
    assert backend.with_companions(core + ("prometheus",), local_processes=False) == core + ("prometheus",)
    assert backend.with_companions(core + ("jaeger",)) == core + ("jaeger",)


def test_the_interface_imports_no_backend_and_every_backend_is_registered():
    tree = ast.parse(Path(backend.__file__).read_text())
    imported = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)} | {
        a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names
    }
    assert not {m for m in imported if m and m.startswith("memstack.local.")}, imported
    for name in backend.BACKENDS:
        assert name in backend._BACKENDS
    with pytest.raises(MemstackError, match="unknown backend 'nope'"):
        memstack.local.get_backend("nope")
    with pytest.raises(MemstackError, match="do not apply to the external backend"):
        memstack.local.get_backend("external", ports={"redis": 6390})
