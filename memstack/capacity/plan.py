"""`memstack capacity plan`: pods, HPA bounds, requests and store sizes for a stack, from a
measurement (measure.json), a storage measurement (storage.json) and the operator's inputs.
Every figure carries its source: the measurement it came from, or the input.

Pods are N+2: N pods carry the peak at the target utilisation of their SLO throughput, one
more covers a pod down for a rollout, one more a pod lost with its node.
"""

from __future__ import annotations

import copy
import difflib
import io
import math
import os
import sys
import tempfile
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path
from types import SimpleNamespace

from memstack.errors import MemstackError

REPO_ROOT = Path(__file__).resolve().parents[2]
GI = 2**30
MI = 2**20
DAYS = (0, 90, 365)
HORIZON_DAYS = 3650
DAYS_PER_MONTH = 365.25 / 12
# pgvector's HNSW index takes vectors of at most 2,000 dimensions (its `vector` type 16,000);
# the schema indexes every embedding, so no larger dimension can be stored as planned.
HNSW_MAX_DIMENSIONS = 2000
# Upper bounds of the inputs: far beyond any deployment, low enough that ten years of growth
# stay finite numbers.
MAX_USERS = 10**10
MAX_ITEMS_PER_USER_DAY = 86_400  # one a second, all day
MAX_GROWTH_PCT_MONTH = 1000.0
MAX_RETENTION_DAYS = 100 * 365


@dataclass
class PlanInputs:
    peak_rps: float
    stack: str = "prod"
    profile: str = "mixed"
    target_utilisation: float = 0.7
    # HPA maximum: this multiple of the planned peak.
    burst: float = 2.0
    users: int = 10_000
    turns_per_user_day: float = 50.0
    facts_per_user_day: float = 5.0
    # Users with live working memory (within its TTL) at once.
    active_share: float = 0.2
    embedding_dim: int | None = None
    retention_days: int = 90
    growth_pct_month: float = 5.0
    # Volumes are sized for day 365 times this, for WAL, bloat, compaction and mistakes.
    headroom: float = 1.3
    start: date = field(default_factory=date.today)

    def check(self) -> None:
        """One message per bad option, naming it."""
        from memstack.load import require_finite

        require_finite(
            peak_rps=self.peak_rps,
            target_utilisation=self.target_utilisation,
            burst=self.burst,
            turns_per_user_day=self.turns_per_user_day,
            facts_per_user_day=self.facts_per_user_day,
            active_share=self.active_share,
            growth_pct_month=self.growth_pct_month,
        )
        dim = self.embedding_dim
        per_day = f"from 0 to {MAX_ITEMS_PER_USER_DAY:,} (one a second)"
        rules = (
            ("--peak-rps", self.peak_rps, self.peak_rps > 0, "above 0"),
            ("--target-utilisation", self.target_utilisation, 0 < self.target_utilisation <= 1, "in (0, 1]"),
            ("--burst", self.burst, self.burst >= 1, "at least 1"),
            ("--users", self.users, self.users > 0, "above 0"),
            ("--users", self.users, self.users <= MAX_USERS, f"at most {MAX_USERS:,}"),
            ("--turns-per-user-day", self.turns_per_user_day, self.turns_per_user_day >= 0, "0 or more"),
            (
                "--turns-per-user-day",
                self.turns_per_user_day,
                self.turns_per_user_day <= MAX_ITEMS_PER_USER_DAY,
                per_day,
            ),
            ("--facts-per-user-day", self.facts_per_user_day, self.facts_per_user_day >= 0, "0 or more"),
            (
                "--facts-per-user-day",
                self.facts_per_user_day,
                self.facts_per_user_day <= MAX_ITEMS_PER_USER_DAY,
                per_day,
            ),
            ("--active-share", self.active_share, 0 < self.active_share <= 1, "in (0, 1]"),
            ("--retention-days", self.retention_days, self.retention_days > 0, "above 0"),
            (
                "--retention-days",
                self.retention_days,
                self.retention_days <= MAX_RETENTION_DAYS,
                f"at most {MAX_RETENTION_DAYS:,}",
            ),
            ("--growth-pct-month", self.growth_pct_month, self.growth_pct_month > -100, "above -100"),
            (
                "--growth-pct-month",
                self.growth_pct_month,
                self.growth_pct_month <= MAX_GROWTH_PCT_MONTH,
                f"at most {MAX_GROWTH_PCT_MONTH:g}",
            ),
            ("--embedding-dim", dim, dim is None or dim > 0, "above 0"),
            (
                "--embedding-dim",
                dim,
                dim is None or dim <= HNSW_MAX_DIMENSIONS,
                f"at most {HNSW_MAX_DIMENSIONS:,} (pgvector's HNSW index limit; every embedding is indexed)",
            ),
        )
        for option, value, valid, rule in rules:
            if not valid:
                raise MemstackError(f"{option} must be {rule}, got {value:g}")


