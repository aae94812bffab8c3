"""One chaos run: the stack in containers, the service image on its network under a Locust load,
a ledger writer beside it, one fault in the middle, then the measurements.

Timeline: `warmup_s` + `before_s` of load, the fault (kill + start, pause, or network cut), `after_s` of load.
The ledger writer sends sequence-numbered writes (episodic turns and facts: Postgres, projected to
Neo4j; working-memory keys: Redis) through the real routes and records what was acknowledged."""

from __future__ import annotations

import asyncio
import csv
import json
import math
import os
import statistics
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from memstack.chaos.faults import DEFAULT_DURATION_S, Fault, Window, inject
from memstack.errors import MemstackError

RECORDER = Path(__file__).resolve().parent / "recorder.py"
# Bounds the recovery suites assert (and the table shows): working-memory p99 after recovery,
# and the acknowledged writes a store may lose (Redis: memstack.local.redis_server.LOSS_WINDOW_S).
# The p99 after recovery must be under the SLO's 10 ms, or, where the host does not give that
# without any fault (the p99 of the same run before the fault: other processes on the cores,
# Locust among them), back within BEFORE_FACTOR of that before-fault p99.
WM_P99_AFTER_MS = 10.0
BEFORE_FACTOR = 1.5
AFTER_WINDOW_S = 30.0
# Both p99s are the median of the p99s of SLICE_S slices (six after, four before). A service that
# stays slow after recovery raises most slices, and fails if it does so for half the window or
# more; a few seconds of noise from another process on a shared runner raises one or two. One p99
# over the whole 30 s failed CI once (13.3 ms, 6.6 ms before a Redis pause, a 10 ms bound).
SLICE_S = 5.0
# The longest a store may take to answer again after its fault before the run gives up on it.
MAX_RESTART_S = 600.0
# A bound on recovery (first success after the fault was undone, no failure after it), far above
# what a healthy client reconnect takes: a service that never reconnects fails it.
RECOVERY_BOUND_S = 15.0


@dataclass
class ChaosOptions:
    fault: str
    duration_s: float | None = None
    profile: str = "working"
    rate: float = 100.0
    users: int = 20
    # Load before the fault: first a warm-up (connections opened, pools grown; not measured),
    # then the window whose working-memory p99 is the "before" column, long enough (2,000
    # requests at 100/s) that its p99 is not two or three stragglers.
    warmup_s: float = 8.0
    before_s: float = 20.0
    # Load after the fault: the 30 s window after recovery, plus room to recover.
    after_s: float = 40.0
    # Durable writes share the service's event loop and the machine's cores with the load; a
    # dozen a second keeps the ledger's resolution (Redis loss in 1 s steps) without being the load.
    ledger_rate: float = 12.0
    results: Path | None = None


@dataclass
class ChaosResult:
    fault: str
    profile: str
    duration_s: float
    window: Window
    failed: int = 0
    statuses: dict[int, int] = field(default_factory=dict)
    failures_not_naming_store: int = 0
    recovery_s: float | None = None
    # The slowest request answered during the fault: a store that hangs the service shows here.
    slowest_during_s: float | None = None
    wm_p99_after_ms: float | None = None
    # The same measure over the load before the fault: what the machine gives without one.
    wm_p99_before_ms: float | None = None
    # Each slice's p99 after recovery, in order, and the plain p99 over the whole after window.
    wm_p99_after_slices_ms: list[float] = field(default_factory=list)
    wm_p99_after_whole_ms: float | None = None
    wm_requests_after: int = 0
    lost: dict[str, int] = field(default_factory=dict)
    acknowledged: dict[str, int] = field(default_factory=dict)
    redis_lost_span_s: float = 0.0
    requests: int = 0
    # The bounds the run broke (`judge`), each one line; empty: it passed.
    violations: list[str] = field(default_factory=list)

    @property
    def wm_p99_bound_ms(self) -> float:
        """The bound on the p99 after recovery: the SLO's, or the host's own tail without a fault."""
        return max(WM_P99_AFTER_MS, BEFORE_FACTOR * (self.wm_p99_before_ms or 0.0))

    def row(self) -> dict[str, Any]:
        return {
            "fault": self.fault,
            "profile": self.profile,
            "duration_s": round(self.duration_s, 1),
            "outage_s": round(self.window.end - self.window.start, 2),
            "requests": self.requests,
            "failed": self.failed,
            "statuses": {str(k): v for k, v in sorted(self.statuses.items())},
            "failures_not_naming_store": self.failures_not_naming_store,
            "recovery_s": None if self.recovery_s is None else round(self.recovery_s, 2),
            "slowest_during_s": self.slowest_during_s,
            "wm_p99_after_ms": self.wm_p99_after_ms,
            "wm_p99_before_ms": self.wm_p99_before_ms,
            "wm_p99_bound_ms": round(self.wm_p99_bound_ms, 2),
            "wm_p99_after_slices_ms": self.wm_p99_after_slices_ms,
            "wm_p99_after_whole_ms": self.wm_p99_after_whole_ms,
            "wm_requests_after": self.wm_requests_after,
            "acknowledged": self.acknowledged,
            "lost": self.lost,
            "redis_lost_span_s": round(self.redis_lost_span_s, 3),
            "passed": not self.violations,
            "violations": self.violations,
        }


