"""Load profile of the memory service, with the SLO gate.

The task mix is working-memory heavy (reads far more than writes, plus turns), with a smaller
share of durable writes, `remember` and fact writes. Every request acts for a random tenant,
user and conversation, so the Locust users (cheap greenlets for the generator, which shares
the machine) spread the load over many tenants and conversations. Each user sends on its own
Poisson schedule (see `wait_time`), so the arrivals do not depend on the answers; how late each
request leaves against that schedule is recorded, and gated (see slo.summarize). Requests are
named by route group (`working:read ...`) so that the gate can merge the working-memory groups
into one p99.

Extra options (also as environment variables, for `memstack load` and CI):
  --tokens-file FILE       lines `<tenant> <token>` (MEMSTACK_LOAD_TOKENS)
  --rate R                 target total requests/s over all users; 0 = as fast as possible
  --wm-p99-ms MS           gate: working-memory p99 must stay below this (default 10)
  --max-failure-ratio F    gate: failures / requests must not exceed this (default 0.001)
  --summary-file FILE      where to write the JSON summary per route group
  --warmup-s S             seconds of load, within --run-time, after which statistics restart:
                           connection set-up, pool growth and first-query planning stay out of the
                           steady-state percentiles the SLO is about

User classes (name one on the command line): MemoryClient (the mixed profile) and
WorkingMemoryClient (working memory only). At the end the run exits 1 when a gate is violated.
"""

from __future__ import annotations

import json
import os
import random
import sys
import time
import uuid
from collections import Counter

import gevent
from locust import FastHttpUser, events

# slo.py is next to this file; Locust does not put it on the path.
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import slo

KEYS = [f"k{i}" for i in range(8)]
CONVERSATIONS_PER_USER = 5
USERS_PER_TENANT = 20


@events.init_command_line_parser.add_listener
def _options(parser):
    parser.add_argument("--tokens-file", env_var="MEMSTACK_LOAD_TOKENS", default="", help="lines '<tenant> <token>'")
    parser.add_argument(
        "--rate", type=float, env_var="MEMSTACK_LOAD_RATE", default=0.0, help="total req/s; 0 = unpaced"
    )
    parser.add_argument("--wm-p99-ms", type=float, env_var="MEMSTACK_LOAD_WM_P99_MS", default=10.0)
    parser.add_argument("--max-failure-ratio", type=float, env_var="MEMSTACK_LOAD_MAX_FAILURE_RATIO", default=0.001)
    parser.add_argument("--summary-file", env_var="MEMSTACK_LOAD_SUMMARY", default="")
    parser.add_argument(
        "--warmup-s",
        type=float,
        env_var="MEMSTACK_LOAD_WARMUP_S",
        default=0.0,
        help="seconds of load before the statistics start (part of --run-time)",
    )


def _tokens(path: str) -> list[tuple[str, str]]:
    pairs = []
    with open(path) as handle:
        for line in handle:
            if line.strip() and not line.startswith("#"):
                tenant, token = line.split()
                pairs.append((tenant, token))
    if not pairs:
        raise SystemExit(f"no tokens in {path}")
    return pairs


_TOKENS: list[tuple[str, str]] = []
_HEADERS: dict[str, dict[str, str]] = {}
# How late requests left against their schedule: rounded ms -> count (see slo.summarize).
_SEND_LAG: Counter = Counter()


@events.test_start.add_listener
def _load_tokens(environment, **_):
    if not environment.parsed_options.tokens_file:
        raise SystemExit("--tokens-file (MEMSTACK_LOAD_TOKENS) is required")
    _TOKENS[:] = _tokens(environment.parsed_options.tokens_file)
    _HEADERS.update(
        {token: {"Authorization": f"Bearer {token}", "Content-Type": "application/json"} for _, token in _TOKENS}
    )


@events.init.add_listener
def _refresh_loop_clock(environment, **_):
    """gevent's timers count from the event loop's cached clock, last read before Locust and this
    file were imported: without a fresh reading, --run-time (and the warm-up) ended up to a
    second early, and a 20 s run measured 19 s."""
    gevent.get_hub().loop.update_now()


