"""`memstack drill`: a disaster-recovery exercise, unattended, with a ledger of acknowledged writes.

Per round: a writer drives the memory service's real routes (episodic turns, semantic facts,
working-memory keys) and records every write the service acknowledged; a backup set is taken
while it writes; then the disaster: every store SIGKILLed and its data dir moved aside; a
restore to the latest point possible; and the ledger reconciled against each store. Each round
after the first starts from the stack the previous one restored, so it also proves that a
restored stack can itself be backed up and restored.

Targets, per store:
- Postgres loses no write acknowledged before the newest commit in the WAL archive at the
  disaster (what came after lives only in the lost pg_wal: the data-loss window is
  archive_timeout plus the archiver's copy).
- Redis: with appendfsync everysec at most 1 s of writes, with always none.
- Neo4j holds exactly what Postgres holds (it is rebuilt from it).
No store may hold a write twice.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
from neo4j import GraphDatabase

from memstack.errors import MemstackError
from memstack.load import free_port, wait_ready, write_tokens
from memstack.local.backend import CORE_SERVICES, stack_for_run
from memstack.local.neo4j_server import USER as NEO4J_USER
from memstack.local.redis_server import LOSS_WINDOW_S as REDIS_RPO_TARGET_S
from memstack.recovery import sets
from memstack.recovery.backup import backup
from memstack.recovery.restore import last_archived_commit, restore
from memstack.recovery.runtime import RECOVERY_TIMEOUT_S
from memstack.recovery.stack import LocalStack

KINDS = ("turn", "fact", "working")
STORE_KINDS = {"postgres": ("turn", "fact"), "neo4j": ("turn", "fact"), "redis": ("working",)}
# Working-memory keys spread over this many conversations (a conversation holds at most
# MEMORY_WORKING_MAX_CONTEXT_KEYS keys).
CONVERSATIONS = 64
_RUN_CLI = "from memstack.cli import main; main()"
# Told one line as each phase starts: a round takes minutes, and the results come at the end.
Progress = Callable[[str], None]


def _quiet(line: str) -> None:
    pass


@dataclass
class DrillOptions:
    writes: int = 3000
    rounds: int = 2
    concurrency: int = 16
    # The backup starts once this share of the writes is acknowledged.
    backup_at: float = 0.3
    # Keep a passed round's data moved aside and its backup set (a failed round's are always kept).
    keep: bool = False


@dataclass
class Write:
    seq: int
    kind: str
    sent: float
    acked: float | None = None
    latency_ms: float | None = None
    id: str | None = None


@dataclass
class Ledger:
    """Every write attempted in a round and, for those the service acknowledged, when."""

    run: str
    writes: list[Write] = field(default_factory=list)

    def marker(self, seq: int) -> str:
        return f"drill {self.run} #{seq}#"

    def acked(self, kind: str) -> dict[int, Write]:
        return {w.seq: w for w in self.writes if w.kind == kind and w.acked is not None}


def _seq(text: str | None, run: str) -> int | None:
    prefix = f"drill {run} #"
    if not text or not text.startswith(prefix):
        return None
    return int(text[len(prefix) :].split("#", 1)[0])


# --- the memory service ------------------------------------------------------------------------


class Service:
    """`memstack serve` on a free port, for tokens of one tenant per round."""

    def __init__(self, stack: LocalStack, workdir: Path, tenants: int) -> None:
        from memory_core import migrate

        stack.backend.up(CORE_SERVICES)
        endpoints = stack.backend.endpoints()
        asyncio.run(migrate(endpoints.settings()))
        hashes, plain = write_tokens(workdir, tenants)
        self.tokens = [line.split(" ", 1) for line in plain.read_text().splitlines()]
        self.url = f"http://127.0.0.1:{free_port()}"
        self.log = workdir / "service.log"
        env = {**os.environ, **endpoints.env(), "MEMSTACK_TOKENS_FILE": str(hashes)}
        with open(self.log, "w") as handle:
            self.process = subprocess.Popen(
                [
                    sys.executable,
                    "-c",
                    _RUN_CLI,
                    "serve",
                    "--port",
                    self.url.rsplit(":", 1)[1],
                    "--log-level",
                    "warning",
                ],
                env=env,
                stdout=handle,
                stderr=subprocess.STDOUT,
            )
        wait_ready(self.url, self.process, self.log)

    def close(self) -> None:
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def _request(kind: str, seq: int, marker: str) -> tuple[str, str, dict[str, Any]]:
    user, conversation = f"u{seq % 4}", f"c{seq % CONVERSATIONS}"
    if kind == "turn":
        return "POST", f"/v1/episodic/{user}/{conversation}/turns", {"role": "user", "content": marker}
    if kind == "fact":
        return "POST", f"/v1/semantic/{user}/facts", {"claim": marker, "source": "user_stated"}
    return "PUT", f"/v1/working/{user}/{conversation}/context/k{seq}", {"value": {"marker": marker}}


async def _write(client: httpx.AsyncClient, ledger: Ledger, seq: int) -> None:
    kind = KINDS[seq % len(KINDS)]
    method, path, body = _request(kind, seq, ledger.marker(seq))
    entry = Write(seq, kind, time.time())
    ledger.writes.append(entry)
    started = time.perf_counter()
    try:
        response = await client.request(method, path, json=body)
    except httpx.HTTPError:
        return
    if response.status_code in (200, 201, 204):
        entry.acked = time.time()
        entry.latency_ms = (time.perf_counter() - started) * 1000
        if response.status_code == 201:
            entry.id = response.json().get("id")


async def _write_round(
    service: Service,
    token: str,
    ledger: Ledger,
    options: DrillOptions,
    backup_started: threading.Event,
    backup_done: threading.Event,
    start_backup,
) -> None:
    """Write until `options.writes` writes are done and the backup has finished."""
    limits = httpx.Limits(max_connections=options.concurrency)
    async with httpx.AsyncClient(
        base_url=service.url, headers={"Authorization": f"Bearer {token}"}, timeout=30, limits=limits
    ) as client:
        seq = 0
        pending: set[asyncio.Task] = set()
        while seq < options.writes or not backup_done.is_set():
            while len(pending) >= options.concurrency:
                _, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
            pending.add(asyncio.create_task(_write(client, ledger, seq)))
            seq += 1
            if not backup_started.is_set() and seq >= options.writes * options.backup_at:
                backup_started.set()
                start_backup()
        if pending:
            await asyncio.wait(pending)


# --- reconciliation ------------------------------------------------------------------------------


def _present_postgres(stack: LocalStack, tenant: str, run: str) -> dict[str, list[int]]:
    with stack.admin() as conn:
        turns = conn.execute(
            "SELECT content FROM conversation_logs WHERE tenant_id = %s AND content LIKE %s",
            (tenant, f"drill {run} #%"),
        ).fetchall()
        facts = conn.execute(
            "SELECT summary FROM memory_timeline WHERE tenant_id = %s AND memory_type = 'fact' AND summary LIKE %s",
            (tenant, f"drill {run} #%"),
        ).fetchall()
    return {"turn": [_seq(r[0], run) for r in turns], "fact": [_seq(r[0], run) for r in facts]}


def _present_neo4j(stack: LocalStack, tenant: str, run: str) -> dict[str, list[int]]:
    state = stack.state()
    with GraphDatabase.driver(
        state.services["neo4j"].url, auth=(NEO4J_USER, state.credentials.neo4j_password)
    ) as driver:
        turns, _, _ = driver.execute_query("MATCH (t:Turn {tenant_id: $t}) RETURN t.content_preview AS text", t=tenant)
        facts, _, _ = driver.execute_query("MATCH (f:Fact {tenant_id: $t}) RETURN f.claim AS text", t=tenant)
    return {"turn": [_seq(r["text"], run) for r in turns], "fact": [_seq(r["text"], run) for r in facts]}


def _present_redis(service: Service, token: str, run: str) -> dict[str, list[int]]:
    found: list[int] = []
    with httpx.Client(base_url=service.url, headers={"Authorization": f"Bearer {token}"}, timeout=30) as client:
        for c in range(CONVERSATIONS):
            for u in range(4):
                if c % 4 != u:
                    continue
                response = client.get(f"/v1/working/u{u}/c{c}/context")
                response.raise_for_status()
                for value in response.json().get("context", {}).values():
                    if isinstance(value, dict):
                        found.append(_seq(value.get("marker"), run))
    return {"working": found}


def _reconcile(store: str, ledger: Ledger, present: dict[str, list[int]]) -> dict[str, Any]:
    # Writes are keyed by (kind, sequence number): a turn and a fact are separate writes.
    acked: dict[tuple[str, int], Write] = {}
    seen: list[tuple[str, int]] = []
    for kind in STORE_KINDS[store]:
        acked.update({(kind, s): w for s, w in ledger.acked(kind).items()})
        seen += [(kind, s) for s in present.get(kind, []) if s is not None]
    seen_set = set(seen)
    lost = [w for key, w in acked.items() if key not in seen_set]
    recovered = [w.acked for key, w in acked.items() if key in seen_set]
    last_ack = max((w.acked for w in acked.values()), default=None)
    last_recovered = max(recovered, default=None)
    rpo = (
        0.0
        if not lost
        else (last_ack - last_recovered if last_recovered else last_ack - min(w.sent for w in acked.values()))
    )
    return {
        "acknowledged": len(acked),
        "present": len(seen_set & set(acked)),
        "lost": len(lost),
        "duplicated": len(seen) - len(seen_set),
        "unexpected": len(seen_set - set(acked)),
        "rpo_s": round(rpo, 3),
        "lost_acked_times": sorted(w.acked for w in lost),
        "ids": seen_set,
    }


def _latency(ledger: Ledger, start: float, end: float) -> dict[str, Any]:
    def summary(values: list[float]) -> dict[str, Any]:
        if len(values) < 2:
            return {"writes": len(values)}
        q = statistics.quantiles(values, n=100)
        return {"writes": len(values), "p50_ms": round(q[49], 1), "p99_ms": round(q[98], 1)}

    done = [w for w in ledger.writes if w.acked is not None]
    return {
        "before_backup": summary([w.latency_ms for w in done if w.sent < start]),
        "during_backup": summary([w.latency_ms for w in done if start <= w.sent and w.acked <= end]),
    }


# --- one round -------------------------------------------------------------------------------------


def _disaster(stack: LocalStack) -> dict[str, Any]:
    """SIGKILL every store and move its data dir aside, as the loss of their disks would."""
    for name in stack.running():
        try:
            stack.backend.kill(name)
        except MemstackError:
            pass  # it died on its own meanwhile: a disaster all the same
    attic = stack.home / "attic" / ("disaster-" + sets.utc_now().strftime("%Y%m%dT%H%M%S.%fZ"))
    return {name: str(stack.runtime.move_aside(name, attic)) for name in CORE_SERVICES}


def _wait_serving(service: Service, token: str, stop: threading.Event, deadline_s: float) -> dict[str, float]:
    """Wall times at which a turn (Postgres) and a working-memory key (Redis) were accepted
    again, and /ready answered 200 (it requires Neo4j too). Polled from the start of the
    restore, each on its own so that a request waiting on a store still down delays no other:
    Redis and Postgres serve before the graph is rebuilt."""
    probes = {
        "postgres": lambda c: (
            c.post("/v1/episodic/probe/probe/turns", json={"role": "user", "content": "recovery probe"}).status_code
            == 201
        ),
        "redis": lambda c: c.put("/v1/working/probe/probe/context/probe", json={"value": 1}).status_code == 204,
        "ready": lambda c: c.get("/ready").status_code == 200,
    }
    end = time.monotonic() + deadline_s

    def poll(name: str) -> float:
        with httpx.Client(base_url=service.url, headers={"Authorization": f"Bearer {token}"}, timeout=10) as client:
            while not stop.is_set():
                if time.monotonic() > end:
                    raise MemstackError(
                        f"the service did not serve again within {deadline_s:.0f}s after the restore; see {service.log}"
                    )
                try:
                    if probes[name](client):
                        return time.time()
                except httpx.HTTPError:
                    pass
                time.sleep(0.1)
        raise MemstackError("the restore failed")

    with ThreadPoolExecutor(max_workers=len(probes)) as pool:
        futures = {name: pool.submit(poll, name) for name in probes}
        return {name: future.result() for name, future in futures.items()}


def _restore_serving(
    stack: LocalStack, service: Service, token: str, backup_id: str
) -> tuple[dict[str, Any], dict[str, float]]:
    """Restore to the latest point while polling the service; (the restore's report, when
    each store served again)."""
    stop = threading.Event()
    with ThreadPoolExecutor(max_workers=1) as pool:
        serving = pool.submit(_wait_serving, service, token, stop, RECOVERY_TIMEOUT_S)
        try:
            report = restore(stack, backup_id, force=True)
        except BaseException:
            stop.set()
            raise
        return report, serving.result()


def run_round(
    stack: LocalStack,
    service: Service,
    tenant: str,
    token: str,
    options: DrillOptions,
    number: int,
    progress: Progress = _quiet,
) -> dict[str, Any]:
    ledger = Ledger(run=f"{number}-{os.urandom(3).hex()}")
    prefix = f"round {number}/{options.rounds}:"
    backup_started, backup_done = threading.Event(), threading.Event()
    outcome: dict[str, Any] = {}

    def take_backup() -> None:
        progress(f"{prefix} backup started, writes go on until it ends")
        outcome["backup_start"] = time.time()
        try:
            outcome["manifest"] = backup(stack)
        except BaseException as exc:  # reported after the writer stops
            outcome["error"] = exc
        finally:
            outcome["backup_end"] = time.time()
            backup_done.set()

    def start_backup() -> None:
        threading.Thread(target=take_backup, daemon=True).start()

    started = time.time()
    progress(
        f"{prefix} writing {options.writes} turns, facts and working-memory keys, {options.concurrency} at a time;"
        f" the backup starts after {options.backup_at:.0%} of them"
    )
    asyncio.run(_write_round(service, token, ledger, options, backup_started, backup_done, start_backup))
    if "error" in outcome:
        raise outcome["error"]
    manifest = outcome["manifest"]
    wal_dir = stack.postgres().wal_dir
    # The disaster strikes as the last write is acknowledged; what is archived by then is all
    # that Postgres can get back.
    archived_until = last_archived_commit(wal_dir)
    progress(f"{prefix} disaster: every store killed and its data moved aside")
    disaster_at = time.time()
    moved = _disaster(stack)
    progress(f"{prefix} restoring from backup {manifest['id']} to the latest point, the service polled")
    restore_started = time.time()
    report, serving = _restore_serving(stack, service, token, manifest["id"])
    progress(f"{prefix} reconciling the acknowledged writes with each store")

    present = {
        "postgres": _present_postgres(stack, tenant, ledger.run),
        "neo4j": _present_neo4j(stack, tenant, ledger.run),
        "redis": _present_redis(service, token, ledger.run),
    }
    rows = {store: _reconcile(store, ledger, present[store]) for store in ("postgres", "redis", "neo4j")}
    appendfsync = stack.state().appendfsync
    # Neo4j is back once rebuilt (ready_s counts from the restore's start) and the service is ready.
    neo4j_back = max(serving["ready"], restore_started + report["ready_s"]["neo4j"])
    rto = {
        "postgres": serving["postgres"] - disaster_at,
        "redis": serving["redis"] - disaster_at,
        "neo4j": neo4j_back - disaster_at,
    }
    archived_ts = archived_until.timestamp() if archived_until else 0.0
    pg = rows["postgres"]
    pg["target"] = "nothing lost acknowledged before the last commit in the WAL archive"
    pg["lost_before_archive"] = sum(1 for t in pg["lost_acked_times"] if t < archived_ts)
    pg["passed"] = pg["lost_before_archive"] == 0 and pg["duplicated"] == 0
    rd = rows["redis"]
    rd["target"] = f"RPO <= {REDIS_RPO_TARGET_S[appendfsync]:g} s (appendfsync {appendfsync})"
    rd["passed"] = (
        rd["rpo_s"] <= REDIS_RPO_TARGET_S[appendfsync]
        and (appendfsync != "always" or rd["lost"] == 0)
        and rd["duplicated"] == 0
    )
    nj = rows["neo4j"]
    nj["target"] = "the same turns and facts as Postgres"
    nj["passed"] = nj["ids"] == pg["ids"] and nj["duplicated"] == 0 and pg["duplicated"] == 0
    for store, row in rows.items():
        row["rto_s"] = round(rto[store], 2)
        del row["ids"], row["lost_acked_times"]
    return {
        "round": number,
        "run": ledger.run,
        "writes_attempted": len(ledger.writes),
        "writes_acknowledged": sum(1 for w in ledger.writes if w.acked is not None),
        "write_seconds": round(disaster_at - started, 2),
        "backup_id": manifest["id"],
        "backup_seconds": manifest["seconds"],
        "backup_bytes": manifest["bytes"],
        "backup_latency": _latency(ledger, outcome["backup_start"], outcome["backup_end"]),
        "archived_until": archived_until.isoformat() if archived_until else None,
        "disaster_at": datetime.fromtimestamp(disaster_at, UTC).isoformat(),
        "moved_aside": moved,
        "restore": report,
        "service_rto_s": round(max(serving.values()) - disaster_at, 2),
        "stores": rows,
        "passed": all(r["passed"] for r in rows.values()),
    }


def _round_leftovers(stack: LocalStack, result: dict[str, Any]) -> list[Path]:
    """What a round left on disk: the attic directories its disaster and its restore moved the
    stores' data into (about 100 MB each on a small stack), and its backup set."""
    attic = (stack.home / "attic").resolve()
    moved = [*result["moved_aside"].values(), *result["restore"].get("moved_aside", {}).values()]
    dirs = {Path(p).resolve().parent for p in moved if p and p != "None"}
    backup_set = sets.set_path(sets.default_sets_dir(stack.home), result["backup_id"])
    return [
        *sorted(d for d in dirs if d.parent == attic and d.is_dir()),
        *([backup_set] if backup_set.is_dir() else []),
    ]