def stack_file(stack: str, root: Path = REPO_ROOT) -> Path:
    path = root / f"Pulumi.{stack}.yaml"
    if not path.exists():
        known = sorted(p.name[len("Pulumi.") : -len(".yaml")] for p in root.glob("Pulumi.*.yaml"))
        raise MemstackError(f"unknown stack {stack!r}: no {path.name} (stacks: {', '.join(known)})")
    return path


def _yaml(sequence_offset: int = 2):
    from ruamel.yaml import YAML

    yaml = YAML()  # round trip: comments, key order and quoting stay as they were
    yaml.preserve_quotes = True
    yaml.width = 4096
    # Block sequences keep their dashes where the file has them (ruamel applies one style to all).
    yaml.indent(mapping=2, sequence=2 + sequence_offset, offset=sequence_offset)
    return yaml


def sequence_offset(text: str) -> int:
    """How far the file indents a block sequence's dashes under their key: 2 or 0."""
    previous = None
    for line in text.splitlines():
        stripped = line.lstrip()
        if not stripped or stripped.startswith("#"):
            continue
        if stripped.startswith("- ") and previous is not None and previous.rstrip().endswith(":"):
            return max(0, (len(line) - len(stripped)) - (len(previous) - len(previous.lstrip())))
        previous = line
    return 2


def read_stack(path: Path):
    from ruamel.yaml.error import YAMLError

    try:
        document = _yaml().load(path.read_text())
    except YAMLError as exc:
        raise MemstackError(f"{path.name} is not valid YAML: {str(exc).splitlines()[0]}") from None
    if not isinstance(document, dict) or not isinstance(document.get("config", {}), dict):
        raise MemstackError(f"{path.name} has no `config:` mapping")
    return document


# The stack-file sections the plan reads and writes, and their models in infra/config.py.
SECTIONS = {
    "memoryService": ("memory_service", "MemoryService"),
    "postgres": ("postgres", "Postgres"),
    "neo4j": ("neo4j", "Neo4j"),
    "redis": ("redis", "Redis"),
    "quota": ("quota", "Quota"),
}


def stack_config(document) -> SimpleNamespace:
    """The sections of a stack document the plan uses, each checked by its own model of the
    Pulumi program's config (defaults filled in). Stack-wide rules (an image that CI sets at
    deploy time, backups that prod requires) are the deployment's to enforce, not the plan's."""
    _infra_importable()
    from pydantic import ValidationError

    import infra.config as stack_model

    raw = stack_model.raw_project_config(dict(document.get("config") or {}))
    sections = {}
    for key, (attribute, model) in SECTIONS.items():
        try:
            sections[attribute] = getattr(stack_model, model).model_validate(raw.get(key) or {})
        except ValidationError as exc:
            error = exc.errors()[0]
            where = ".".join(str(part) for part in (key, *error["loc"]))
            raise MemstackError(f"stack file: memstack:{where}: {error['msg']}") from None
    return SimpleNamespace(**sections)


