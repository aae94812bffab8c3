"""CPU per request of the service's ASGI app against the floor app's, in process, with no
HTTP server and no load generator: the part of a request the service's own code decides.

Both apps get the same requests of the working profile's mix (loadtests/locustfile.py weights:
key reads 50, whole-context reads 10, turn reads 10, key writes 15, turn appends 8), called
one after the other on one uvloop event loop, with real Redis from the local stack behind
both. CPU is this process's time (`time.process_time`), so a machine busy with other work
changes the wall time, hardly the CPU figure; the ratio of the two apps is the result.
`--profile` adds cProfile's top frames of the service app.

    MEMSTACK_HOME=/tmp/ms-x .venv/bin/python benchmarks/asgi_cost.py --requests 20000 [--profile]
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import io
import json
import pstats
import random
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import uvloop

sys.path.insert(0, str(Path(__file__).resolve().parent))
import floor_app

from memory_core.clients import MemoryClients
from memory_core.service.app import create_app
from memory_core.service.auth import TokenTable, new_token, token_hash
from memory_core.service.config import ServiceSettings
from memstack.load import say_on_stderr
from memstack.local.backend import CORE_SERVICES, get_backend, stack_for_run

TENANT = "asgi-cost"
WEIGHTS = {"read_key": 50, "read_context": 10, "read_turns": 10, "write_key": 15, "add_turn": 8}


def requests(count: int, token: str, seed: int = 7) -> list[tuple[str, str, bytes, bytes, str]]:
    """(method, path, query, body, kind) in the working profile's mix."""
    rng = random.Random(seed)
    kinds = rng.choices(list(WEIGHTS), weights=list(WEIGHTS.values()), k=count)
    out = []
    for kind in kinds:
        base = f"/v1/working/u{rng.randrange(20)}/c{rng.randrange(5)}"
        key = f"k{rng.randrange(8)}"
        if kind == "read_key":
            out.append(("GET", f"{base}/context/{key}", b"", b"", kind))
        elif kind == "read_context":
            out.append(("GET", f"{base}/context", b"", b"", kind))
        elif kind == "read_turns":
            out.append(("GET", f"{base}/turns", b"limit=10", b"", kind))
        elif kind == "write_key":
            body = {"value": {"step": rng.randrange(1000), "note": "x" * rng.randrange(16, 256)}, "ttl_seconds": 600}
            out.append(("PUT", f"{base}/context/{key}", b"", json.dumps(body).encode(), kind))
        else:
            body = {"role": rng.choice(("user", "assistant")), "content": f"turn {rng.random()}"}
            out.append(("POST", f"{base}/turns", b"", json.dumps(body).encode(), kind))
    return out


async def call(app: Any, method: str, path: str, query: bytes, body: bytes, headers: list) -> int:
    status = 0
    delivered = False

    async def receive() -> dict:
        nonlocal delivered
        if not delivered:
            delivered = True
            return {"type": "http.request", "body": body, "more_body": False}
        await asyncio.Event().wait()
        return {"type": "http.disconnect"}

    async def send(message: dict) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]

    all_headers = headers + ([(b"content-length", str(len(body)).encode())] if body else [])
    scope = {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": query,
        "root_path": "",
        "headers": all_headers,
        "client": ("127.0.0.1", 40000),
        "server": ("127.0.0.1", 8080),
        "state": {},
    }
    await app(scope, receive, send)
    return status


async def drive(app: Any, batch: list, headers: list, profiler: cProfile.Profile | None = None) -> dict:
    """CPU per request over `batch`, per kind of request too; every answer must be a success."""
    per_kind: dict[str, list[float]] = {}
    if profiler is not None:
        profiler.enable()
    start = time.process_time()
    for method, path, query, body, kind in batch:
        t0 = time.process_time()
        status = await call(app, method, path, query, body, headers)
        if status not in (200, 201, 204, 404):
            raise SystemExit(f"{method} {path} answered {status}")
        per_kind.setdefault(kind, []).append(time.process_time() - t0)
    total = time.process_time() - start
    if profiler is not None:
        profiler.disable()
    return {
        "cpu_us_per_request": total / len(batch) * 1e6,
        "by_kind_us": {k: sum(v) / len(v) * 1e6 for k, v in sorted(per_kind.items())},
    }


