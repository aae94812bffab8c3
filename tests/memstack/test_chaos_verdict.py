"""`memstack chaos` judges its run by the chaos suite's bounds (one function for both), takes the
images the stack was made with, and refuses a fault duration that is not a number."""

from __future__ import annotations

import pytest
from test_cli_errors import assert_one_line_error, run

from memstack.chaos.faults import Window
from memstack.chaos.run import ChaosResult, judge, measure
from memstack.images.build import IMAGES_ENV, stack_image_source
from memstack.local.state import StackState, save


def _result(**changes) -> ChaosResult:
    """A run that keeps every bound: a Redis kill, recovered in 1 s, p99 back under 10 ms."""
    values = {
        "fault": "redis-kill",
        "profile": "working",
        "duration_s": 0.0,
        "window": Window(start=100.0, end=101.0),
        "failed": 12,
        "statuses": {503: 12},
        "recovery_s": 1.0,
        "wm_p99_before_ms": 4.0,
        "wm_p99_after_ms": 6.0,
        "lost": {"postgres": 0, "neo4j": 0, "redis": 3},
        "acknowledged": {"postgres": 300, "neo4j": 300, "redis": 300},
        "redis_lost_span_s": 0.5,
    }
    return ChaosResult(**{**values, **changes})


def test_a_run_within_the_bounds_passes():
    assert judge(_result(), "everysec") == []


@pytest.mark.parametrize(
    "changes, words",
    [
        # The review's run: 33 ms before the fault gives a 49.5 ms bound; 82.1 ms after breaks it.
        ({"wm_p99_before_ms": 33.0, "wm_p99_after_ms": 82.1}, "p99 after recovery 82.1 ms, bound 49.5 ms"),
        ({"failures_not_naming_store": 2, "statuses": {500: 2, 503: 10}}, "2 failed requests were not a 503"),
        ({"recovery_s": None}, "recovery None s"),
        ({"lost": {"postgres": 1, "neo4j": 0, "redis": 0}}, "1 acknowledged postgres writes lost"),
        ({"redis_lost_span_s": 5.0}, "lost over 5.00 s"),
        ({"fault": "postgres-kill", "lost": {"postgres": 0, "neo4j": 0, "redis": 2}}, "2 acknowledged redis writes"),
        ({"fault": "postgres-pause", "lost": {"postgres": 0, "neo4j": 0, "redis": 0}}, "during the pause None s"),
    ],
)
def test_each_broken_bound_is_named(changes, words):
    violations = judge(_result(**changes), "everysec")
    assert len(violations) == 1 and words in violations[0], violations
    assert _result(**changes, violations=violations).row()["passed"] is False


def test_the_stack_s_recorded_images_unless_the_environment_names_them(tmp_path, monkeypatch):
    monkeypatch.delenv(IMAGES_ENV, raising=False)
    assert stack_image_source(tmp_path) == "official"  # no stack in the home
    save(tmp_path, StackState(backend="containers", images="local"))
    assert stack_image_source(tmp_path) == "local"
    monkeypatch.setenv(IMAGES_ENV, "official")
    assert stack_image_source(tmp_path) == "official"


@pytest.mark.parametrize(
    "args, words",
    [
        (["--duration", "nan"], "--duration must be a number of seconds from 0 to 120"),
        (["--duration", "inf"], "--duration must be a number of seconds from 0 to 120"),
        (["--duration", "-1"], "--duration must be a number of seconds from 0 to 120"),
        (["--rate", "nan"], "--rate must be a finite number"),
        (["--rate", "0.5"], "--rate must be 1 or more"),
    ],
)
def test_chaos_refuses_options_out_of_range_before_anything_starts(tmp_path, args, words):
    assert_one_line_error(run(tmp_path, "chaos", "--fault", "redis-kill", *args), words)
    assert not any(tmp_path.iterdir())  # no stack, no results directory


def _requests(latency_ms, start: float, end: float, rate: float = 100.0) -> list:
    """Working-memory requests sent at `rate` from `start` to `end`, as the request log holds
    them, each answered in `latency_ms(sent at)`."""
    count = int((end - start) * rate)
    return [
        (start + i / rate, "working:read GET context/{key}", 200, latency_ms(start + i / rate), False, "")
        for i in range(count)
    ]


def _measured(after_ms) -> ChaosResult:
    """A Redis pause from t=100 to t=102, 20 s of 2 ms answers before it, then 30 s after it
    answered in `after_ms(seconds since recovery)`."""
    result = _result(fault="redis-pause", failed=0, statuses={}, recovery_s=None)
    result.window = Window(start=100.0, end=102.0)
    log = _requests(lambda t: 2.0, 80.0, 100.0) + _requests(lambda t: after_ms(t - 102.0), 102.0, 132.0)
    measure(result, log, "redis", before_s=20.0)
    return result


def test_a_few_seconds_of_noise_after_recovery_do_not_fail_the_run():
    # Two seconds at 40 ms: 200 of 3,000 requests, far past the plain p99 over the window.
    result = _measured(lambda t: 40.0 if 12.0 <= t < 14.0 else 2.0)
    assert result.wm_p99_after_whole_ms == 40.0
    assert result.wm_p99_after_slices_ms == [2.0, 2.0, 40.0, 2.0, 2.0, 2.0]
    assert result.wm_p99_before_ms == 2.0 and result.wm_p99_after_ms == 2.0
    assert judge(result, "everysec") == []


def test_a_service_slow_for_half_the_window_after_recovery_fails_the_run():
    result = _measured(lambda t: 40.0 if t < 15.0 else 2.0)
    assert result.wm_p99_after_slices_ms == [40.0, 40.0, 40.0, 2.0, 2.0, 2.0]
    assert result.wm_p99_after_ms == 21.0
    violations = judge(result, "everysec")
    assert violations == ["working-memory p99 after recovery 21.0 ms, bound 10.0 ms"]