def _clear_leftovers(stack: LocalStack, result: dict[str, Any], options: DrillOptions, progress: Progress) -> dict:
    """A passed round's leftovers removed (unless --keep); a failed round's kept, and where said."""
    paths = _round_leftovers(stack, result)
    prefix = f"round {result['round']}/{options.rounds}:"
    if result["passed"] and not options.keep:
        for path in paths:
            shutil.rmtree(path)
        progress(f"{prefix} passed; removed its data moved aside and its backup set ({len(paths)} directories)")
        return {"removed": [str(p) for p in paths]}
    why = "failed" if not result["passed"] else "--keep"
    progress(f"{prefix} {why}: kept for inspection: {', '.join(str(p) for p in paths)}")
    return {"kept": [str(p) for p in paths]}


def run(stack: LocalStack, options: DrillOptions, progress: Progress = _quiet) -> dict[str, Any]:
    """The drill's results; `progress` is told each phase as it starts."""
    if options.writes < 10:
        raise MemstackError("--writes must be at least 10")
    clock = time.monotonic()
    with (
        stack_for_run(stack.backend, CORE_SERVICES, progress),
        tempfile.TemporaryDirectory(prefix="memstack-drill-") as workdir,
    ):
        progress("starting the stack's stores, migrating them and starting the memory service")
        service = Service(stack, Path(workdir), options.rounds)
        try:
            rounds = []
            for n, (tenant, token) in enumerate(service.tokens):
                rounds.append(run_round(stack, service, tenant, token, options, n + 1, progress))
                rounds[-1]["leftovers"] = _clear_leftovers(stack, rounds[-1], options, progress)
        finally:
            service.close()
    return {
        "options": options.__dict__,
        "rounds": rounds,
        "seconds": round(time.monotonic() - clock, 1),
        "passed": all(r["passed"] for r in rounds),
    }


