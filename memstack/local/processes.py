"""Starting, probing and stopping the local stack's OS processes."""

from __future__ import annotations

import contextlib
import errno
import os
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from memstack.errors import MemstackError


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_is_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        # As the servers themselves do: connections of a killed server in TIME_WAIT do not block it.
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError as exc:
            if exc.errno in (errno.EADDRINUSE, errno.EACCES):
                return False
            raise
        return True


def _proc_stat(pid: int) -> list[str] | None:
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) may contain spaces and parentheses: split after its last ')'.
    return [raw[: raw.index(" ")]] + ["comm"] + raw[raw.rindex(")") + 2 :].split()


def start_time(pid: int) -> int | None:
    """Kernel start time of `pid` in clock ticks; with the pid it names one process uniquely."""
    fields = _proc_stat(pid)
    return int(fields[21]) if fields else None


def is_running(pid: int | None, started: int | None) -> bool:
    """True if the process we recorded (pid + start time) is alive and not a zombie."""
    if not pid:
        return False
    try:
        # Reap it if it is our own dead child, so a SIGKILLed service is not seen as a live zombie.
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass
    fields = _proc_stat(pid)
    if fields is None or fields[2] in ("Z", "X"):
        return False
    return started is None or int(fields[21]) == started


@dataclass(frozen=True)
class Launch:
    """Everything needed to (re)start one service process."""

    argv: Sequence[str]
    log: Path
    env: dict[str, str] | None = None
    cwd: Path | None = None
    user: str | None = None


def spawn(launch: Launch) -> subprocess.Popen:
    launch.log.parent.mkdir(parents=True, exist_ok=True)
    with open(os.open(launch.log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600), "ab") as log:
        # A new session keeps the service alive after the CLI exits and out of its Ctrl-C.
        # umask 077: what the stores write (Redis's AOF and snapshot, Neo4j's store files) holds
        # every tenant's data, readable by the service's user only.
        return subprocess.Popen(
            list(launch.argv),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=launch.env,
            cwd=launch.cwd,
            user=launch.user,
            start_new_session=True,
            umask=0o077,
        )


# What an operator or a job runner sends to stop the CLI; each ends it through Python's cleanup.
_DEFERRED_SIGNALS = (signal.SIGTERM, signal.SIGINT)


@contextlib.contextmanager
def signals_deferred() -> Iterator[None]:
    """Hold SIGTERM and Ctrl-C back until the block is done, then act on them as usual.

    For the steps that must not be cut in two: starting a process and recording its pid (else
    it runs on with no record for `down` to find), and stopping it again. The Python handlers
    are swapped rather than the signals masked, since a signal masked in this thread would still
    be taken by another one and its handler run here anyway."""
    if threading.current_thread() is not threading.main_thread():
        yield  # only the main thread runs signal handlers, or may set them
        return
    caught: list[int] = []
    previous = {
        signum: signal.signal(signum, lambda signum, _frame: caught.append(signum)) for signum in _DEFERRED_SIGNALS
    }
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler if handler is not None else signal.SIG_DFL)
        if caught:
            signal.raise_signal(caught[0])


def log_tail(log: Path, lines: int = 1) -> str:
    try:
        text = log.read_text(errors="replace").strip().splitlines()
    except OSError:
        return ""
    return " | ".join(line.strip() for line in text[-lines:])


def wait_ready(
    name: str,
    exit_code: Callable[[], int | None],
    probe: Callable[[], bool],
    *,
    timeout: float,
    log: Path,
) -> None:
    """Poll `probe` until it answers True; fail naming the service if it exits or time runs out.

    `exit_code` returns None while the process lives.
    """
    deadline = time.monotonic() + timeout
    delay = 0.05
    while True:
        code = exit_code()
        if code is not None:
            raise ServiceExited(f"{name} exited with code {code} while starting; see {log}: {log_tail(log)}")
        if probe():
            return
        if time.monotonic() >= deadline:
            raise MemstackError(f"{name} was not ready within {timeout:.0f}s; see {log}: {log_tail(log)}")
        time.sleep(delay)
        delay = min(delay * 1.5, 0.5)


class ServiceExited(MemstackError):
    """The service process ended while we waited for it to answer."""


def stop_pid(pid: int | None, started: int | None, *, timeout: float, sig: int = signal.SIGTERM) -> bool:
    """Ask the process to stop with `sig`, wait, then SIGKILL. Returns True if it was running."""
    if not is_running(pid, started):
        return False
    assert pid is not None
    os.kill(pid, sig)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not is_running(pid, started):
            return True
        time.sleep(0.1)
    kill_pid(pid, started)
    return True


def kill_pid(pid: int | None, started: int | None) -> bool:
    """SIGKILL, as a crash of its container would: the process and everything in its process
    group (Redis's save child, Postgres's backends), which would otherwise keep the port, or the
    data directory's lock, for a restart to trip on. Returns True if the process was running."""
    if not is_running(pid, started):
        return False
    assert pid is not None
    try:
        group = os.getpgid(pid) == pid  # services are spawned as session leaders
        os.killpg(pid, signal.SIGKILL) if group else os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        return True
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        is_running(pid, started)  # reaps our own child
        if not _still_held(pid, group):
            break
        time.sleep(0.02)
    return True


def _still_held(pid: int, group: bool) -> bool:
    """True while the killed process's pid is taken, even by a zombie (Postgres's lock-file check
    counts it as a live postmaster), or another member of its group still runs (and may still
    hold a port: a zombie has closed its sockets)."""
    if _proc_stat(pid) is not None:
        return True
    if not group:
        return False
    for entry in os.listdir("/proc"):
        fields = _proc_stat(int(entry)) if entry.isdigit() else None
        if fields and fields[4] == str(pid) and fields[2] not in ("Z", "X"):
            return True
    return False
