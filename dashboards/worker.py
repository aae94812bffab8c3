"""The consolidation worker and the data flow: the reflection stream, the graph outbox, dead
letters, job durations, and the age of the last backup."""

from __future__ import annotations

from memory_core import metrics as m

from . import external_metrics as x
from .lib import RATE, graph, new_dashboard, row
from .rules import BACKUP_MAX_AGE_S, OUTBOX_LAG_LIMIT_S

UID = "memstack-worker"
J = m.WORKER_JOB_DURATION


def build():
    board = new_dashboard(
        UID, "memstack / worker and data flow", "Queues and lag between the stores, the worker's jobs, and backups."
    )
    board = board.with_row(row("Queues"))
    board = board.with_panel(
        graph(
            "Reflection stream depth",
            "Entries in the reflection job stream, and jobs delivered but not acknowledged.",
            "short",
            (f"max({m.REFLECTION_STREAM_LENGTH})", "stream entries"),
            (f"max({m.REFLECTION_PENDING})", "pending (delivered, not acked)"),
            width=8,
        )
    )
    board = board.with_panel(
        graph(
            "Outbox lag",
            "Age of the oldest outbox row not yet projected to Neo4j; alerts above the red line.",
            "s",
            (f"max({m.OUTBOX_OLDEST_AGE})", "oldest unprojected row"),
            limit=OUTBOX_LAG_LIMIT_S,
            width=8,
        )
    )
    board = board.with_panel(
        graph(
            "Graph projection lag p99 by path",
            "From a durable write to its Neo4j projection: inline (in the request), background (the "
            "service, after answering) or worker (outbox replay). Rows still waiting are in Outbox lag.",
            "s",
            (
                f"histogram_quantile(0.99, sum by (le, path) (rate({m.GRAPH_PROJECTION_LAG}_bucket[{RATE}])))",
                "{{path}}",
            ),
            width=8,
        )
    )
    board = board.with_panel(
        graph(
            "Outbox rows",
            "Rows waiting to be projected, and rows out of attempts.",
            "short",
            (f"max by (state) ({m.OUTBOX_ROWS})", "{{state}}"),
            width=8,
        )
    )
    board = board.with_panel(
        graph(
            "Dead letters",
            "Reflection jobs moved to the dead-letter stream after too many deliveries.",
            "short",
            (f"max({m.REFLECTION_DEAD_LETTERS})", "dead letters"),
        )
    )
    board = board.with_row(row("Jobs"))
    board = board.with_panel(
        graph(
            "Job duration p95 by task",
            "95% of each task's runs finish within this.",
            "s",
            (f"histogram_quantile(0.95, sum by (le, task) (rate({J}_bucket[{RATE}])))", "{{task}}"),
        )
    )
    board = board.with_panel(
        graph(
            "Job runs per second by task and outcome",
            "How often each task runs, and fails.",
            "ops",
            (f"sum by (task, outcome) (rate({J}_count[{RATE}]))", "{{task}} {{outcome}}"),
        )
    )
    board = board.with_row(row("Backups"))
    board = board.with_panel(
        graph(
            "Age of the last successful backup",
            "Since the last base backup of Postgres became available; alerts above the red line.",
            "s",
            (f"time() - max({x.BACKUP_LAST_AVAILABLE})", "age"),
            limit=BACKUP_MAX_AGE_S,
        )
    )
    return board