def judge(result: ChaosResult, appendfsync: str) -> list[str]:
    """The bounds a fault under load must keep, for `memstack chaos` and the chaos suite alike:
    every failure a 503 naming the store (never a 500, never a hang), recovery within
    RECOVERY_BOUND_S, a paused store's requests within the request deadline, the working-memory
    p99 after recovery within its bound, no acknowledged write lost but Redis's within its fsync
    policy's window, and the ledger acknowledged by every store."""
    from memory_core.service.config import ServiceSettings
    from memstack.local.redis_server import LOSS_WINDOW_S

    store, _, kind = result.fault.partition("-")
    broken = []
    if result.failures_not_naming_store:
        broken.append(f"{result.failures_not_naming_store} failed requests were not a 503 naming {store}")
    if result.recovery_s is None or result.recovery_s >= RECOVERY_BOUND_S:
        broken.append(f"recovery {result.recovery_s} s, bound {RECOVERY_BOUND_S:g} s")
    deadline_s = ServiceSettings.model_fields["request_timeout_s"].default
    if kind == "pause" and (result.slowest_during_s is None or result.slowest_during_s >= deadline_s):
        broken.append(f"slowest request during the pause {result.slowest_during_s} s, deadline {deadline_s:g} s")
    if result.wm_p99_after_ms is None or result.wm_p99_after_ms >= result.wm_p99_bound_ms:
        broken.append(
            f"working-memory p99 after recovery {result.wm_p99_after_ms} ms, bound {result.wm_p99_bound_ms:.1f} ms"
        )
    for name in ("postgres", "neo4j") if store == "redis" else ("postgres", "neo4j", "redis"):
        if result.lost.get(name):
            broken.append(f"{result.lost[name]} acknowledged {name} writes lost")
    if store == "redis" and result.redis_lost_span_s > LOSS_WINDOW_S[appendfsync]:
        broken.append(
            f"acknowledged Redis writes lost over {result.redis_lost_span_s:.2f} s, "
            f"more than appendfsync {appendfsync}'s {LOSS_WINDOW_S[appendfsync]:g} s"
        )
    if not result.acknowledged or min(result.acknowledged.values()) == 0:
        broken.append(f"the ledger was not acknowledged by every store: {result.acknowledged}")
    return broken


# --- the ledger writer ---------------------------------------------------------------------------