def _infra_importable() -> None:
    # The Pulumi program is not an installed package: it is read from the checkout.
    if str(REPO_ROOT) not in sys.path:
        sys.path.append(str(REPO_ROOT))


def _gi_up(nbytes: float) -> str:
    return f"{max(1, math.ceil(nbytes / GI))}Gi"


def _mi_up(nbytes: float, step: int = 64) -> str:
    return f"{max(step, math.ceil(nbytes / MI / step) * step)}Mi"


def _millicores_up(cores: float, step: int = 50) -> str:
    return f"{max(step, math.ceil(cores * 1000 / step) * step)}m"


def _figure(figures: list, name: str, value, unit: str, source: str) -> None:
    figures.append({"name": name, "value": value, "unit": unit, "source": source})


def _daily_users(inputs: PlanInputs, day: int) -> float:
    return inputs.users * (1 + inputs.growth_pct_month / 100) ** (day / DAYS_PER_MONTH)


def _series(inputs: PlanInputs, per_item: dict) -> list[dict]:
    """Day by day to the horizon: stored turns (within retention), facts (kept), live working
    memory, and each store's bytes."""
    turns_window: list[float] = []
    turns = facts = 0.0
    rows = []
    for day in range(HORIZON_DAYS + 1):
        users = _daily_users(inputs, day)
        new_turns = users * inputs.turns_per_user_day
        turns_window.append(new_turns)
        turns += new_turns
        if len(turns_window) > inputs.retention_days:
            turns -= turns_window.pop(0)
        facts += users * inputs.facts_per_user_day
        active = users * inputs.active_share
        rows.append(
            {
                "day": day,
                "users": users,
                "turns": turns,
                "facts": facts,
                "redis_ram": active * per_item["redis_conversation"],
                "postgres_disk": turns * per_item["pg_turn"] + facts * per_item["pg_fact"],
                "postgres_ram": turns * per_item["pg_turn_hnsw"] + facts * per_item["pg_fact_hnsw"],
                "neo4j_disk": (turns + facts) * per_item["neo4j_item"],
            }
        )
    for row in rows:
        # Redis keeps an append-only file plus the snapshot it rewrites from: twice its memory.
        row["redis_disk"] = 2 * row["redis_ram"]
        # Neo4j serves from its page cache: enough to hold the store.
        row["neo4j_ram"] = row["neo4j_disk"]
    return rows


def per_item_bytes(storage: dict, embedding_dim: int) -> tuple[dict, dict]:
    """Bytes per stored item from the storage measurement, the vector part rescaled to the
    planned embedding dimension (float4: 4 bytes per dimension, in the row and in the HNSW
    index). Returns the values and their sources."""
    pg, redis, neo = storage["postgres"], storage["redis"], storage["neo4j"]
    extra = 4 * (embedding_dim - storage["embedding_dim"])
    src = f"storage.json ({storage['source']}; embedding dim {storage['embedding_dim']} -> {embedding_dim})"

    def need(value, what: str) -> float:
        if value is None:
            raise MemstackError(f"storage.json has no {what}; run `memstack capacity storage` again with more items")
        return float(value)

    turns_cap = storage.get("working_max_turns") or redis["turns"]["items"] / max(redis["turns"]["keys"], 1)
    values = {
        "redis_conversation": need(redis["ctx"]["bytes_per_key"], "Redis context size")
        + need(redis["turns"]["bytes_per_item"], "Redis turn size") * turns_cap
        + need(redis["thoughts"]["bytes_per_key"], "Redis thoughts size"),
        "pg_turn": need(pg["conversation_logs"]["bytes_per_row"], "conversation_logs size") + 2 * extra,
        "pg_fact": need(pg["memory_timeline"]["bytes_per_row"], "memory_timeline size") + 2 * extra,
        "pg_turn_hnsw": need(pg["conversation_logs_embedding"]["bytes_per_row"], "HNSW size") + extra,
        "pg_fact_hnsw": need(pg["memory_timeline_embedding"]["bytes_per_row"], "HNSW size") + extra,
    }
    items = storage["inserted"]["turns"] + storage["inserted"]["facts"]
    measured = neo.get("bytes_per_node") is not None and neo.get("bytes_per_relationship") is not None
    values["neo4j_item"] = (
        (neo["nodes"] * neo["bytes_per_node"] + neo["relationships"] * neo["bytes_per_relationship"]) / items
        if measured
        else 0.0
    )
    sources = {
        "redis_conversation": f"Redis MEMORY USAGE: context hash + {turns_cap:g} turns + thoughts list, {src}",
        "pg_turn": f"pg_total_relation_size(conversation_logs) growth per row, {src}",
        "pg_fact": f"pg_total_relation_size(memory_timeline) growth per row, {src}",
        "pg_turn_hnsw": f"HNSW index conversation_logs_embedding growth per row, {src}",
        "pg_fact_hnsw": f"HNSW index memory_timeline_embedding growth per row, {src}",
        "neo4j_item": f"Neo4j bytes per node and relationship x the nodes and relationships the load made, per turn "
        f"or fact, {src}"
        if measured
        else "no Neo4j measurement (not a local stack): 0",
    }
    return values, sources


