"""`memstack bench service --py-spy`: a bench that is interrupted (Ctrl-C, SIGTERM) stops its
py-spy recorders at once, which write what they recorded, instead of leaving them recording a
process for the rest of their duration."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from memstack import bench
from memstack.errors import MemstackError

sys.path.insert(0, str(bench.BENCHMARKS))
import service_efficiency


def test_an_interrupted_run_stops_its_recorder(tmp_path: Path):
    try:
        service_efficiency.py_spy_binary()
    except MemstackError:
        pytest.skip("py-spy is not installed")
    target = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)"])
    watchdog: threading.Timer | None = None
    try:
        with pytest.raises(KeyboardInterrupt):
            with service_efficiency.py_spy(target.pid, tmp_path / "profile.txt", 600) as start:
                recorder = start()
                assert recorder is not None
                # Without the stop, leaving the block waits for the 600 s recording; the
                # watchdog ends it sooner, and its SIGKILL is what the assertion then sees.
                watchdog = threading.Timer(30, recorder.kill)
                watchdog.start()
                _wait_until_sampling(tmp_path / "profile.log")
                raise KeyboardInterrupt
        assert recorder.returncode == 0, "the recorder was not stopped: the watchdog killed it"
        assert (tmp_path / "profile.txt").exists()
        # A recorder asked for after the block is not started.
        assert start() is None
    finally:
        if watchdog is not None:
            watchdog.cancel()
        target.kill()
        target.wait()


def _wait_until_sampling(log: Path, timeout_s: float = 20.0) -> None:
    """As in a bench, interrupted once py-spy is recording (it handles Ctrl-C from then on)."""
    deadline = time.monotonic() + timeout_s
    while "Sampling process" not in (log.read_text() if log.exists() else ""):
        assert time.monotonic() < deadline, "py-spy did not start sampling"
        time.sleep(0.05)
