"""A stack of its own for the recovery tests: they kill, wipe and rewind it, which the shared
session stack must never see."""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest

from memstack.local.backend import CORE_SERVICES
from memstack.recovery.stack import LocalStack


@pytest.fixture(scope="module")
def dr_stack() -> LocalStack:
    # mkdtemp makes a 0700 directory, which the Postgres system user cannot enter when the
    # tests run as root: the stack must work there all the same.
    stack = LocalStack(Path(tempfile.mkdtemp(prefix="ms-dr-test-")).resolve())
    try:
        stack.backend.up(CORE_SERVICES)
        yield stack
    finally:
        try:
            stack.backend.down()
        finally:
            stack.remove()
