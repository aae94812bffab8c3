"""Small builders over grafana-foundation-sdk, so each dashboard module reads as a list of panels."""

from __future__ import annotations

import json

from grafana_foundation_sdk.builders import common, dashboard, prometheus, stat, timeseries
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models.common import GraphThresholdsStyleMode
from grafana_foundation_sdk.models.dashboard import DataSourceRef, Threshold, ThresholdsMode

DATASOURCE = DataSourceRef(type_val="prometheus", uid="${datasource}")
RATE = "$__rate_interval"
WIDTH = 12
HEIGHT = 8


def query(expr: str, legend: str = "", ref: str = "A") -> prometheus.Dataquery:
    q = prometheus.Dataquery().expr(expr).ref_id(ref).datasource(DATASOURCE)
    return q.legend_format(legend) if legend else q


def _thresholds(limit: float | None):
    steps = [Threshold(color="green", value=None)]
    if limit is not None:
        steps.append(Threshold(color="red", value=limit))
    return dashboard.ThresholdsConfig().mode(ThresholdsMode.ABSOLUTE).steps(steps)


def graph(
    title: str, description: str, unit: str, *targets: tuple[str, str], limit: float | None = None, width: int = WIDTH
) -> timeseries.Panel:
    """A time series panel; `limit` draws the threshold (an SLO, an alert level) as a red line."""
    panel = (
        timeseries.Panel()
        .title(title)
        .description(description)
        .unit(unit)
        .datasource(DATASOURCE)
        .height(HEIGHT)
        .span(width)
        .thresholds(_thresholds(limit))
    )
    if limit is not None:
        panel = panel.thresholds_style(common.GraphThresholdsStyleConfig().mode(GraphThresholdsStyleMode.LINE))
    for i, (expr, legend) in enumerate(targets):
        panel = panel.with_target(query(expr, legend, chr(ord("A") + i)))
    return panel


def single(
    title: str, description: str, unit: str, expr: str, *, limit: float | None = None, width: int = 6
) -> stat.Panel:
    """A stat panel showing the last value of one expression."""
    return (
        stat.Panel()
        .title(title)
        .description(description)
        .unit(unit)
        .datasource(DATASOURCE)
        .height(HEIGHT // 2)
        .span(width)
        .thresholds(_thresholds(limit))
        .with_target(query(expr))
    )


def new_dashboard(uid: str, title: str, description: str) -> dashboard.Dashboard:
    return (
        dashboard.Dashboard(title)
        .uid(uid)
        .description(description)
        .tags(["memstack"])
        .refresh("30s")
        .time("now-1h", "now")
        .timezone("utc")
        .with_variable(dashboard.DatasourceVariable("datasource").label("Data source").type("prometheus"))
    )


def instance_variable(metric: str) -> dashboard.QueryVariable:
    """`$instance`: one process or all of them (`.*`)."""
    return (
        dashboard.QueryVariable("instance")
        .label("Instance")
        .datasource(DATASOURCE)
        .query(f"label_values({metric}, instance)")
        .include_all(True)
        .all_value(".*")
        .multi(True)
    )


def render(board: dashboard.Dashboard) -> str:
    return json.dumps(board.build(), cls=JSONEncoder, indent=2, sort_keys=True) + "\n"


def row(title: str) -> dashboard.Row:
    return dashboard.Row(title)