async def lifespan(app: Any) -> Callable[[], Any]:
    """Run the app's startup; returns the coroutine function that shuts it down."""
    inbox: asyncio.Queue = asyncio.Queue()
    outbox: asyncio.Queue = asyncio.Queue()
    task = asyncio.create_task(
        app({"type": "lifespan", "asgi": {"version": "3.0"}, "state": {}}, inbox.get, outbox.put)
    )
    await inbox.put({"type": "lifespan.startup"})
    started = await outbox.get()
    if started["type"] != "lifespan.startup.complete":
        raise SystemExit(f"startup failed: {started}")

    async def shutdown() -> None:
        await inbox.put({"type": "lifespan.shutdown"})
        await outbox.get()
        await task

    return shutdown


async def main_async(args: argparse.Namespace) -> dict:
    backend = get_backend()
    with stack_for_run(backend, CORE_SERVICES, say_on_stderr):
        return await _measure(args, backend)


async def _measure(args: argparse.Namespace, backend) -> dict:
    settings = backend.endpoints().settings()
    clients = await MemoryClients.connect(settings)
    token = new_token()
    headers = [(b"authorization", f"Bearer {token}".encode()), (b"content-type", b"application/json")]
    service = create_app(settings, ServiceSettings(), clients=clients, tokens=TokenTable({token_hash(token): TENANT}))
    floor = floor_app.make_app({token_hash(token): TENANT}, clients.redis)
    shutdown = await lifespan(service)
    batch = requests(args.requests, token)
    try:
        # Warm both (connections, caches, first-call paths), then alternate measured rounds.
        await drive(service, batch[:500], headers)
        await drive(floor, batch[:500], headers)
        rounds: dict[str, list[dict]] = {"service": [], "floor": []}
        for _ in range(args.rounds):
            rounds["floor"].append(await drive(floor, batch, headers))
            rounds["service"].append(await drive(service, batch, headers))
        # Python function calls per request: a count, so the machine's load cannot move it.
        calls: dict[str, float] = {}
        profile_text = None
        for name, app in (("floor", floor), ("service", service)):
            profiler = cProfile.Profile()
            await drive(app, batch, headers, profiler)
            out = io.StringIO()
            stats = pstats.Stats(profiler, stream=out)
            calls[name] = stats.total_calls / len(batch)  # type: ignore[attr-defined]
            if name == "service" and args.profile:
                stats.sort_stats("tottime").print_stats(args.top)
                stats.sort_stats("cumulative").print_stats(args.top)
                profile_text = out.getvalue()
    finally:
        await shutdown()
        await clients.close()
    best = {name: min(r["cpu_us_per_request"] for r in runs) for name, runs in rounds.items()}
    return {
        "requests_per_round": args.requests,
        "rounds": rounds,
        "best_cpu_us_per_request": best,
        "service_to_floor": best["service"] / best["floor"],
        "python_calls_per_request": calls,
        "profile": profile_text,
    }


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} is not a positive count")
    return value


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=_positive, default=5000, help="requests per round")
    parser.add_argument("--rounds", type=_positive, default=3)
    parser.add_argument("--profile", action="store_true", help="cProfile one more round of the service app")
    parser.add_argument("--top", type=int, default=30)
    parser.add_argument("--json", type=Path, default=None, help="also write the result here")
    args = parser.parse_args(argv)
    result = uvloop.run(main_async(args))
    if result["profile"]:
        print(result["profile"])
    for name in ("service", "floor"):
        last = result["rounds"][name][-1]["by_kind_us"]
        kinds = ", ".join(f"{k} {v:.0f}" for k, v in last.items())
        print(f"{name}: best {result['best_cpu_us_per_request'][name]:.0f} us/request ({kinds})")
    print(f"service / floor: {result['service_to_floor']:.2f}x")
    calls = result["python_calls_per_request"]
    print(
        f"Python calls per request (driver included): service {calls['service']:.0f}, floor {calls['floor']:.0f}, "
        f"ratio {calls['service'] / calls['floor']:.2f}x"
    )
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
