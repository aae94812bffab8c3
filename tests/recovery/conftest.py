"""A stack of its own for the recovery tests: they kill, wipe and rewind it, which the shared
session stack must never see. Every recovery test runs on each backend whose stores run here:
local processes, and containers (skipped, with the reason, where no Docker engine answers)."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

from memstack.errors import MemstackError
from memstack.images.build import IMAGES_ENV
from memstack.local.backend import CORE_SERVICES
from memstack.local.state import StackState, save
from memstack.recovery.stack import RECOVERABLE, LocalStack


@pytest.fixture(scope="module", params=RECOVERABLE)
def dr_stack(request) -> LocalStack:
    # mkdtemp makes a 0700 directory, which the Postgres system user cannot enter when the
    # tests run as root: the stack must work there all the same.
    home = Path(tempfile.mkdtemp(prefix=f"ms-dr-test-{request.param}-")).resolve()
    # Containers from the images built here (`memstack images build`) unless told otherwise:
    # the tests need no registry.
    save(home, StackState(backend=request.param, images=os.environ.get(IMAGES_ENV) or "local"))
    stack = LocalStack(home)
    try:
        try:
            stack.backend.up(CORE_SERVICES)
        except MemstackError as exc:
            if request.param == "containers" and "Docker engine" in str(exc):
                pytest.skip(str(exc))
            raise
        yield stack
    finally:
        try:
            if "backend" in stack.__dict__:
                stack.backend.down()
        finally:
            stack.remove()
