"""CPU per request of the memory service against a floor app, per process, in one run.

Starts the local stack and `memstack serve` (as `memstack load` does), plus the floor app of
floor_app.py (a raw ASGI app: token hash lookup, one HGET or HSET, same Redis client and
server, same uvicorn/uvloop/httptools). Then it runs the Locust profiles of loadtests/ at
fixed rates, one after the other: the working profile against the service and against the
floor app, the mixed profile against the service. Around each run it reads the CPU time of
every process from /proc/<pid>/stat (service, floor app, Redis, Postgres with its backends,
Neo4j, Locust) once the warm-up ends and again just before Locust exits, and divides by the
requests Locust counted. The absolute figures move with the machine's load; the ratios
(service / floor, service / Redis), measured minutes apart under the same load, are the result.

    .venv/bin/python benchmarks/service_efficiency.py --rate 1000 --mixed-rate 600 --duration 20s

Prints a table and writes `<results>/service_efficiency.json`; the CPU ratio and the working-
memory percentiles also go to `.benchmarks/memory_core.json` (section `service`), which the
capacity report lists.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from latency import record

from memstack import load as load_runner
from memstack.capacity import procstat
from memstack.capacity.measure import store_processes

HERE = Path(__file__).resolve().parent
# The target: service CPU per working-memory request at most this many times the floor's.
TARGET_RATIO = 1.3


class CpuSampler:
    """CPU seconds of each process when the warm-up ends and at the last moment Locust ran."""

    def __init__(self, pids: dict[str, int], warmup_s: float):
        self.pids = dict(pids)
        self.warmup_s = warmup_s
        self.begin: dict[str, float | None] = {}
        self.end: dict[str, float | None] = {}
        self.window_s = 0.0
        self._thread: threading.Thread | None = None

    def start(self, locust: subprocess.Popen) -> None:
        self.pids["locust"] = locust.pid
        self._thread = threading.Thread(target=self._run, args=(locust,), daemon=True)
        self._thread.start()

    def _run(self, locust: subprocess.Popen) -> None:
        time.sleep(self.warmup_s)
        self.begin = procstat.sample(self.pids)
        begun = time.monotonic()
        while locust.poll() is None:
            now = procstat.sample(self.pids)
            if locust.poll() is None and now.get("locust") is not None:
                self.end, self.window_s = now, time.monotonic() - begun
            time.sleep(0.2)

    def per_request(self, requests: int) -> dict[str, float | None]:
        if self._thread is not None:
            self._thread.join(timeout=10)
        return procstat.per_request(self.begin, self.end, requests)


@contextmanager
def floor_app(env: dict[str, str], results: Path) -> Iterator[tuple[str, int]]:
    port = load_runner.free_port()
    url = f"http://127.0.0.1:{port}"
    log = results / "floor.log"
    with open(log, "w") as handle:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "uvicorn",
                "--app-dir",
                str(HERE),
                "floor_app:create",
                "--factory",
                "--port",
                str(port),
                "--loop",
                "uvloop",
                "--http",
                "httptools",
                "--no-access-log",
                "--log-level",
                "warning",
            ],
            env=env,
            stdout=handle,
            stderr=subprocess.STDOUT,
        )
    try:
        load_runner.wait_ready(url, process, log)
        yield url, process.pid
    finally:
        load_runner.stop(process)


def one_run(
    base: load_runner.LoadOptions, name: str, profile: str, rate: float, url: str, tokens: Path, pids: dict[str, int]
) -> dict:
    results = (base.results / f"{name}-{profile}").resolve()
    results.mkdir(parents=True, exist_ok=True)
    options = load_runner.LoadOptions(
        url=url,
        tokens_file=tokens,
        duration=base.duration,
        warmup_s=base.warmup_s,
        users=base.users,
        rate=rate,
        results=results,
        profile=profile,
        wm_p99_ms=base.wm_p99_ms,
    )
    sampler = CpuSampler(pids, base.warmup_s)
    code, summary = load_runner.run_locust(options, url, tokens, started=sampler.start)
    requests = summary["total"]["requests"]
    cpu = sampler.per_request(requests)
    return {
        "target": name,
        "profile": profile,
        "offered_rps": rate,
        "achieved_rps": summary["generator"]["achieved_rps"],
        "requests": requests,
        "cpu_window_s": sampler.window_s,
        "cpu_us_per_request": {k: None if v is None else v * 1e6 for k, v in cpu.items()},
        "working": summary["working"],
        "send_lag_p99_ms": summary["generator"]["send_lag_p99_ms"],
        "groups": summary["groups"],
        "gate_passed": code == 0,
        "violations": summary["violations"],
        "load_average": os.getloadavg(),
    }


def ratios(runs: list[dict]) -> dict:
    """Service / floor on the working profile, and each target / Redis in its own run."""
    by = {(r["target"], r["profile"]): r for r in runs}
    result: dict = {}
    service, floor = by.get(("service", "working")), by.get(("floor", "working"))
    if service and floor:
        s, f = service["cpu_us_per_request"].get("service"), floor["cpu_us_per_request"].get("floor")
        if s and f:
            result["service_to_floor_working"] = s / f
    for run in runs:
        own = run["cpu_us_per_request"].get(run["target"])
        redis = run["cpu_us_per_request"].get("redis")
        if own and redis:
            result[f"{run['target']}_to_redis_{run['profile']}"] = own / redis
    return result


def print_table(runs: list[dict], summary: dict) -> None:
    names = ["service", "floor", "redis", "postgres", "neo4j", "locust"]
    print(f"\n{'run':<18}{'req/s':>8}" + "".join(f"{n:>10}" for n in names) + f"{'wm p50':>8}{'p99':>7}{'lag99':>7}")
    print(" " * 26 + "CPU us per request" + " " * 52 + "ms")
    for run in runs:
        cpu = run["cpu_us_per_request"]
        cells = "".join(f"{cpu[n]:>10.0f}" if cpu.get(n) is not None else f"{'-':>10}" for n in names)
        wm = run["working"]
        lag = run["send_lag_p99_ms"]
        print(
            f"{run['target'] + ' ' + run['profile']:<18}{run['achieved_rps']:>8.0f}{cells}"
            f"{wm['p50_ms'] or 0:>8.1f}{wm['p99_ms'] or 0:>7.1f}{lag if lag is not None else 0:>7.0f}"
        )
    for name, value in summary.items():
        print(f"{name}: {value:.2f}x")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rate", type=float, default=1000.0, help="req/s of the working profile")
    parser.add_argument("--mixed-rate", type=float, default=600.0, help="req/s of the mixed profile; 0 = skip")
    parser.add_argument("--duration", default="20s", help="measured time per run, after the warm-up")
    parser.add_argument("--warmup-s", type=float, default=5.0)
    parser.add_argument("--users", type=int, default=100)
    parser.add_argument("--results", type=Path, default=Path(".memstack/bench-service"))
    parser.add_argument("--no-floor", action="store_true", help="skip the floor app")
    args = parser.parse_args(argv)

    results = args.results.resolve()
    results.mkdir(parents=True, exist_ok=True)
    base = load_runner.LoadOptions(
        duration=args.duration, warmup_s=args.warmup_s, users=args.users, rate=args.rate, results=results
    )
    load_runner.seconds(base.duration, "--duration")
    runs: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="memstack-efficiency-") as workdir:
        with load_runner.local_service(base, Path(workdir)) as service:
            stores = {name: s["pid"] for name, s in store_processes(service.backend).items()}
            env = {
                **os.environ,
                **service.backend.endpoints().env(),  # type: ignore[attr-defined]
                "MEMSTACK_TOKENS_FILE": str(Path(workdir) / "tokens.hashes"),
            }
            plan = [("service", "working", args.rate)]
            if args.mixed_rate > 0:
                plan.append(("service", "mixed", args.mixed_rate))
            if not args.no_floor:
                with floor_app(env, results) as (floor_url, floor_pid):
                    runs.append(
                        one_run(
                            base,
                            "floor",
                            "working",
                            args.rate,
                            floor_url,
                            service.tokens,
                            {"floor": floor_pid, **stores},
                        )
                    )
            for name, profile, rate in plan:
                runs.append(
                    one_run(base, name, profile, rate, service.url, service.tokens, {name: service.pid, **stores})
                )
    summary = ratios(runs)
    report = {
        "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "target_ratio_to_floor": TARGET_RATIO,
        "ratios": summary,
        "runs": runs,
    }
    (results / "service_efficiency.json").write_text(json.dumps(report, indent=2))
    print_table(runs, summary)
    for run in runs:
        ratio = summary.get("service_to_floor_working") if run["target"] == "service" else None
        values = {
            **{k: run["working"][k] for k in ("p50_ms", "p95_ms", "p99_ms")},
            "achieved_rps": run["achieved_rps"],
            **{f"cpu_{k}_us": v for k, v in run["cpu_us_per_request"].items()},
        }
        if run["profile"] == "working" and ratio is not None:
            values["cpu_ratio_to_floor"] = ratio
            record(
                "service",
                f"{run['target']} {run['profile']}",
                values,
                f"service CPU/request <= {TARGET_RATIO}x floor",
                ratio <= TARGET_RATIO,
            )
        else:
            record("service", f"{run['target']} {run['profile']}", values)
    print(f"\nwrote {results / 'service_efficiency.json'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
