"""The consolidation worker: the job loop (`Worker`) and its one entry point (`run_worker`, which
`memstack worker` and `python -m memory_core.worker` both call)."""

from .consumer import Worker
from .probes import run_worker

__all__ = ["Worker", "run_worker"]
