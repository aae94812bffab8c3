"""The stores: Redis and Postgres from their exporters (CloudNativePG's metrics on Kubernetes,
postgres_exporter locally: each Postgres query reads whichever is there), and Neo4j from our own
backend histograms (the service's operations, the worker's round trips), since Neo4j Community
has no Prometheus endpoint."""

from __future__ import annotations

from memory_core import metrics as m

from . import external_metrics as x
from .lib import RATE, graph, new_dashboard, row

UID = "memstack-stores"
B = m.BACKEND_OPERATION_DURATION


def _either(local: str, kubernetes: str) -> str:
    """The same fact from postgres_exporter or from CloudNativePG, whichever exports it."""
    return f"({local}) or ({kubernetes})"


def build():
    board = new_dashboard(UID, "memstack / stores", "Redis, Postgres and Neo4j as the memory stack sees them.")
    board = board.with_row(row("Redis"))
    board = board.with_panel(
        graph(
            "Redis memory against maxmemory",
            "Used memory and the limit; at the limit Redis refuses writes (noeviction).",
            "bytes",
            (f"max({x.REDIS_MEMORY_USED})", "used"),
            (f"max({x.REDIS_MEMORY_MAX})", "maxmemory"),
        )
    )
    board = board.with_panel(
        graph(
            "Redis commands per second",
            "Commands processed per second.",
            "ops",
            (f"sum(rate({x.REDIS_COMMANDS}[{RATE}]))", "commands/s"),
            width=6,
        )
    )
    board = board.with_panel(
        graph(
            "Redis connected clients", "Client connections.", "short", (f"sum({x.REDIS_CLIENTS})", "clients"), width=6
        )
    )
    board = board.with_panel(
        graph(
            "Redis AOF delayed fsyncs",
            "fsyncs of the append-only file that the disk delayed (cumulative since start).",
            "short",
            (f"max({x.REDIS_AOF_DELAYED_FSYNC})", "delayed fsyncs"),
            width=6,
        )
    )
    board = board.with_panel(
        graph(
            "Redis evictions",
            "Keys evicted per second; with noeviction it must stay 0.",
            "short",
            (f"sum(rate({x.REDIS_EVICTED_KEYS}[{RATE}]))", "evicted/s"),
            width=6,
        )
    )
    board = board.with_row(row("Postgres"))
    board = board.with_panel(
        graph(
            "Postgres connections",
            "Server backends (connections) of the application database.",
            "short",
            (_either(f"sum({x.PG_BACKENDS})", f"sum({x.CNPG_BACKENDS})"), "connections"),
            width=8,
        )
    )
    board = board.with_panel(
        graph(
            "Postgres transactions per second",
            "Commits and rollbacks per second.",
            "ops",
            (_either(f"sum(rate({x.PG_XACT_COMMIT}[{RATE}]))", f"sum(rate({x.CNPG_XACT_COMMIT}[{RATE}]))"), "commits"),
            (
                _either(f"sum(rate({x.PG_XACT_ROLLBACK}[{RATE}]))", f"sum(rate({x.CNPG_XACT_ROLLBACK}[{RATE}]))"),
                "rollbacks",
            ),
            width=8,
        )
    )
    board = board.with_panel(
        graph(
            "Postgres replication lag",
            "How far the replicas replay behind the primary (0 on a primary alone).",
            "s",
            (_either(f"max({x.PG_REPLICATION_LAG})", f"max({x.CNPG_REPLICATION_LAG})"), "lag"),
            width=8,
        )
    )
    board = board.with_panel(
        graph(
            "WAL archiving",
            "WAL segments archived and archive failures, per hour.",
            "short",
            (_either(f"sum(increase({x.PG_ARCHIVED}[1h]))", f"sum(increase({x.CNPG_ARCHIVED}[1h]))"), "archived"),
            (
                _either(f"sum(increase({x.PG_ARCHIVE_FAILED}[1h]))", f"sum(increase({x.CNPG_ARCHIVE_FAILED}[1h]))"),
                "failed",
            ),
            width=8,
        )
    )
    board = board.with_panel(
        graph(
            "Age of the last archived WAL",
            "Seconds since a WAL segment was last archived; alerts above 10 min.",
            "s",
            (_either(f"max({x.PG_LAST_ARCHIVE_AGE})", f"max({x.CNPG_LAST_ARCHIVE_AGE})"), "age"),
            limit=600,
            width=8,
        )
    )
    board = board.with_panel(
        graph(
            "Database size",
            "Bytes on disk per database.",
            "bytes",
            (
                _either(f"sum by (datname) ({x.PG_DATABASE_SIZE})", f"sum by (datname) ({x.CNPG_DATABASE_SIZE})"),
                "{{datname}}",
            ),
            width=8,
        )
    )
    board = board.with_row(row("Neo4j and every store, from the service"))
    board = board.with_panel(
        graph(
            "Neo4j operation latency p99",
            "p99 of operations on Neo4j by operation, as the service and the worker time them (`ping`: the worker's"
            " round trip at each scrape).",
            "s",
            (
                f'histogram_quantile(0.99, sum by (le, operation) (rate({B}_bucket{{store="neo4j"}}[{RATE}])))',
                "{{operation}}",
            ),
        )
    )
    board = board.with_panel(
        graph(
            "Neo4j operations per second by outcome",
            "Operations on Neo4j, ok or failed.",
            "ops",
            (f'sum by (outcome) (rate({B}_count{{store="neo4j"}}[{RATE}]))', "{{outcome}}"),
        )
    )
    board = board.with_panel(
        graph(
            "Store operation latency p99",
            "p99 of memory operations per store.",
            "s",
            (f"histogram_quantile(0.99, sum by (le, store) (rate({B}_bucket[{RATE}])))", "{{store}}"),
        )
    )
    board = board.with_panel(
        graph(
            "Stores up",
            "1 when the store answered: the worker's last check, and each exporter's.",
            "short",
            (f"min by (store) ({m.STORE_UP})", "{{store}} (worker)"),
            (f"min({x.REDIS_UP})", "redis (exporter)"),
            (f"min({x.PG_UP})", "postgres (exporter)"),
        )
    )
    return board
