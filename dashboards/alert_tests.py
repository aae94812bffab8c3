"""promtool unit tests of every alert, generated next to the rules (dashboards/alerts/tests/):
for each alert, input series where it fires and series where it does not. The burn-rate
series sit on both sides of each threshold (14.4x, 6x, 3x, 1x of the error budget).

Generated rather than written by hand so that expected labels and annotations are the rules'
own, and metric names come from the same modules as the rules."""

from __future__ import annotations

import re

from memory_core import metrics as m

from . import external_metrics as x
from .rules import BACKUP_MAX_AGE_S, RULE_FILES
from .slo import OBJECTIVES, WORKING_LATENCY, WORKING_P99_SECONDS, Objective

H = m.HTTP_REQUEST_DURATION
WORKING_ROUTE = "/v1/working/{user_id}/{conversation_id}/context/{key}"
OTHER_ROUTE = "/v1/episodic/{user_id}/{conversation_id}/turns"
REQUESTS_PER_STEP = 1000


def counter(*phases: tuple[int, float]) -> str:
    """promtool's expanding notation for a counter that grows by `inc` per step for `n` steps, per phase."""
    parts, value = [], 0.0
    for i, (steps, inc) in enumerate(phases):
        if i == 0:
            parts.append(f"{value:g}+{inc:g}x{steps}")
            value += inc * steps
        else:
            value += inc
            parts.append(f"{value:g}+{inc:g}x{steps - 1}")
            value += inc * (steps - 1)
    return " ".join(parts)


def slo_series(objective: Objective, *phases: tuple[int, float]) -> list[dict]:
    """Requests at a steady rate, a fraction `bad` of them bad, per phase of `steps` steps."""
    total = counter(*[(n, REQUESTS_PER_STEP) for n, _ in phases])
    bad = [(n, REQUESTS_PER_STEP * f) for n, f in phases]
    good = [(n, REQUESTS_PER_STEP * (1 - f)) for n, f in phases]
    if objective is WORKING_LATENCY:
        labels = f'route="{WORKING_ROUTE}",method="GET",status="200"'
        return [
            {"series": f"{H}_count{{{labels}}}", "values": total},
            {"series": f'{H}_bucket{{{labels},le="{WORKING_P99_SECONDS:g}"}}', "values": counter(*good)},
        ]
    return [
        {"series": f'{H}_count{{route="{OTHER_ROUTE}",method="POST",status="201"}}', "values": counter(*good)},
        {"series": f'{H}_count{{route="{OTHER_ROUTE}",method="POST",status="503"}}', "values": counter(*bad)},
    ]


def _rules() -> dict[str, dict]:
    return {
        r["alert"]: r for build in RULE_FILES.values() for g in build()["groups"] for r in g["rules"] if "alert" in r
    }


def expect(alert: str, **labels: str) -> dict:
    """One expected firing alert: the rule's labels and annotations, with `labels` filled in."""
    rule = _rules()[alert]

    def fill(text: str) -> str:
        return re.sub(r"\{\{ \$labels\.(\w+) \}\}", lambda g: labels.get(g.group(1), ""), text)

    return {
        "exp_labels": {**rule["labels"], **labels},
        "exp_annotations": {k: fill(v) for k, v in rule["annotations"].items()},
    }


def case(
    name: str,
    interval: str,
    series: list[dict],
    alert: str,
    eval_time: str,
    firing: list[dict],
    holds: tuple[str, ...] = (),
) -> dict:
    """`holds`: expressions that must be true at `eval_time`, so a silent alert is silent for the
    right reason (the input reached the rules) and not because a series was missing."""
    test = {
        "name": name,
        "interval": interval,
        "input_series": series,
        "alert_rule_test": [{"eval_time": eval_time, "alertname": alert, "exp_alerts": firing}],
    }
    if holds:
        test["promql_expr_test"] = [
            {"expr": f"count({expr})", "eval_time": eval_time, "exp_samples": [{"labels": "{}", "value": 1}]}
            for expr in holds
        ]
    return test


def near(objective: Objective, window: str, fraction: float) -> str:
    """The recording rule over `window` reads `fraction`, give or take 10%."""
    record = objective.record(window)
    return f"{record} > {fraction * 0.9:g} and {record} < {fraction * 1.1:g}"