# When the run stopped (its --run-time ended, or a signal): the end of the measured window.
_STOPPED_AT: list[float] = []


@events.test_stopping.add_listener
def _record_stop(environment, **_):
    _STOPPED_AT.append(time.time())


@events.test_start.add_listener
def _start_warmup(environment, **_):
    warmup = environment.parsed_options.warmup_s
    if warmup > 0 and environment.runner is not None:
        gevent.spawn_later(warmup, _reset_statistics, environment.runner.stats)


def _reset_statistics(stats) -> None:
    stats.reset_all()
    _SEND_LAG.clear()


# With worker processes (--processes), each worker counts its own send lag: it travels to the
# master with every stats report, where the gate reads it.
@events.report_to_master.add_listener
def _report_send_lag(client_id, data, **_):
    data["memstack_send_lag"] = dict(_SEND_LAG)
    _SEND_LAG.clear()


@events.worker_report.add_listener
def _merge_send_lag(client_id, data, **_):
    _SEND_LAG.update({int(ms): count for ms, count in data.get("memstack_send_lag", {}).items()})


class _MemoryUser(FastHttpUser):
    """What both profiles share: pacing, tokens and the requests. The profiles differ only in
    their task weights; Locust would merge a parent's @task methods into a child's tasks, so
    neither profile inherits from the other."""

    abstract = True

    # How far a user may fall behind its schedule (a slow answer) and then catch up at once.
    MAX_BACKLOG_S = 1.0

    def wait_time(self) -> float:
        """Open-model pacing: each user sends on its own Poisson schedule at rate/users, whatever
        the answers take, so the users together send a Poisson stream at --rate, as a fleet of
        independent agents does. Locust's constant_throughput re-anchors each user's period at
        the end of its last answer: users answered together stay together, and within seconds
        all of them send in lockstep. Measured at 300 req/s on the local stack: p50 8-9 ms
        under lockstep (server-side p50 4 ms, the burst queue) while a lone client sending
        meanwhile saw 0.9 ms."""
        options = self.environment.parsed_options
        if not options.rate:
            return 0
        now = time.monotonic()
        user_rate = options.rate / max(options.num_users, 1)
        scheduled = getattr(self, "_next_send", now)
        behind = now - self.MAX_BACKLOG_S - scheduled
        if behind > 0:
            self._drop(behind * user_rate)
        self._next_send = max(scheduled, now - self.MAX_BACKLOG_S) + random.expovariate(user_rate)
        return max(0.0, self._next_send - now)

    def _drop(self, expected_sends: float) -> None:
        """The sends skipped when a user catches up: each is a failed request of the `dropped`
        group, so a generator or service that cannot keep up fails the gate."""
        self._drop_debt = getattr(self, "_drop_debt", 0.0) + expected_sends
        count, self._drop_debt = divmod(self._drop_debt, 1.0)
        for _ in range(int(count)):
            self.environment.events.request.fire(
                request_type="SCHEDULE",
                name=slo.DROPPED_NAME,
                response_time=0,
                response_length=0,
                exception=RuntimeError(f"user fell more than {self.MAX_BACKLOG_S:g} s behind schedule"),
                context={},
            )

    def _start_request(self) -> None:
        """Every request starts here. It records how late it leaves against the user's schedule
        (the gate's send lag), and acts for a random tenant, user and conversation: few Locust
        users (cheap for the generator) still spread the load over many tenants and conversations."""
        scheduled = getattr(self, "_next_send", None)
        if scheduled is not None:
            _SEND_LAG[round(max(0.0, time.monotonic() - scheduled) * 1000)] += 1
        _, token = random.choice(_TOKENS)
        self.user = f"u{random.randrange(USERS_PER_TENANT)}"
        self.headers = _HEADERS[token]

    def _conversation(self) -> str:
        # Conversation ids belong to one user of a tenant, so each user has its own.
        return f"{self.user}-c{random.randrange(CONVERSATIONS_PER_USER)}"

    def _working(self) -> str:
        self._start_request()
        return f"/v1/working/{self.user}/{self._conversation()}"

    def _get(self, path: str, name: str):
        # A key that was never written (404) is a correct answer, not a failure.
        with self.client.get(path, headers=self.headers, name=name, catch_response=True) as response:
            if response.status_code in (200, 404):
                response.success()

    def read_key(self):
        self._get(f"{self._working()}/context/{random.choice(KEYS)}", "working:read GET context/{key}")

    def read_context(self):
        self._get(f"{self._working()}/context", "working:read GET context")

    def read_turns(self):
        self._get(f"{self._working()}/turns?limit=10", "working:read GET turns")

    def write_key(self):
        body = {"value": {"step": random.randrange(1000), "note": "x" * random.randrange(16, 256)}, "ttl_seconds": 600}
        self.client.put(
            f"{self._working()}/context/{random.choice(KEYS)}",
            data=json.dumps(body),
            headers=self.headers,
            name="working:write PUT context/{key}",
        )

    def add_turn(self):
        body = {"role": random.choice(("user", "assistant")), "content": f"turn {uuid.uuid4().hex}"}
        self.client.post(
            f"{self._working()}/turns", data=json.dumps(body), headers=self.headers, name="working:write POST turns"
        )

    def store_turn(self):
        self._start_request()
        body = {"role": "user", "content": f"durable turn about topic {random.randrange(50)}"}
        self.client.post(
            f"/v1/episodic/{self.user}/{self._conversation()}/turns",
            data=json.dumps(body),
            headers=self.headers,
            name="episodic POST turns",
        )

    def remember(self):
        self._start_request()
        body = {"query": f"what about topic {random.randrange(50)}", "top_k": 5}
        self.client.post(f"/v1/remember/{self.user}", data=json.dumps(body), headers=self.headers, name="remember POST")

    def learn_fact(self):
        self._start_request()
        body = {"claim": f"the user likes topic {random.randrange(50)}", "confidence": 0.7}
        self.client.post(
            f"/v1/semantic/{self.user}/facts", data=json.dumps(body), headers=self.headers, name="facts POST"
        )


