"""Process control for the local stack, on real processes."""

from __future__ import annotations

import sys
import time

from memstack.local.processes import Launch, free_port, is_running, kill_pid, port_is_free, spawn, start_time

# A server that forks a child holding its listening socket, as Redis does for a background save.
FORKING_SERVER = """
import os, socket, sys, time
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", int(sys.argv[1]))); s.listen()
child = os.fork()
if child == 0:
    time.sleep(600)
with open(sys.argv[2], "w") as f:
    f.write(str(child))
time.sleep(600)
"""


def test_kill_takes_the_child_holding_the_port_with_it(tmp_path):
    port, child_file = free_port(), tmp_path / "child"
    proc = spawn(Launch(argv=[sys.executable, "-c", FORKING_SERVER, str(port), str(child_file)], log=tmp_path / "log"))
    deadline = time.monotonic() + 10
    while not child_file.exists() or not child_file.read_text():
        assert time.monotonic() < deadline and proc.poll() is None, (tmp_path / "log").read_text()
        time.sleep(0.02)
    child = int(child_file.read_text())
    assert not port_is_free(port)

    assert kill_pid(proc.pid, start_time(proc.pid)) is True
    assert port_is_free(port)  # at once: a restart on the same port must not trip on the child
    assert not is_running(child, None)  # dead; init may not have reaped it yet
    assert kill_pid(proc.pid, None) is False