def print_results(out, results: dict[str, Any]) -> None:
    from rich.table import Table

    for r in results["rounds"]:
        table = Table(
            title=f"drill round {r['round']}: {r['writes_acknowledged']} writes acknowledged in "
            f"{r['write_seconds']:.1f} s, backup {r['backup_id']} mid-stream, then every store killed "
            f"and wiped; service back after {r['service_rto_s']:.1f} s"
        )
        for column in (
            "store",
            "acknowledged",
            "present",
            "lost",
            "duplicated",
            "unexpected",
            "RPO s",
            "RTO s",
            "target",
            "result",
        ):
            table.add_column(column, justify="left" if column in ("store", "target") else "right")
        for store, row in r["stores"].items():
            table.add_row(
                store,
                str(row["acknowledged"]),
                str(row["present"]),
                str(row["lost"]),
                str(row["duplicated"]),
                str(row["unexpected"]),
                f"{row['rpo_s']:.2f}",
                f"{row['rto_s']:.1f}",
                row["target"],
                "[green]pass[/]" if row["passed"] else "[red]FAIL[/]",
            )
        out.print(table)
        lat = r["backup_latency"]
        before, during = lat["before_backup"], lat["during_backup"]
        if "p99_ms" in before and "p99_ms" in during:
            out.print(
                f"write latency before the backup p50 {before['p50_ms']} ms / p99 {before['p99_ms']} ms; during it "
                f"p50 {during['p50_ms']} ms / p99 {during['p99_ms']} ms ({during['writes']} writes)"
            )
    out.print(f"drill {'passed' if results['passed'] else 'FAILED'} in {results['seconds']:.0f} s")