# Weights: working memory dominates, reads far above writes.
WORKING_TASKS = {
    _MemoryUser.read_key: 50,
    _MemoryUser.read_context: 10,
    _MemoryUser.read_turns: 10,
    _MemoryUser.write_key: 15,
    _MemoryUser.add_turn: 8,
}


class MemoryClient(_MemoryUser):
    """The mixed profile: working memory, plus durable turns, `remember` and fact writes."""

    tasks = {**WORKING_TASKS, _MemoryUser.store_turn: 2, _MemoryUser.remember: 2, _MemoryUser.learn_fact: 1}


class WorkingMemoryClient(_MemoryUser):
    """Working memory only: the service's hot path without durable writes."""

    tasks = WORKING_TASKS


def _entries(stats) -> list[dict]:
    return [
        {
            "name": e.name,
            "num_requests": e.num_requests,
            "num_failures": e.num_failures,
            "max_response_time": e.max_response_time,
            "response_times": dict(e.response_times),
        }
        for e in stats.entries.values()
    ]


@events.quitting.add_listener
def _gate(environment, **_):
    options = environment.parsed_options
    total = environment.stats.total
    # The window from the statistics' (re)start to the stop, not to the last request: at a low
    # rate that one may leave well before the end, and the rates would come out too high.
    end = _STOPPED_AT[0] if _STOPPED_AT else (total.last_request_timestamp or total.start_time)
    duration = max(end - total.start_time, 0.0)
    summary = slo.summarize(
        _entries(environment.stats),
        duration,
        options.wm_p99_ms,
        options.max_failure_ratio,
        send_lag=_SEND_LAG,
        offered_rps=options.rate,
    )
    summary["warmup_s"] = options.warmup_s
    if options.summary_file:
        with open(options.summary_file, "w") as handle:
            json.dump(summary, handle, indent=2)
    for violation in summary["violations"]:
        print(f"SLO violated: {violation}")
    if not summary["passed"]:
        environment.process_exit_code = 1
