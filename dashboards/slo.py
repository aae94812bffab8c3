"""The two service-level objectives, their error-rate expressions over any window, and the
names of the recording rules that hold them. Alerts and dashboards both read these."""

from __future__ import annotations

from dataclasses import dataclass

from memory_core import metrics

# Multiwindow, multi-burn-rate alerting (Google SRE workbook, chapter 5): each condition is a
# burn rate that must hold over a long window and a short one (1/12 of it), so an alert fires
# fast on a big burn and stops soon after the burn does.
WINDOWS = ("5m", "30m", "1h", "2h", "6h", "1d", "3d")
PAGE_CONDITIONS = ((14.4, "1h", "5m"), (6.0, "6h", "30m"))
TICKET_CONDITIONS = ((3.0, "1d", "2h"), (1.0, "3d", "6h"))
# The budget the dashboards count down: 30 days, the usual SLO period.
BUDGET_PERIOD = "30d"

WORKING_ROUTES = 'route=~"/v1/working/.*"'
API_ROUTES = 'route=~"/v1/.*"'
# The working-memory SLO threshold (p99 below it) and the load gate's: the same 10 ms. It must
# be a bucket bound of the latency histogram, or the ratio below could not be read off it.
WORKING_P99_SECONDS = 0.010
assert WORKING_P99_SECONDS in metrics.LATENCY_BUCKETS


@dataclass(frozen=True)
class Objective:
    name: str  # recording rules: memstack:<name>:ratio_rate<window>
    alert: str  # alert name prefix
    title: str
    label: str
    target: float  # fraction of requests that must be good

    @property
    def budget(self) -> float:
        return round(1 - self.target, 6)

    def record(self, window: str) -> str:
        return f"memstack:{self.name}:ratio_rate{window}"

    def bad_ratio(self, window: str) -> str:
        """PromQL: the fraction of bad requests over `window`, from the raw histogram."""
        h = metrics.HTTP_REQUEST_DURATION
        if self.name == "working_latency_slow":
            return (
                f'1 - sum(rate({h}_bucket{{{WORKING_ROUTES},le="{WORKING_P99_SECONDS:g}"}}[{window}]))'
                f" / sum(rate({h}_count{{{WORKING_ROUTES}}}[{window}]))"
            )
        # No 5xx at all is a ratio of 0, not an absent series.
        return (
            f'(sum(rate({h}_count{{{API_ROUTES},status=~"5.."}}[{window}])) or vector(0))'
            f" / sum(rate({h}_count{{{API_ROUTES}}}[{window}]))"
        )


WORKING_LATENCY = Objective(
    "working_latency_slow",
    "WorkingMemoryLatencyBudgetBurn",
    "Working-memory latency: 99% of requests under 10 ms",
    "working-memory latency",
    0.99,
)
AVAILABILITY = Objective(
    "request_errors",
    "AvailabilityBudgetBurn",
    "Availability: 99.9% of /v1 requests without a 5xx",
    "availability",
    0.999,
)
OBJECTIVES = (WORKING_LATENCY, AVAILABILITY)
