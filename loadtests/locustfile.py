"""Load profile of the memory service, with the SLO gate.

The task mix is working-memory heavy (reads far more than writes, plus turns), with a smaller
share of durable writes, `remember` and fact writes. Every request acts for a random tenant,
user and conversation, so a few Locust users (cheap for the generator, which shares the
machine) spread the load over many tenants and conversations; each user starts at a random
phase so that users do not send in lockstep. Requests are named by route group
(`working:read ...`) so that the gate can merge the working-memory groups into one p99.

Extra options (also as environment variables, for `memstack load` and CI):
  --tokens-file FILE       lines `<tenant> <token>` (MEMSTACK_LOAD_TOKENS)
  --rate R                 target total requests/s over all users; 0 = as fast as possible
  --wm-p99-ms MS           gate: working-memory p99 must stay below this (default 10)
  --max-failure-ratio F    gate: failures / requests must not exceed this (default 0.001)
  --summary-file FILE      where to write the JSON summary per route group

User classes (name one on the command line): MemoryClient (the mixed profile) and
WorkingMemoryClient (working memory only). At the end the run exits 1 when a gate is violated.
"""
from __future__ import annotations

import json
import os
import random
import sys
import uuid

import gevent
from locust import FastHttpUser, constant_throughput, events, task

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import slo  # noqa: E402  (next to this file; Locust does not put it on the path)

KEYS = [f"k{i}" for i in range(8)]
CONVERSATIONS_PER_USER = 5
USERS_PER_TENANT = 20


@events.init_command_line_parser.add_listener
def _options(parser):
    parser.add_argument("--tokens-file", env_var="MEMSTACK_LOAD_TOKENS", default="", help="lines '<tenant> <token>'")
    parser.add_argument("--rate", type=float, env_var="MEMSTACK_LOAD_RATE", default=0.0, help="total req/s; 0 = unpaced")
    parser.add_argument("--wm-p99-ms", type=float, env_var="MEMSTACK_LOAD_WM_P99_MS", default=10.0)
    parser.add_argument("--max-failure-ratio", type=float, env_var="MEMSTACK_LOAD_MAX_FAILURE_RATIO", default=0.001)
    parser.add_argument("--summary-file", env_var="MEMSTACK_LOAD_SUMMARY", default="")


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


@events.test_start.add_listener
def _load_tokens(environment, **_):
    if not environment.parsed_options.tokens_file:
        raise SystemExit("--tokens-file (MEMSTACK_LOAD_TOKENS) is required")
    _TOKENS[:] = _tokens(environment.parsed_options.tokens_file)
    _HEADERS.update({token: {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
                     for _, token in _TOKENS})


class MemoryClient(FastHttpUser):
    def wait_time(self):
        options = self.environment.parsed_options
        if not options.rate:
            return 0
        return constant_throughput(options.rate / max(options.num_users, 1))(self)

    def on_start(self):
        options = self.environment.parsed_options
        if options.rate:
            # Users spawned together would send in lockstep: bursts of every user at once every
            # period, which no fleet of independent agents does. Start each at a random phase.
            gevent.sleep(random.random() * max(options.num_users, 1) / options.rate)

    def _pick(self) -> None:
        """Each request acts for a random tenant, user and conversation: few Locust users (cheap
        for the generator) still spread the load over many tenants and conversations."""
        _, token = random.choice(_TOKENS)
        self.user = f"u{random.randrange(USERS_PER_TENANT)}"
        self.headers = _HEADERS[token]

    def _conversation(self) -> str:
        # Conversation ids belong to one user of a tenant, so each user has its own.
        return f"{self.user}-c{random.randrange(CONVERSATIONS_PER_USER)}"

    def _working(self) -> str:
        self._pick()
        return f"/v1/working/{self.user}/{self._conversation()}"

    def _get(self, path: str, name: str):
        # A key that was never written (404) is a correct answer, not a failure.
        with self.client.get(path, headers=self.headers, name=name, catch_response=True) as response:
            if response.status_code in (200, 404):
                response.success()

    @task(50)
    def read_key(self):
        self._get(f"{self._working()}/context/{random.choice(KEYS)}", "working:read GET context/{key}")

    @task(10)
    def read_context(self):
        self._get(f"{self._working()}/context", "working:read GET context")

    @task(10)
    def read_turns(self):
        self._get(f"{self._working()}/turns?limit=10", "working:read GET turns")

    @task(15)
    def write_key(self):
        body = {"value": {"step": random.randrange(1000), "note": "x" * random.randrange(16, 256)}, "ttl_seconds": 600}
        self.client.put(f"{self._working()}/context/{random.choice(KEYS)}", data=json.dumps(body),
                        headers=self.headers, name="working:write PUT context/{key}")

    @task(8)
    def add_turn(self):
        body = {"role": random.choice(("user", "assistant")), "content": f"turn {uuid.uuid4().hex}"}
        self.client.post(f"{self._working()}/turns", data=json.dumps(body), headers=self.headers,
                         name="working:write POST turns")

    @task(2)
    def store_turn(self):
        self._pick()
        body = {"role": "user", "content": f"durable turn about topic {random.randrange(50)}"}
        self.client.post(f"/v1/episodic/{self.user}/{self._conversation()}/turns",
                         data=json.dumps(body), headers=self.headers, name="episodic POST turns")

    @task(2)
    def remember(self):
        self._pick()
        body = {"query": f"what about topic {random.randrange(50)}", "top_k": 5}
        self.client.post(f"/v1/remember/{self.user}", data=json.dumps(body), headers=self.headers, name="remember POST")

    @task(1)
    def learn_fact(self):
        self._pick()
        body = {"claim": f"the user likes topic {random.randrange(50)}", "confidence": 0.7}
        self.client.post(f"/v1/semantic/{self.user}/facts", data=json.dumps(body), headers=self.headers,
                         name="facts POST")


class WorkingMemoryClient(MemoryClient):
    """Working memory only (same weights): the service's hot path without durable writes."""

    tasks = {MemoryClient.read_key: 50, MemoryClient.read_context: 10, MemoryClient.read_turns: 10,
             MemoryClient.write_key: 15, MemoryClient.add_turn: 8}


PROFILES = {"mixed": MemoryClient, "working": WorkingMemoryClient}


def _entries(stats) -> list[dict]:
    return [{"name": e.name, "num_requests": e.num_requests, "num_failures": e.num_failures,
             "max_response_time": e.max_response_time, "response_times": dict(e.response_times)}
            for e in stats.entries.values()]


@events.quitting.add_listener
def _gate(environment, **_):
    options = environment.parsed_options
    total = environment.stats.total
    duration = max(total.last_request_timestamp - total.start_time, 0.0) if total.num_requests else 0.0
    summary = slo.summarize(_entries(environment.stats), duration, options.wm_p99_ms, options.max_failure_ratio)
    if options.summary_file:
        with open(options.summary_file, "w") as handle:
            json.dump(summary, handle, indent=2)
    for violation in summary["violations"]:
        print(f"SLO violated: {violation}")
    if not summary["passed"]:
        environment.process_exit_code = 1
