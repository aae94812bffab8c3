"""Memory service: RED per route group, the two SLOs with their budgets and burn rates, and
the resources behind them (in-flight requests, pools, replicas, CPU)."""

from __future__ import annotations

from memory_core import metrics as m

from . import external_metrics as x
from .lib import RATE, graph, instance_variable, new_dashboard, row, single
from .slo import AVAILABILITY, BUDGET_PERIOD, OBJECTIVES, WORKING_P99_SECONDS, WORKING_ROUTES

UID = "memstack-service"
SEL = 'instance=~"$instance"'
H = m.HTTP_REQUEST_DURATION
# The route group is the first path segment under /v1 (working, episodic, remember, ...).
GROUP = 'label_replace({inner}, "group", "$1", "route", "/v1/([^/]+).*")'


def _by_group(inner: str) -> str:
    return GROUP.format(inner=inner)


V1 = 'route=~"/v1/.*"'
COUNT_RATE = _by_group(f"rate({H}_count{{{SEL},{V1}}}[{RATE}])")
BUCKET_RATE = _by_group(f"rate({H}_bucket{{{SEL},{V1}}}[{RATE}])")


def build():
    board = new_dashboard(
        UID,
        "memstack / memory service",
        "Requests, errors and latency per route group against the SLOs; budgets, burn rates, capacity.",
    )
    board = board.with_variable(instance_variable(m.BUILD_INFO))
    board = board.with_row(row("Requests"))
    board = board.with_panel(
        graph(
            "Request rate by route group",
            "Requests per second, by the first path segment under /v1.",
            "reqps",
            (f"sum by (group) ({COUNT_RATE})", "{{group}}"),
        )
    )
    board = board.with_panel(
        graph(
            "Server errors (5xx ratio)",
            "Fraction of /v1 requests answered with a 5xx.",
            "percentunit",
            (
                f'(sum(rate({H}_count{{{SEL},route=~"/v1/.*",status=~"5.."}}[{RATE}])) or vector(0))'
                f' / sum(rate({H}_count{{{SEL},route=~"/v1/.*"}}[{RATE}]))',
                "5xx ratio",
            ),
            limit=AVAILABILITY.budget,
        )
    )
    for q in (0.5, 0.95, 0.99):
        board = board.with_panel(
            graph(
                f"Latency p{q * 100:g} by route group",
                f"{q:.0%} of requests of each group finish within this.",
                "s",
                (f"histogram_quantile({q}, sum by (le, group) ({BUCKET_RATE}))", "{{group}}"),
                width=8,
            )
        )
    board = board.with_row(row("Service-level objectives"))
    board = board.with_panel(
        graph(
            "Working-memory p99 against the SLO",
            f"p99 of /v1/working requests; the SLO is below {WORKING_P99_SECONDS * 1000:g} ms.",
            "s",
            (f"histogram_quantile(0.99, sum by (le) (rate({H}_bucket{{{SEL},{WORKING_ROUTES}}}[{RATE}])))", "p99"),
            limit=WORKING_P99_SECONDS,
        )
    )
    for objective in OBJECTIVES:
        board = board.with_panel(
            graph(
                f"Burn rate: {objective.label}",
                f"{objective.title}. How fast the error budget burns (1 = exactly the budget over the SLO period);"
                " the page threshold is 14.4.",
                "none",
                *[(f"{objective.record(w)} / {objective.budget}", f"{w} window") for w in ("5m", "1h", "6h", "3d")],
                limit=14.4,
                width=6,
            )
        )
    for objective in OBJECTIVES:
        board = board.with_panel(
            single(
                f"Error budget left ({BUDGET_PERIOD}): {objective.label}",
                f"{objective.title}. 1 = untouched, 0 = spent.",
                "percentunit",
                f"1 - ({objective.bad_ratio(BUDGET_PERIOD)}) / {objective.budget}",
                limit=None,
            )
        )
    board = board.with_row(row("Capacity"))
    board = board.with_panel(
        graph(
            "In-flight requests",
            "Requests being served, per instance.",
            "short",
            (f"sum by (instance) ({m.HTTP_REQUESTS_IN_FLIGHT}{{{SEL}}})", "{{instance}}"),
            width=8,
        )
    )
    board = board.with_panel(
        graph(
            "Connection pool usage",
            "Connections in use over the pool's maximum, per store and instance.",
            "percentunit",
            (
                f'sum by (store, instance) ({m.POOL_CONNECTIONS}{{{SEL},state="in_use"}})'
                f' / sum by (store, instance) ({m.POOL_CONNECTIONS}{{{SEL},state="max"}})',
                "{{store}} {{instance}}",
            ),
            limit=0.9,
            width=8,
        )
    )
    board = board.with_panel(
        graph(
            "CPU per pod",
            "CPU seconds per second of each memstack process (service and worker).",
            "short",
            (f"sum by (instance) (rate({m.PROCESS_CPU_SECONDS}{{{SEL}}}[{RATE}]))", "{{instance}}"),
            width=8,
        )
    )
    board = board.with_panel(
        graph(
            "Replicas (HPA)",
            "The memory service's autoscaler: current, desired and maximum replicas.",
            "short",
            (f"sum by (horizontalpodautoscaler) ({x.HPA_CURRENT_REPLICAS})", "current {{horizontalpodautoscaler}}"),
            (f"sum by (horizontalpodautoscaler) ({x.HPA_DESIRED_REPLICAS})", "desired {{horizontalpodautoscaler}}"),
            (f"sum by (horizontalpodautoscaler) ({x.HPA_MAX_REPLICAS})", "max {{horizontalpodautoscaler}}"),
        )
    )
    return board
