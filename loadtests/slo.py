"""The SLO gate over Locust's statistics, as plain functions (no Locust import, so tests can
use it without gevent monkey-patching their process).

An entry is a mapping with `name`, `num_requests`, `num_failures`, `max_response_time` and
`response_times` (Locust's histogram: rounded milliseconds -> count)."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Mapping

WORKING = "working"
# The route group of sends the generator gave up on: a user that fell more than its backlog
# behind schedule skips the missed sends, and each one counts as a failed request.
DROPPED = "dropped"
DROPPED_NAME = f"{DROPPED} behind schedule"
# The generator must deliver this share of the offered rate, or the run measured a smaller load.
MIN_ACHIEVED_SHARE = 0.95
# Poisson arrivals: over a short window at a low rate, the count sent falls this many standard
# deviations (sqrt of the expected count) below the expectation by chance alone now and then
# (3: about 1 run in 700), so a shortfall within that is not held against the generator.
CHANCE_SIGMAS = 3.0


def min_sent(offered_rps: float, duration_s: float) -> float:
    """The fewest requests a run offered `offered_rps` for `duration_s` must send."""
    expected = offered_rps * duration_s
    return min(MIN_ACHIEVED_SHARE * expected, expected - CHANCE_SIGMAS * math.sqrt(expected))


def group_of(name: str) -> str:
    """Request names start with their route group: `working:read GET context/{key}`."""
    return name.split(" ", 1)[0]


def percentile(response_times: Mapping[int, int], q: float) -> float | None:
    """Locust's own definition (locust.stats.calculate_response_time_percentile), so the numbers
    match its CSV: walking down from the slowest, the first time at which at most `q` of the
    requests remain."""
    total = sum(response_times.values())
    if not total:
        return None
    allowed = int(total * q)
    processed = 0
    for value in sorted(response_times, reverse=True):
        processed += response_times[value]
        if total - processed <= allowed:
            return float(value)
    return float(min(response_times))


def _merge(entries: list[Mapping]) -> dict:
    times: Counter = Counter()
    for entry in entries:
        times.update(entry["response_times"])
    return {
        "num_requests": sum(e["num_requests"] for e in entries),
        "num_failures": sum(e["num_failures"] for e in entries),
        "response_times": times,
        "max_response_time": max((e["max_response_time"] or 0 for e in entries), default=0),
    }


def _row(entry: Mapping, duration_s: float) -> dict:
    n = entry["num_requests"]
    return {
        "requests": n,
        "failures": entry["num_failures"],
        "rps": n / duration_s if duration_s > 0 else 0.0,
        "p50_ms": percentile(entry["response_times"], 0.50),
        "p95_ms": percentile(entry["response_times"], 0.95),
        "p99_ms": percentile(entry["response_times"], 0.99),
        "max_ms": entry["max_response_time"] if n else None,
    }


def summarize(
    entries: Iterable[Mapping],
    duration_s: float,
    wm_p99_ms: float,
    max_failure_ratio: float,
    send_lag: Mapping[int, int] | None = None,
    offered_rps: float = 0.0,
) -> dict:
    """Per route group, all working-memory requests merged, the total, and the gate verdict.

    `send_lag` is a histogram (rounded ms -> count) of how late each request left against the
    generator's schedule. A Locust user has one request in flight: while the service is slow,
    the user's next requests wait in the generator, where no response time sees them
    (coordinated omission), and a saturated service would pass the latency gate. So the gate
    also fails when the p99 send lag reaches the latency threshold: an agent whose request
    waited that long has already missed the SLO. It fails too when fewer than 95 % of the
    offered requests were sent, beyond Poisson chance (`min_sent`); sends skipped by users
    that fell behind (the `dropped` group) are failures, not nothing."""
    entries = list(entries)
    groups: dict[str, list] = {}
    for entry in entries:
        groups.setdefault(group_of(entry["name"]), []).append(entry)
    working = _merge([e for e in entries if group_of(e["name"]).startswith(WORKING)])
    total = _merge(entries)
    failure_ratio = total["num_failures"] / total["num_requests"] if total["num_requests"] else 1.0
    working_row = _row(working, duration_s)
    sent = total["num_requests"] - sum(e["num_requests"] for e in groups.get(DROPPED, []))
    achieved_rps = sent / duration_s if duration_s > 0 else 0.0
    violations = []
    if not working["num_requests"]:
        violations.append("no working-memory requests were made")
    elif working_row["p99_ms"] >= wm_p99_ms:
        violations.append(f"working-memory p99 {working_row['p99_ms']:.1f} ms >= {wm_p99_ms:g} ms")
    if failure_ratio > max_failure_ratio:
        violations.append(f"failure ratio {failure_ratio:.4%} > {max_failure_ratio:.4%}")
    lag_p99 = percentile(send_lag, 0.99) if send_lag else None
    if lag_p99 is not None and lag_p99 >= wm_p99_ms:
        violations.append(
            f"requests left {lag_p99:.0f} ms behind schedule at p99 (>= {wm_p99_ms:g} ms): the "
            f"service, or the load generator, did not keep up with {offered_rps:g} req/s"
        )
    if offered_rps > 0 and sent < min_sent(offered_rps, duration_s):
        violations.append(
            f"achieved {achieved_rps:.0f} req/s < {MIN_ACHIEVED_SHARE:.0%} of the offered {offered_rps:g} req/s"
        )
    return {
        "duration_s": duration_s,
        "slo": {"working_p99_ms": wm_p99_ms, "max_failure_ratio": max_failure_ratio},
        "total": {**_row(total, duration_s), "failure_ratio": failure_ratio},
        "working": working_row,
        "generator": {
            "offered_rps": offered_rps,
            "achieved_rps": achieved_rps,
            "send_lag_p50_ms": percentile(send_lag, 0.50) if send_lag else None,
            "send_lag_p99_ms": lag_p99,
        },
        "groups": {name: _row(_merge(members), duration_s) for name, members in sorted(groups.items())},
        "violations": violations,
        "passed": not violations,
    }
