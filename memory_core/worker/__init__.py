"""The consolidation worker: `run_worker(settings)` or `python -m memory_core.worker`."""
from .consumer import Worker, run_worker

__all__ = ["Worker", "run_worker"]