def _runs_out(series: list[dict], key: str, capacity: float, start: date) -> str:
    for row in series:
        if row[key] > capacity:
            return (start + timedelta(days=row["day"])).isoformat()
    return f"not within {HORIZON_DAYS // 365} years"


LOWER_BOUND_NOTE = (
    "a LOWER BOUND: no step broke the SLO (knee not reached), so the pods and CPU request are sized "
    "for less than a pod can carry; measure with higher --steps"
)


def plan(
    inputs: PlanInputs, measurement: dict, storage: dict | None, document, measure_dir: str = "", storage_dir: str = ""
) -> dict:
    inputs.check()
    try:
        return _plan(inputs, measurement, storage, document, measure_dir, storage_dir)
    except OverflowError:
        # Inputs within their bounds whose product still leaves the floats: one line, not a traceback.
        raise MemstackError(
            f"the plan overflows at --peak-rps {inputs.peak_rps:g}, --users {inputs.users:g}, --growth-pct-month "
            f"{inputs.growth_pct_month:g}, --turns-per-user-day {inputs.turns_per_user_day:g}, --facts-per-user-day "
            f"{inputs.facts_per_user_day:g}; lower them"
        ) from None


def _plan(
    inputs: PlanInputs, measurement: dict, storage: dict | None, document, measure_dir: str, storage_dir: str
) -> dict:
    config = stack_config(document)
    figures: list[dict] = []
    profile = measurement["profiles"].get(inputs.profile)
    if profile is None:
        raise MemstackError(
            f"measure.json has no {inputs.profile!r} profile (has: {', '.join(measurement['profiles'])})"
        )
    per_pod = profile["throughput_at_slo_rps"]
    if not per_pod:
        raise MemstackError(f"no step of the {inputs.profile} profile held the SLO: nothing to size pods from")
    msrc = f"{measure_dir}/measure.json, {inputs.profile} profile, {profile['throughput_at_slo_source']}"
    # Every step held the SLO (or the file does not say otherwise): the pod was never loaded to
    # its knee, so what it carried is only a lower bound of what it can carry.
    lower_bound = profile.get("knee_reached") is not True
    usable = per_pod * inputs.target_utilisation
    pods = math.ceil(inputs.peak_rps / usable) + 2
    hpa_max = max(pods, math.ceil(inputs.peak_rps * inputs.burst / usable) + 2)
    if hpa_max > config.quota.pods:
        raise MemstackError(
            f"the plan needs {hpa_max} memory-service pods at {inputs.burst:g} x {inputs.peak_rps:g} req/s, more than "
            f"the stack's pod quota (memstack:quota.pods = {config.quota.pods}); lower --peak-rps or raise the quota"
        )
    _figure(
        figures,
        "per-pod throughput at the SLO",
        round(per_pod, 1),
        "req/s",
        f"{msrc}; {LOWER_BOUND_NOTE}" if lower_bound else msrc,
    )
    _figure(
        figures,
        "pods (N+2)",
        pods,
        "pods",
        f"ceil(peak {inputs.peak_rps:g} / ({per_pod:.0f} x utilisation {inputs.target_utilisation:g})) + 2 "
        "(one pod in a rollout, one lost with a node)",
    )
    _figure(figures, "HPA minReplicas", pods, "pods", "the N+2 pods for the planned peak")
    _figure(figures, "HPA maxReplicas", hpa_max, "pods", f"the same rule at {inputs.burst:g} x the peak (--burst)")
    cpu = (profile.get("cpu_s_per_request") or {}).get("service")
    if cpu is None:
        raise MemstackError(
            "measure.json has no CPU per request of the service (measured with --url and no --service-pid?)"
        )
    cpu_request = _millicores_up(cpu * per_pod)
    _figure(figures, "service CPU per request", round(cpu * 1000, 3), "ms", f"{msrc}, /proc/<pid>/stat of the service")
    _figure(
        figures,
        "CPU request per pod",
        cpu_request,
        "cores",
        f"CPU per request x per-pod throughput at the SLO: the HPA's {inputs.target_utilisation:.0%} target is "
        "then reached at that share of the SLO throughput",
    )
    rss = max((s.get("service_rss_bytes") or 0) for s in profile["step_results"])
    memory_request = _mi_up(rss * 1.25) if rss else config.memory_service.resources.memory_request
    _figure(
        figures,
        "memory request per pod",
        memory_request,
        "bytes",
        f"peak VmRSS of the service over the steps ({rss / MI:.0f} Mi) x 1.25, {msrc}"
        if rss
        else "no RSS measured: the stack's current value",
    )
    for store in ("redis", "postgres", "neo4j"):
        share = (profile.get("cpu_s_per_request") or {}).get(store)
        if share is not None:
            _figure(figures, f"{store} CPU per request", round(share * 1000, 3), "ms", f"{msrc}, /proc/<pid>/stat")
            _figure(
                figures,
                f"{store} CPU at the peak",
                round(share * inputs.peak_rps, 2),
                "cores",
                f"{store} CPU per request x peak {inputs.peak_rps:g} req/s",
            )

    proposed: dict[tuple[str, ...], object] = {
        ("memoryService", "autoscaling", "minReplicas"): pods,
        ("memoryService", "autoscaling", "maxReplicas"): hpa_max,
        ("memoryService", "autoscaling", "cpuUtilization"): round(inputs.target_utilisation * 100),
        ("memoryService", "resources", "cpuRequest"): cpu_request,
        ("memoryService", "resources", "memoryRequest"): memory_request,
    }
    from infra.config import quantity_value

    limits = config.memory_service.resources
    if quantity_value(cpu_request) > quantity_value(limits.cpu_limit):
        proposed[("memoryService", "resources", "cpuLimit")] = cpu_request
    if quantity_value(memory_request) > quantity_value(limits.memory_limit):
        proposed[("memoryService", "resources", "memoryLimit")] = memory_request

    stores: dict = {}
    if storage is not None:
        dim = inputs.embedding_dim or storage["embedding_dim"]
        per_item, sources = per_item_bytes(storage, dim)
        for key, value in per_item.items():
            _figure(figures, f"bytes per item: {key}", round(value, 1), "bytes", sources[key])
        series = _series(inputs, per_item)
        inputs_src = (
            f"inputs: {inputs.users} users growing {inputs.growth_pct_month:g}%/month, "
            f"{inputs.turns_per_user_day:g} turns and {inputs.facts_per_user_day:g} facts per user per day, "
            f"{inputs.retention_days} days turn retention, {inputs.active_share:.0%} of users active"
        )
        volumes = {
            "postgres": quantity_value(config.postgres.storage_size),
            "neo4j": quantity_value(config.neo4j.storage_size),
            "redis": quantity_value(config.redis.storage_size),
        }
        for store in ("redis", "postgres", "neo4j"):
            stores[store] = {
                **{f"ram_day{d}": series[d][f"{store}_ram"] for d in DAYS},
                **{f"disk_day{d}": series[d][f"{store}_disk"] for d in DAYS},
                "volume": volumes[store],
                "volume_runs_out": _runs_out(series, f"{store}_disk", volumes[store], inputs.start),
                "source": f"{sources['redis_conversation' if store == 'redis' else 'neo4j_item' if store == 'neo4j' else 'pg_turn']}; {inputs_src}",
            }
        stores["redis"]["max_memory"] = quantity_value(config.redis.max_memory)
        stores["redis"]["max_memory_runs_out"] = _runs_out(
            series, "redis_ram", stores["redis"]["max_memory"], inputs.start
        )
        stores["series"] = series[:366]
        # Volumes only grow (a PersistentVolumeClaim cannot shrink): sized for day 365 with headroom.
        for store, path in (
            ("postgres", ("postgres", "storageSize")),
            ("neo4j", ("neo4j", "storageSize")),
            ("redis", ("redis", "storageSize")),
        ):
            need = stores[store]["disk_day365"] * inputs.headroom
            if need > volumes[store]:
                proposed[path] = _gi_up(need)
        need_ram = stores["redis"]["ram_day365"] * inputs.headroom
        if need_ram > stores["redis"]["max_memory"]:
            max_memory = _mi_up(need_ram)
            proposed[("redis", "maxMemory")] = max_memory
            if quantity_value(max_memory) >= quantity_value(config.redis.resources.memory_limit):
                proposed[("redis", "resources", "memoryLimit")] = _mi_up(quantity_value(max_memory) * 1.25)
    return {
        "inputs": {k: (v.isoformat() if isinstance(v, date) else v) for k, v in vars(inputs).items()},
        "knee_reached": not lower_bound,
        "per_pod_lower_bound": lower_bound,
        "figures": figures,
        "stores": stores,
        "proposed": {".".join(k): v for k, v in proposed.items()},
    }


