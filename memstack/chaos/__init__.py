"""Faults injected into one store of a containers stack while the service is under load, and what
they cost: failed requests and their status codes, time to recover, working-memory p99 after
recovery, acknowledged writes lost."""