class LedgerWriter:
    """Paced writes through the service's routes in a thread of its own; records acknowledgements,
    and each request as a row of the request log's shape (its failures count as the fault's)."""

    def __init__(self, url: str, token: str, rate: float) -> None:
        from memstack.recovery.drill import Ledger

        self.url, self.token, self.rate = url, token, rate
        self.ledger = Ledger(run=f"chaos-{os.urandom(3).hex()}")
        # (start epoch s, name, status, response time ms, failed, start of a failed body)
        self.requests: list[tuple[float, str, int, float, bool, str]] = []
        self._in_flight: dict[int, tuple[float, str]] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=lambda: asyncio.run(self._run()), daemon=True)

    async def _sent(self, request: httpx.Request) -> None:
        self._in_flight[id(request)] = (time.time(), f"ledger {request.method} {request.url.path.split('/')[2]}")

    async def _answered(self, response: httpx.Response) -> None:
        start, name = self._in_flight.pop(id(response.request))
        failed = response.status_code >= 400
        body = (await response.aread()).decode(errors="replace")[:160] if failed else ""
        self.requests.append((start, name, response.status_code, (time.time() - start) * 1000, failed, body))

    async def _run(self) -> None:
        from memstack.recovery.drill import _write

        async with httpx.AsyncClient(
            base_url=self.url,
            headers={"Authorization": f"Bearer {self.token}"},
            timeout=30,
            event_hooks={"request": [self._sent], "response": [self._answered]},
        ) as client:
            pending: set[asyncio.Task] = set()
            seq, started = 0, time.monotonic()
            while not self._stop.is_set():
                due = started + seq / self.rate
                await asyncio.sleep(max(0.0, due - time.monotonic()))
                pending.add(asyncio.create_task(_write(client, self.ledger, seq)))
                pending = {t for t in pending if not t.done()}
                seq += 1
            if pending:
                await asyncio.wait(pending)
        # Sent and never answered (a timeout, a dropped connection): failed, with no status and
        # no known response time.
        for start, name in self._in_flight.values():
            self.requests.append((start, name, 0, 0.0, True, ""))

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=60)


# --- reconciliation ------------------------------------------------------------------------------


def _present(backend, writer: LedgerWriter, tenant: str) -> dict[str, dict[str, list[int]]]:
    import psycopg
    from neo4j import GraphDatabase

    from memstack.local.postgres_server import admin_url
    from memstack.local.state import load
    from memstack.recovery.drill import _present_redis, _seq

    state = load(backend.home)
    run = writer.ledger.run
    like = f"drill {run} #%"
    with psycopg.connect(admin_url(state.services["postgres"].port, state.credentials), autocommit=True) as conn:
        turns = conn.execute(
            "SELECT content FROM conversation_logs WHERE tenant_id = %s AND content LIKE %s", (tenant, like)
        ).fetchall()
        facts = conn.execute(
            "SELECT summary FROM memory_timeline WHERE tenant_id = %s AND memory_type = 'fact' AND summary LIKE %s",
            (tenant, like),
        ).fetchall()
    postgres = {"turn": [_seq(r[0], run) for r in turns], "fact": [_seq(r[0], run) for r in facts]}
    endpoints = backend.endpoints()
    with GraphDatabase.driver(endpoints.neo4j_uri, auth=(endpoints.neo4j_user, endpoints.neo4j_password)) as driver:
        gturns, _, _ = driver.execute_query("MATCH (t:Turn {tenant_id: $t}) RETURN t.content_preview AS text", t=tenant)
        gfacts, _, _ = driver.execute_query("MATCH (f:Fact {tenant_id: $t}) RETURN f.claim AS text", t=tenant)
    neo4j = {"turn": [_seq(r["text"], run) for r in gturns], "fact": [_seq(r["text"], run) for r in gfacts]}
    redis = _present_redis(writer, writer.token, run)
    return {"postgres": postgres, "neo4j": neo4j, "redis": redis}


def _wait_projected(backend, writer: LedgerWriter, tenant: str, stall_s: float = 60.0, cap_s: float = 600.0) -> dict:
    """The stores' contents once Neo4j has caught up with Postgres (the outbox drains after a
    fault): polled while the graph keeps gaining rows; given up after `stall_s` without progress
    (what is missing then is lost) or `cap_s` in all."""
    started = last_progress = time.monotonic()
    behind = None
    while True:
        present = _present(backend, writer, tenant)
        pg = {k: set(v) for k, v in present["postgres"].items()}
        graph = {k: set(v) for k, v in present["neo4j"].items()}
        missing = sum(len(pg[k] - graph[k]) for k in pg)
        now = time.monotonic()
        if behind is None or missing < behind:
            behind, last_progress = missing, now
        if missing == 0 or now - last_progress > stall_s or now - started > cap_s:
            return present
        time.sleep(2)


# --- the request log -------------------------------------------------------------------------------


