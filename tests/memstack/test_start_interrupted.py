"""A SIGTERM at any moment of starting a service leaves it either recorded or stopped."""

from __future__ import annotations

import os
import signal
import time

import pytest

from memstack import cli
from memstack.local import process
from memstack.local.process import ProcessBackend
from memstack.local.processes import is_running, signals_deferred
from memstack.local.redis_server import RedisServer
from memstack.local.state import load


@pytest.fixture
def cli_sigterm_handler():
    previous = signal.signal(signal.SIGTERM, cli._exit_on_sigterm)
    yield
    signal.signal(signal.SIGTERM, previous)


def test_a_sigterm_inside_signals_deferred_acts_when_the_block_ends(cli_sigterm_handler):
    finished = False
    with pytest.raises(SystemExit) as exc:
        with signals_deferred():
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(0.2)  # the handler would have run by now
            finished = True
    assert finished
    assert exc.value.code == 128 + signal.SIGTERM
    assert signal.getsignal(signal.SIGTERM) is cli._exit_on_sigterm


def test_a_sigterm_while_a_ready_service_is_set_up_stops_it(tmp_path, monkeypatch, cli_sigterm_handler):
    """Postgres's roles are created after it answers and before it is recorded as running: a
    SIGTERM then used to leave it running with no record for `down` to find."""
    home = tmp_path / "home"
    seen: dict = {}

    class RedisTermedDuringSetup(RedisServer):
        def after_ready(self, port: int) -> None:
            state = load(home)
            assert state is not None
            seen.update(state.starting["redis"].model_dump())
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(5)

    monkeypatch.setitem(process.SERVICE_TYPES, "redis", RedisTermedDuringSetup)
    with pytest.raises(SystemExit):
        ProcessBackend(home).up(("redis",))
    assert seen["pid"]
    assert not is_running(seen["pid"], seen["started"])
    state = load(home)
    assert state is not None
    assert "redis" not in state.services and state.starting == {}
