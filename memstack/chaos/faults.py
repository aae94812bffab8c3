"""The faults: a store killed and started again, paused (a hang), or cut off the network from the
service container. Each is undone before it returns, whatever happens in between."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass

from memstack.errors import MemstackError

STORES = ("redis", "postgres", "neo4j")
KINDS = ("kill", "pause", "netcut")
# How long a fault lasts when --duration is not given: a kill is started again at once (its
# outage is the restart), a pause is a 2 s hang, a network cut 5 s.
DEFAULT_DURATION_S = {"kill": 0.0, "pause": 2.0, "netcut": 5.0}
FAULTS = tuple(f"{store}-{kind}" for kind in KINDS for store in STORES)


@dataclass(frozen=True)
class Fault:
    store: str
    kind: str

    @classmethod
    def parse(cls, name: str) -> Fault:
        store, _, kind = name.partition("-")
        if store not in STORES or kind not in KINDS:
            raise MemstackError(f"unknown fault {name!r}: choose one of {', '.join(FAULTS)}")
        return cls(store, kind)

    @property
    def name(self) -> str:
        return f"{self.store}-{self.kind}"


@dataclass
class Window:
    """Wall-clock times (epoch s): the fault began, and it was undone (the store answering again)."""

    start: float
    end: float


def _iptables(pid: int, *rule: str) -> None:
    # In the store's own network namespace: nothing on the host or in other containers changes.
    result = subprocess.run(["nsenter", "-t", str(pid), "-n", "iptables", "-w", *rule], capture_output=True, text=True)
    if result.returncode != 0:
        raise MemstackError(f"iptables in the store's network namespace failed: {result.stderr.strip()}")


def inject(
    backend, fault: Fault, duration_s: float, peer_ip: str | None = None, sleep: Callable[[float], None] = time.sleep
) -> Window:
    """Apply `fault` to the store's container for `duration_s`, undo it, wait until the store answers."""
    container = backend.container(fault.store)
    if container is None:
        raise MemstackError(f"{fault.store} has no container in this stack; run `memstack up --backend containers`")
    start = time.time()
    if fault.kind == "kill":
        backend.kill(fault.store)
        sleep(duration_s)
        backend.start(fault.store)
    elif fault.kind == "pause":
        container.pause()
        try:
            sleep(duration_s)
        finally:
            container.unpause()
    else:
        if not peer_ip:
            raise MemstackError("a network cut needs the service container's address")
        container.reload()
        pid = container.attrs["State"]["Pid"]
        rules = [("INPUT", "-s"), ("OUTPUT", "-d")]
        added = []
        try:
            for chain, direction in rules:
                _iptables(pid, "-I", chain, direction, peer_ip, "-j", "DROP")
                added.append((chain, direction))
            sleep(duration_s)
        finally:
            for chain, direction in added:
                _iptables(pid, "-D", chain, direction, peer_ip, "-j", "DROP")
    return Window(start=start, end=time.time())
