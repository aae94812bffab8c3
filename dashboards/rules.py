"""Prometheus recording and alerting rules, one rule file per concern under dashboards/alerts/.

Labels: `severity` is `page` (someone acts now) or `ticket` (within working hours); the
Alertmanager routes on it. Every alert's `runbook_url` points at its section of docs/alerts.md.
"""

from __future__ import annotations

import re

from memory_core import metrics as m

from . import external_metrics as x
from .slo import OBJECTIVES, PAGE_CONDITIONS, TICKET_CONDITIONS, WINDOWS, Objective

RUNBOOKS = "docs/alerts.md"
OUTBOX_LAG_LIMIT_S = 60
REDIS_MEMORY_LIMIT = 0.9
WAL_ARCHIVE_MAX_AGE_S = 600
# Postgres base backups run daily (postgres.backup.schedule); two hours of margin for a slow one.
BACKUP_MAX_AGE_S = 26 * 3600
DISK_FULL_HORIZON_S = 4 * 24 * 3600
HPA_AT_MAX_FOR = "15m"


def anchor(alert: str) -> str:
    """The section anchor a Markdown renderer gives a `## <alert>` heading."""
    return re.sub(r"[^a-z0-9-]", "", alert.lower())


def alert(name: str, expr: str, severity: str, summary: str, description: str, for_: str | None = None) -> dict:
    rule: dict = {"alert": name, "expr": expr}
    if for_:
        rule["for"] = for_
    rule["labels"] = {"severity": severity}
    rule["annotations"] = {
        "summary": summary,
        "description": description,
        "runbook_url": f"{RUNBOOKS}#{anchor(name)}",
    }
    return rule


def _burn(objective: Objective, conditions) -> str:
    return " or ".join(
        f"({objective.record(long)} > ({factor:g} * {objective.budget:g})"
        f" and {objective.record(short)} > ({factor:g} * {objective.budget:g}))"
        for factor, long, short in conditions
    )


def slo_rules() -> dict:
    records = [{"record": o.record(w), "expr": o.bad_ratio(w)} for o in OBJECTIVES for w in WINDOWS]
    alerts = []
    for o in OBJECTIVES:
        alerts.append(
            alert(
                f"{o.alert}Fast",
                _burn(o, PAGE_CONDITIONS),
                "page",
                f"{o.label}: the error budget burns fast",
                f"{o.title}. At this rate the 30-day budget is gone within days "
                "(14.4x over 1 h and 5 min, or 6x over 6 h and 30 min).",
            )
        )
        alerts.append(
            alert(
                f"{o.alert}Slow",
                _burn(o, TICKET_CONDITIONS),
                "ticket",
                f"{o.label}: the error budget burns faster than it refills",
                f"{o.title}. At this rate the budget runs out before the 30 days do "
                "(3x over 1 d and 2 h, or 1x over 3 d and 6 h).",
            )
        )
    # One group: its rules run in order, so each alert reads the ratios recorded in the same
    # evaluation, never ones an interval old.
    return {"groups": [{"name": "memstack-slo", "rules": records + alerts}]}


def store_rules() -> dict:
    return {
        "groups": [
            {
                "name": "memstack-stores",
                "rules": [
                    alert(
                        "MemstackStoreDown",
                        f"min by (store) ({m.STORE_UP}) == 0",
                        "page",
                        "{{ $labels.store }} does not answer the worker",
                        "The worker's check of {{ $labels.store }} has failed for 2 minutes.",
                        "2m",
                    ),
                    alert(
                        "RedisMemoryNearMax",
                        f"max({x.REDIS_MEMORY_USED}) / max({x.REDIS_MEMORY_MAX} > 0) > {REDIS_MEMORY_LIMIT:g}",
                        "page",
                        "Redis uses over 90% of maxmemory",
                        "With noeviction, a full Redis refuses every write to working memory.",
                        "5m",
                    ),
                    alert(
                        "PostgresWALArchivingFailing",
                        f"(increase({x.PG_ARCHIVE_FAILED}[15m]) or increase({x.CNPG_ARCHIVE_FAILED}[15m])) > 0",
                        "page",
                        "Postgres fails to archive WAL",
                        "Archive attempts failed in the last 15 minutes: point-in-time recovery loses data past the last archived segment.",
                    ),
                    alert(
                        "PostgresWALArchiveStale",
                        f"({x.PG_LAST_ARCHIVE_AGE} or {x.CNPG_LAST_ARCHIVE_AGE}) > {WAL_ARCHIVE_MAX_AGE_S}",
                        "page",
                        "The last archived WAL is older than 10 minutes",
                        "Nothing reached the WAL archive of {{ $labels.instance }} for 10 minutes: the recovery point falls behind.",
                        "5m",
                    ),
                ],
            }
        ]
    }


def worker_rules() -> dict:
    return {
        "groups": [
            {
                "name": "memstack-worker",
                "rules": [
                    alert(
                        "OutboxLagHigh",
                        f"max({m.OUTBOX_OLDEST_AGE}) > {OUTBOX_LAG_LIMIT_S}",
                        "ticket",
                        "The graph is more than a minute behind Postgres",
                        "The oldest outbox row not yet projected to Neo4j has waited for over a minute, for 5 minutes.",
                        "5m",
                    ),
                    alert(
                        "DeadLettersGrowing",
                        f"delta(max({m.REFLECTION_DEAD_LETTERS})[30m:]) > 0",
                        "ticket",
                        "Reflection jobs are being dead-lettered",
                        "Jobs failed on every delivery and went to the dead-letter stream in the last 30 minutes.",
                    ),
                    alert(
                        "BackupTooOld",
                        f"time() - max({x.BACKUP_LAST_AVAILABLE}) > {BACKUP_MAX_AGE_S}",
                        "page",
                        "The last Postgres backup is older than its schedule allows",
                        "The last available base backup is older than the daily schedule plus 2 hours.",
                    ),
                ],
            }
        ]
    }


def platform_rules() -> dict:
    return {
        "groups": [
            {
                "name": "memstack-platform",
                "rules": [
                    alert(
                        "DiskFullIn4Days",
                        f"predict_linear({x.VOLUME_AVAILABLE}[6h], {DISK_FULL_HORIZON_S}) < 0"
                        f" and {x.VOLUME_AVAILABLE} / {x.VOLUME_CAPACITY} < 0.5",
                        "ticket",
                        "Volume {{ $labels.persistentvolumeclaim }} fills up within 4 days",
                        "At the last 6 hours' rate, {{ $labels.namespace }}/{{ $labels.persistentvolumeclaim }} is full within 4 days.",
                        "30m",
                    ),
                    alert(
                        "HPAAtMaxReplicas",
                        f"{x.HPA_CURRENT_REPLICAS} >= on (namespace, horizontalpodautoscaler) {x.HPA_MAX_REPLICAS}",
                        "ticket",
                        "{{ $labels.horizontalpodautoscaler }} runs at its maximum replicas",
                        "The autoscaler cannot add pods: the load is above what was planned.",
                        HPA_AT_MAX_FOR,
                    ),
                ],
            }
        ]
    }


RULE_FILES = {"slo": slo_rules, "stores": store_rules, "worker": worker_rules, "platform": platform_rules}
