"""Fixtures for the Pulumi program tests: each stack file run once under mocks, in its own process."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from pulumi_runs import DEPLOY_INPUTS, REPO_ROOT, STACKS, Run, _finish, _program_runner, _start


@pytest.fixture(scope="session")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Run]:
    """The program run once per stack file, the runs in parallel processes."""
    directory = tmp_path_factory.mktemp("pulumi-runs")
    started = {
        stack: (
            _start(REPO_ROOT / f"Pulumi.{stack}.yaml", directory / f"{stack}.json", *DEPLOY_INPUTS[stack]),
            directory / f"{stack}.json",
        )
        for stack in STACKS
    }
    results = {stack: _finish(process, out) for stack, (process, out) in started.items()}
    for stack, run in results.items():
        assert run.error is None, f"stack {stack} failed: {run.error['traceback']}"
    return results


@pytest.fixture(params=STACKS)
def run(request: pytest.FixtureRequest, runs: dict[str, Run]) -> Run:
    return runs[request.param]


@pytest.fixture(scope="module")
def run_program_module(tmp_path_factory: pytest.TempPathFactory) -> Callable[..., Run]:
    """`run_program` for module-scoped fixtures."""
    return _program_runner(tmp_path_factory.mktemp("pulumi-module-runs"))


@pytest.fixture
def run_program(tmp_path: Path) -> Callable[..., Run]:
    """Run the program on a stack file with `memstack:key=value` overrides; errors are returned, not raised.

    The stack's deploy inputs (image, secrets) come first, so an override can replace them;
    `bare=True` leaves them out, as a stack file alone would be run.
    """

    return _program_runner(tmp_path)
