"""`memstack load` refuses a run time it cannot keep and a rate or warm-up that is not a number,
in one line, before a stack, a service or Locust starts."""

from __future__ import annotations

import pytest
from test_cli_errors import assert_one_line_error, run


@pytest.mark.parametrize(
    "option, value, words",
    [
        ("--duration", "99999999999h", "must be at most 7 days"),
        ("--duration", "169h", "must be at most 7 days"),
        ("--rate", "nan", "must be a finite number"),
        ("--warmup", "nan", "must be a finite number"),
        ("--rate", "-1", "must be 0 or more"),
        ("--rate", "1e308", "must be at most 1e+06"),
        ("--warmup", "1e308", "must be at most 604800"),
        ("--users", "1000000000", "must be at most 100000"),
    ],
)
def test_load_refuses_up_front(tmp_path, option, value, words):
    assert_one_line_error(run(tmp_path, "load", option, value), option, words)
    assert not (tmp_path / "state.json").exists()  # no stack was started for it


@pytest.mark.parametrize(
    "option, value, words",
    [("--rate", "1e308", "must be at most 1e+06"), ("--users", "1000000000", "must be at most 100000")],
)
def test_demo_refuses_up_front(tmp_path, option, value, words):
    assert_one_line_error(run(tmp_path, "demo", option, value), option, words)
    assert not (tmp_path / "state.json").exists()


@pytest.mark.parametrize(
    "args, option, words",
    [
        (("--steps", "1,2,1e308", "--step-by", "rate"), "--steps", "must be at most 1e+06"),
        (("--steps", "1,2,1e308"), "--steps", "must be at most 100000"),
        (("--step-s", "1e308"), "--step-s", "must be at most 604800"),
    ],
)
def test_capacity_measure_refuses_unbounded_steps_up_front(tmp_path, args, option, words):
    assert_one_line_error(run(tmp_path, "capacity", "measure", *args), option, words)
    assert not (tmp_path / "state.json").exists()