def slo_tests() -> list[dict]:
    tests = []
    for o in OBJECTIVES:
        fast, slow, b = f"{o.alert}Fast", f"{o.alert}Slow", o.budget
        tests += [
            case(
                f"{fast}: 20x budget for 70 min crosses 14.4x over 1 h and 5 min",
                "1m",
                slo_series(o, (70, 20 * b)),
                fast,
                "65m",
                [expect(fast)],
                (near(o, "1h", 20 * b),),
            ),
            case(
                f"{fast}: 8x budget for 6 h crosses 6x over 6 h and 30 min (not 14.4x)",
                "5m",
                slo_series(o, (80, 8 * b)),
                fast,
                "6h",
                [expect(fast)],
                (near(o, "6h", 8 * b),),
            ),
            case(
                f"{fast}: 5x budget for 6 h stays under 6x",
                "5m",
                slo_series(o, (80, 5 * b)),
                fast,
                "6h",
                [],
                (near(o, "6h", 5 * b), near(o, "30m", 5 * b)),
            ),
            case(
                f"{fast}: 30 min after a 50x burn stopped, the short windows clear it",
                "1m",
                slo_series(o, (60, 50 * b), (40, 0.0)),
                fast,
                "90m",
                [],
                (
                    f"{o.record('1h')} > {14.4 * b:g}",
                    f"{o.record('6h')} > {6 * b:g}",
                    f"{o.record('5m')} == 0",
                    f"{o.record('30m')} == 0",
                ),
            ),
            case(
                f"{slow}: 4x budget for a day crosses 3x over 1 d and 2 h",
                "10m",
                slo_series(o, (150, 4 * b)),
                slow,
                "1d",
                [expect(slow)],
                (near(o, "1d", 4 * b),),
            ),
            case(
                f"{slow}: 2x budget for 3 days crosses 1x over 3 d and 6 h (not 3x)",
                "30m",
                slo_series(o, (150, 2 * b)),
                slow,
                "3d",
                [expect(slow)],
                (near(o, "3d", 2 * b),),
            ),
            case(
                f"{slow}: 0.5x budget for 3 days stays under 1x",
                "30m",
                slo_series(o, (150, 0.5 * b)),
                slow,
                "3d",
                [],
                (near(o, "3d", 0.5 * b), near(o, "6h", 0.5 * b)),
            ),
        ]
    return tests


def store_tests() -> list[dict]:
    up = m.STORE_UP
    used, limit = x.REDIS_MEMORY_USED, x.REDIS_MEMORY_MAX
    pg = 'instance="postgres:9187"'
    return [
        case(
            "Neo4j down for 4 min",
            "1m",
            [{"series": f'{up}{{store="neo4j"}}', "values": "1x5 0x10"}],
            "MemstackStoreDown",
            "10m",
            [expect("MemstackStoreDown", store="neo4j")],
        ),
        case(
            "Neo4j down for 1 min only",
            "1m",
            [{"series": f'{up}{{store="neo4j"}}', "values": "1x5 0 1x10"}],
            "MemstackStoreDown",
            "10m",
            [],
        ),
        case(
            "Redis at 95% of maxmemory",
            "1m",
            [{"series": used, "values": "950x20"}, {"series": limit, "values": "1000x20"}],
            "RedisMemoryNearMax",
            "10m",
            [expect("RedisMemoryNearMax")],
        ),
        case(
            "Redis at 80% of maxmemory",
            "1m",
            [{"series": used, "values": "800x20"}, {"series": limit, "values": "1000x20"}],
            "RedisMemoryNearMax",
            "10m",
            [],
        ),
        case(
            "an archive failure (postgres_exporter)",
            "1m",
            [{"series": f"{x.PG_ARCHIVE_FAILED}{{{pg}}}", "values": "0x10 1x10"}],
            "PostgresWALArchivingFailing",
            "15m",
            [expect("PostgresWALArchivingFailing", instance="postgres:9187")],
        ),
        case(
            "an archive failure (CloudNativePG)",
            "1m",
            [{"series": f'{x.CNPG_ARCHIVE_FAILED}{{pod="pg-1"}}', "values": "0x10 1x10"}],
            "PostgresWALArchivingFailing",
            "15m",
            [expect("PostgresWALArchivingFailing", pod="pg-1")],
        ),
        case(
            "no archive failure",
            "1m",
            [{"series": f"{x.PG_ARCHIVE_FAILED}{{{pg}}}", "values": "3x30"}],
            "PostgresWALArchivingFailing",
            "20m",
            [],
        ),
        case(
            "nothing archived for 17 min",
            "1m",
            [{"series": f"{x.PG_LAST_ARCHIVE_AGE}{{{pg}}}", "values": "0+60x20"}],
            "PostgresWALArchiveStale",
            "17m",
            [expect("PostgresWALArchiveStale", instance="postgres:9187")],
        ),
        case(
            "a segment archived every 8 min",
            "1m",
            [{"series": f"{x.PG_LAST_ARCHIVE_AGE}{{{pg}}}", "values": "0+60x8 0+60x8 0+60x8"}],
            "PostgresWALArchiveStale",
            "17m",
            [],
        ),
    ]


