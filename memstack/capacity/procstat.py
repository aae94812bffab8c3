"""CPU seconds used by a process, read from /proc/<pid>/stat (fields 14-17: utime, stime and the
cutime, cstime of children it has waited for), in clock ticks.

A Postgres server is a postmaster and one process per connection plus background workers, all
its children. Its CPU is the postmaster's own and reaped children's time plus every live child's
own time: a backend that exits between two readings is then still counted, through the
postmaster's cutime/cstime.
"""

from __future__ import annotations

import os
from pathlib import Path

PROC = Path("/proc")
TICKS = os.sysconf("SC_CLK_TCK")


def _fields(pid: int) -> list[str] | None:
    try:
        raw = (PROC / str(pid) / "stat").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    # The command name (field 2) is in parentheses and may hold spaces: split after its last ')'.
    return raw[raw.rindex(")") + 2 :].split()


def _ticks(fields: list[str], children: bool) -> int:
    # After the name: state is index 0, ppid 1, ... utime 11, stime 12, cutime 13, cstime 14.
    own = int(fields[11]) + int(fields[12])
    return own + (int(fields[13]) + int(fields[14]) if children else 0)


def process_cpu_seconds(pid: int) -> float | None:
    """CPU seconds of one process (with the children it reaped); None when it is gone."""
    fields = _fields(pid)
    return None if fields is None else _ticks(fields, children=True) / TICKS


def tree_cpu_seconds(pid: int) -> float | None:
    """CPU seconds of a process and its live direct children (a postmaster and its backends)."""
    fields = _fields(pid)
    if fields is None:
        return None
    total = _ticks(fields, children=True)
    for entry in PROC.iterdir():
        if not entry.name.isdigit() or entry.name == str(pid):
            continue
        child = _fields(int(entry.name))
        if child is not None and int(child[1]) == pid:
            total += _ticks(child, children=False)
    return total / TICKS


def sample(pids: dict[str, int]) -> dict[str, float | None]:
    """CPU seconds per component name; Postgres (named `postgres`) with all its backends."""
    return {
        name: (tree_cpu_seconds(pid) if name == "postgres" else process_cpu_seconds(pid)) for name, pid in pids.items()
    }


def per_request(
    before: dict[str, float | None], after: dict[str, float | None], requests: int
) -> dict[str, float | None]:
    """CPU seconds per request of each component between two samples."""
    result: dict[str, float | None] = {}
    for name, start in before.items():
        end = after.get(name)
        result[name] = None if start is None or end is None or requests <= 0 else max(end - start, 0.0) / requests
    return result


def rss_bytes(pid: int) -> int | None:
    """Resident memory of one process (VmRSS), None when it is gone."""
    try:
        for line in (PROC / str(pid) / "status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    return None
