"""memory_core's packages import downward: the worker and the service share what lies below them."""

from __future__ import annotations

import subprocess
import sys


def imported_after(statement: str) -> set[str]:
    probe = f"import sys\n{statement}\nprint('\\n'.join(sorted(sys.modules)))"
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return set(result.stdout.split())


def test_the_worker_does_not_reach_into_the_service():
    modules = imported_after("import memory_core.worker.probes, memory_core.worker.__init__")
    assert "memory_core.health" in modules  # the shared store checks are really in use
    assert not {m for m in modules if m.startswith("memory_core.service")}


def test_the_service_takes_store_health_from_below():
    modules = imported_after("import memory_core.service.app")
    assert "memory_core.health" in modules
    assert not {m for m in modules if m.startswith("memory_core.worker")}