def worker_tests() -> list[dict]:
    return [
        case(
            "outbox row waiting 10 min",
            "1m",
            [{"series": m.OUTBOX_OLDEST_AGE, "values": "0+60x20"}],
            "OutboxLagHigh",
            "10m",
            [expect("OutboxLagHigh")],
        ),
        case("outbox lag 30 s", "1m", [{"series": m.OUTBOX_OLDEST_AGE, "values": "30x20"}], "OutboxLagHigh", "10m", []),
        case(
            "a job dead-lettered",
            "1m",
            [{"series": m.REFLECTION_DEAD_LETTERS, "values": "0x30 1x30"}],
            "DeadLettersGrowing",
            "40m",
            [expect("DeadLettersGrowing")],
        ),
        case(
            "old dead letters, none new",
            "1m",
            [{"series": m.REFLECTION_DEAD_LETTERS, "values": "5x60"}],
            "DeadLettersGrowing",
            "50m",
            [],
        ),
        # time() is the evaluation time, counted from the epoch: a backup at 0 is that old.
        case(
            "last backup 27 h ago",
            "1h",
            [{"series": x.BACKUP_LAST_AVAILABLE, "values": "0x30"}],
            "BackupTooOld",
            f"{BACKUP_MAX_AGE_S // 3600 + 1}h",
            [expect("BackupTooOld")],
        ),
        case(
            "last backup 25 h ago",
            "1h",
            [{"series": x.BACKUP_LAST_AVAILABLE, "values": "0x30"}],
            "BackupTooOld",
            f"{BACKUP_MAX_AGE_S // 3600 - 1}h",
            [],
        ),
    ]


def platform_tests() -> list[dict]:
    pvc = 'namespace="memstack",persistentvolumeclaim="data-pg-1"'
    hpa = 'namespace="memstack",horizontalpodautoscaler="memory-service"'
    gib = 2**30
    return [
        # Steps of 5 min: a sparser series would go stale (5 min look-back) between samples.
        case(
            "a volume losing 1 GiB an hour at 40% free",
            "5m",
            [
                {"series": f"{x.VOLUME_AVAILABLE}{{{pvc}}}", "values": f"{40 * gib}-{gib / 12:.0f}x100"},
                {"series": f"{x.VOLUME_CAPACITY}{{{pvc}}}", "values": f"{100 * gib}x100"},
            ],
            "DiskFullIn4Days",
            "7h",
            [expect("DiskFullIn4Days", namespace="memstack", persistentvolumeclaim="data-pg-1")],
        ),
        case(
            "a volume at 40% free, steady",
            "5m",
            [
                {"series": f"{x.VOLUME_AVAILABLE}{{{pvc}}}", "values": f"{40 * gib}x100"},
                {"series": f"{x.VOLUME_CAPACITY}{{{pvc}}}", "values": f"{100 * gib}x100"},
            ],
            "DiskFullIn4Days",
            "7h",
            [],
        ),
        case(
            "the HPA at its maximum for 20 min",
            "1m",
            [
                {"series": f"{x.HPA_CURRENT_REPLICAS}{{{hpa}}}", "values": "10x30"},
                {"series": f"{x.HPA_MAX_REPLICAS}{{{hpa}}}", "values": "10x30"},
            ],
            "HPAAtMaxReplicas",
            "20m",
            [expect("HPAAtMaxReplicas", namespace="memstack", horizontalpodautoscaler="memory-service")],
        ),
        case(
            "the HPA at its maximum for 10 min only",
            "1m",
            [
                {"series": f"{x.HPA_CURRENT_REPLICAS}{{{hpa}}}", "values": "5x10 10x10"},
                {"series": f"{x.HPA_MAX_REPLICAS}{{{hpa}}}", "values": "10x30"},
            ],
            "HPAAtMaxReplicas",
            "20m",
            [],
        ),
        case(
            "the HPA below its maximum",
            "1m",
            [
                {"series": f"{x.HPA_CURRENT_REPLICAS}{{{hpa}}}", "values": "5x30"},
                {"series": f"{x.HPA_MAX_REPLICAS}{{{hpa}}}", "values": "10x30"},
            ],
            "HPAAtMaxReplicas",
            "20m",
            [],
        ),
    ]


def _slo(severity_suffix: str):
    return lambda: [t for t in slo_tests() if t["alert_rule_test"][0]["alertname"].endswith(severity_suffix)]


# test file -> (rule file, evaluation interval, cases). The ticket alerts look over days and
# have no `for`: evaluating them every 15 min instead of every minute keeps promtool quick.
TEST_FILES = {
    "slo-page": ("slo", "1m", _slo("Fast")),
    "slo-ticket": ("slo", "15m", _slo("Slow")),
    "stores": ("stores", "1m", store_tests),
    "worker": ("worker", "1m", worker_tests),
    "platform": ("platform", "1m", platform_tests),
}


def test_file(name: str) -> dict:
    rules, interval, cases = TEST_FILES[name]
    return {"rule_files": [f"../{rules}.yaml"], "evaluation_interval": interval, "tests": cases()}