# --- the stack file -----------------------------------------------------------------------


def apply(document, proposed: dict[str, object]):
    """A copy of the stack document with the proposed keys set (under `memstack:<top>`), every
    other key and comment as it was. Flow-style mappings stay flow style."""
    from ruamel.yaml.comments import CommentedMap

    updated = copy.deepcopy(document)
    config = updated.setdefault("config", CommentedMap())
    for dotted, value in proposed.items():
        top, *rest = dotted.split(".")
        key = f"memstack:{top}"
        if key not in config or config[key] is None:
            config[key] = CommentedMap()
        node = config[key]
        for part in rest[:-1]:
            if part not in node or not isinstance(node[part], dict):
                node[part] = CommentedMap()
            node = node[part]
        node[rest[-1]] = value
    return updated


def dump(document, original: str) -> str:
    """The document as text, in the layout of the file it was read from."""
    buffer = io.StringIO()
    _yaml(sequence_offset(original)).dump(document, buffer)
    return buffer.getvalue()


def diff(path: Path, before: str, after: str) -> str:
    return "".join(
        difflib.unified_diff(
            before.splitlines(keepends=True),
            after.splitlines(keepends=True),
            fromfile=str(path.name),
            tofile=f"{path.name} (planned)",
        )
    )


def write_stack(path: Path, proposed: dict[str, object]) -> str:
    """Apply the proposal to the stack file, checked by the stack's own config model first, and
    replace the file atomically (never half written). Returns the diff."""
    before = path.read_text()
    document = read_stack(path)
    updated = apply(document, proposed)
    stack_config(updated)
    text = dump(updated, before)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(text)
        os.chmod(tmp, path.stat().st_mode & 0o777)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return diff(path, before, text)