def _read_requests(path: Path) -> list[tuple[float, str, int, float, bool, str]]:
    if not path.exists():
        return []
    with open(path, newline="") as f:
        return [(float(r[0]), r[1], int(r[2]), float(r[3]), r[4] == "1", r[5]) for r in csv.reader(f) if len(r) == 6]


def _p99(values: list[float]) -> float | None:
    if len(values) < 20:
        return None
    return round(statistics.quantiles(values, n=100, method="inclusive")[98], 2)


def _slice_p99s(latencies: list[tuple[float, float]], start: float, span_s: float) -> list[float]:
    """The p99 of each whole SLICE_S slice of (sent at, ms) from `start` over `span_s`; a slice
    with too few requests for a p99 is left out."""
    p99s = []
    for i in range(int(span_s // SLICE_S + 1e-9)):
        lo = start + i * SLICE_S
        p99 = _p99([ms for sent, ms in latencies if lo <= sent < lo + SLICE_S])
        if p99 is not None:
            p99s.append(p99)
    return p99s


def _median(values: list[float]) -> float | None:
    return round(statistics.median(values), 2) if values else None


def measure(result: ChaosResult, requests: list, store: str, before_s: float) -> None:
    window = result.window
    # The generator's own skipped sends are not requests the service answered.
    answered = [r for r in requests if not r[1].startswith("dropped")]
    result.requests = len(answered)
    # A request in flight when the fault began is affected by it as much as one sent after.
    during = [r for r in answered if r[0] + r[3] / 1000 >= window.start]
    in_window = [r[3] for r in during if r[0] <= window.end]
    result.slowest_during_s = round(max(in_window) / 1000, 2) if in_window else None
    failures = [r for r in during if r[4]]
    last_failure = max((r[0] for r in failures), default=window.end)
    recovered_from = max(window.end, last_failure)
    after = [r for r in answered if r[0] > recovered_from and not r[4]]
    recovered_at = min((r[0] for r in after), default=None)
    result.recovery_s = None if recovered_at is None else max(0.0, recovered_at - window.end)
    result.failed = len(failures)
    result.statuses = dict(Counter(r[2] for r in failures))
    # A 503 must say which store is down; anything else (500, a timeout: status 0) never qualifies.
    result.failures_not_naming_store = sum(1 for r in failures if not (r[2] == 503 and store in r[5].lower()))
    working = [(r[0], r[3]) for r in answered if r[1].startswith("working") and not r[4]]
    before_start = window.start - before_s
    # Only requests answered before the fault began: one in flight at its start is affected.
    finished_before = [(sent, ms) for sent, ms in working if sent + ms / 1000 < window.start]
    result.wm_p99_before_ms = _median(_slice_p99s(finished_before, before_start, before_s))
    if recovered_at is not None:
        recovered = [(sent, ms) for sent, ms in working if recovered_at <= sent <= recovered_at + AFTER_WINDOW_S]
        result.wm_requests_after = len(recovered)
        result.wm_p99_after_whole_ms = _p99([ms for _, ms in recovered])
        result.wm_p99_after_slices_ms = _slice_p99s(recovered, recovered_at, AFTER_WINDOW_S)
        result.wm_p99_after_ms = _median(result.wm_p99_after_slices_ms)


def reconcile(result: ChaosResult, writer: LedgerWriter, present: dict) -> None:
    from memstack.recovery.drill import _reconcile

    for store in ("postgres", "neo4j", "redis"):
        outcome = _reconcile(store, writer.ledger, present[store])
        result.lost[store] = outcome["lost"]
        result.acknowledged[store] = outcome["acknowledged"]
        if store == "redis" and outcome["lost_acked_times"]:
            times = outcome["lost_acked_times"]
            result.redis_lost_span_s = times[-1] - times[0]


# --- one run ----------------------------------------------------------------------------------------


def fault_duration(fault: Fault, duration_s: float | None) -> float:
    """How long `fault` lasts: the given seconds, from 0 to 120, else the fault's default."""
    duration = DEFAULT_DURATION_S[fault.kind] if duration_s is None else duration_s
    if not (math.isfinite(duration) and 0 <= duration <= 120):
        raise MemstackError(f"--duration must be a number of seconds from 0 to 120, not {duration:g}")
    return duration


def run(backend, options: ChaosOptions) -> ChaosResult:
    """Everything above, on the containers stack of `backend`: brought up if needed, and then
    stopped again at the end (a stack that already ran is left running)."""
    from memstack.load import say_on_stderr
    from memstack.local.backend import CORE_SERVICES, stack_for_run

    with stack_for_run(backend, CORE_SERVICES, say_on_stderr):
        return _run(backend, options)


def _run(backend, options: ChaosOptions) -> ChaosResult:
    from memstack import service as service_cli
    from memstack.images.build import ImageBuilder, stack_image_source, tag
    from memstack.load import (
        DEFAULT_LOCUSTFILE,
        LoadOptions,
        locust_command,
        new_results_dir,
        running_locust,
        stop_process_group,
        write_tokens,
    )
    from memstack.local.state import load as load_state

    fault = Fault.parse(options.fault)
    duration = fault_duration(fault, options.duration_s)
    service_cli.migrate(backend.endpoints().settings())
    ImageBuilder(echo=lambda line: None).build(stack_image_source(backend.home), ["service"])
    workdir = Path(options.results or new_results_dir("chaos")).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    hashes, plain = write_tokens(workdir, 6)
    pairs = [line.split(" ", 1) for line in plain.read_text().splitlines()]
    # The first tenant is the ledger writer's; Locust gets the others.
    (workdir / "locust.tokens").write_text("\n".join(" ".join(p) for p in pairs[1:]) + "\n")
    os.chmod(workdir / "locust.tokens", 0o600)
    tenant, token = pairs[0]
    container, url = backend.run_service(tag("service"), hashes, name="chaos-service")
    # The worker replays the graph outbox: what the inline projection could not write during a fault.
    worker, _ = backend.run_service(tag("service"), hashes, name="chaos-worker", worker=True)
    try:
        container.reload()
        peer_ip = container.attrs["NetworkSettings"]["Networks"][backend.network]["IPAddress"]
        requests_log = workdir / "requests.csv"
        requests_log.unlink(missing_ok=True)
        load = LoadOptions(
            results=workdir, users=options.users, rate=options.rate, profile=options.profile, max_failure_ratio=1.0
        )
        # Locust is stopped `after_s` after the fault ends, however long the store took to come
        # back (a Neo4j restart on a loaded host: minutes); its own limit is only a backstop.
        total_s = math.ceil(options.warmup_s + options.before_s + duration + options.after_s + MAX_RESTART_S)
        command = locust_command(load, url, workdir / "locust.tokens", [DEFAULT_LOCUSTFILE, RECORDER]) + [
            "-t",
            f"{total_s}s",
            "--warmup-s",
            "0",
            "--summary-file",
            str(workdir / "summary.json"),
        ]
        writer = LedgerWriter(url, token, options.ledger_rate)
        with (
            open(workdir / "locust.log", "w") as log,
            running_locust(
                command, log, workdir, env={**os.environ, "MEMSTACK_CHAOS_REQUESTS": str(requests_log)}
            ) as locust,
        ):
            try:
                writer.start()
                time.sleep(options.warmup_s + options.before_s)
                window = inject(backend, fault, duration, peer_ip=peer_ip)
                time.sleep(5)
                writer.stop()
                time.sleep(max(0.0, window.end + options.after_s - time.time()))
                # Locust stops on SIGTERM as at the end of its run time: statistics and request log written.
                stop_process_group(locust, timeout_s=120)
            finally:
                writer.stop()
        result = ChaosResult(fault=fault.name, profile=options.profile, duration_s=duration, window=window)
        with open(workdir / "ledger.csv", "w", newline="") as f:
            csv.writer(f).writerows(writer.requests)
        measure(result, _read_requests(requests_log) + writer.requests, fault.store, options.before_s)
        reconcile(result, writer, _wait_projected(backend, writer, tenant))
        result.violations = judge(result, load_state(backend.home).appendfsync)
        (workdir / "chaos.json").write_text(json.dumps(result.row(), indent=2))
        return result
    finally:
        container.remove(force=True)
        worker.remove(force=True)
