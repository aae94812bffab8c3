"""`memstack load` and `memstack demo`: Locust, headless, against a URL or against a service
started here on the local stack, with the SLO gate of loadtests/locustfile.py.

Locust runs in its own process: it monkey-patches the standard library with gevent, which
must not happen inside the CLI. With `workers` > 1 it runs as a master with that many worker
processes (Locust's --processes), so that one generator core is not the limit. Results: Locust's CSV files, its JSON stats, and summary.json
(per route group, plus the gate verdict) under the results directory.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from memstack.errors import MemstackError

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_LOCUSTFILE = REPO_ROOT / "loadtests" / "locustfile.py"
_RUN_CLI = "from memstack.cli import main; main()"
# --profile -> the locustfile's user class.
PROFILES = {"mixed": "MemoryClient", "working": "WorkingMemoryClient"}


def results_home(kind: str) -> Path:
    """Where `kind` (load, capacity, snapshots...) keeps its results by default: under the
    stack's home ($MEMSTACK_HOME or ./.memstack), beside the stack they were measured on."""
    from memstack.local.state import default_home

    return default_home() / kind


def benchmark_results_file() -> Path:
    """The benchmarks' percentiles and verdicts (benchmarks/latency.py writes them, `memstack bench`
    and `make bench` alike; `memstack capacity report` reads them): in the stack's home, as every
    other result, so a run from another clone or directory never rewrites this checkout's."""
    return results_home("benchmarks") / "memory_core.json"


def output_dir(path: Path, option: str) -> Path:
    """Make the results directory up front: one that cannot be made is refused before any work."""
    path = path.resolve()
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise MemstackError(f"{option} {path}: {exc.strerror or exc}") from None
    return path


def check_output_file(path: Path, option: str) -> None:
    """Open the file for writing once, before any work, so a path that cannot be written is
    refused then rather than after it (a file that was not there is removed again). Its
    directory must exist: a mistyped one is refused, not made."""
    if not path.parent.is_dir():
        raise MemstackError(f"{option} {path}: no such directory {path.parent}")
    existed = path.exists()
    try:
        with open(path, "a"):
            pass
    except OSError as exc:
        raise MemstackError(f"{option} {path}: {exc.strerror or exc}") from None
    if not existed:
        path.unlink()


def new_results_dir(kind: str) -> Path:
    return results_home(kind) / time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())


@dataclass
class LoadOptions:
    url: str | None = None
    tokens_file: Path | None = None
    duration: str = "20s"
    warmup_s: float = 3.0
    # Enough users that one slow answer (a durable write: tens of ms) rarely holds back a user's
    # next request (the send lag in loadtests/slo.py). Measured on 2 cores, mixed profile at
    # 400 req/s: p99 send lag 10 ms with 30 users, 4 ms with 100.
    users: int = 100
    rate: float = 300.0
    tenants: int = 20
    results: Path = field(default_factory=lambda: results_home("load"))
    wm_p99_ms: float = 10.0
    max_failure_ratio: float = 0.001
    locustfile: Path = DEFAULT_LOCUSTFILE
    backend: str | None = None
    profile: str = "mixed"
    # Locust worker processes beside its master (Locust's --processes); 1 = a single process.
    workers: int = 1


@dataclass
class LocalService:
    url: str
    tokens: Path
    pid: int
    backend: object


_TIMESPAN = re.compile(r"^(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s?)?$")


# The longest run a load command accepts: a soak test is days, and Locust overflows long before
# a number that has no bound.
MAX_RUN_S = 7 * 86400
# The highest request rate and user count a load command accepts: far beyond what one Locust
# reaches, and below where its timers and schedules stop meaning anything (at 1e308 req/s Locust
# ignores its -t run time).
MAX_RATE = 1e6
MAX_USERS = 100_000


def seconds(timespan: str, option: str) -> int:
    """Locust's run-time syntax: 90, 90s, 2m, 1h30m. Not locust.util.timespan.parse_timespan:
    importing anything from locust monkey-patches this process's sockets with gevent."""
    match = _TIMESPAN.match(timespan.strip())
    if not timespan.strip() or match is None:
        raise MemstackError(f"{option} must look like 30s, 2m or 1h30m, not {timespan!r}")
    hours, minutes, secs = (int(g or 0) for g in match.groups())
    total = hours * 3600 + minutes * 60 + secs
    if total <= 0:
        raise MemstackError(f"{option} must be longer than 0s")
    if total > MAX_RUN_S:
        raise MemstackError(f"{option} must be at most {MAX_RUN_S // 86400} days ({MAX_RUN_S}s), not {timespan!r}")
    return total


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_ready(url: str, process: subprocess.Popen | None, log: Path | None, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    last = "no answer"
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            tail = log.read_text().strip().splitlines()[-1:] if log and log.exists() else []
            raise MemstackError(f"the service exited with {process.returncode}: {' '.join(tail) or 'no output'}")
        try:
            with urllib.request.urlopen(f"{url}/ready", timeout=2) as response:
                if response.status == 200:
                    return
        except urllib.error.HTTPError as exc:
            last = exc.read().decode(errors="replace")[:200]
        except OSError as exc:
            last = str(exc)
        time.sleep(0.2)
    raise MemstackError(f"the service at {url} was not ready within {timeout_s:g}s: {last}")


def write_tokens(directory: Path, tenants: int) -> tuple[Path, Path]:
    """Tokens for `tenants` fresh tenants: the hash file for the service, the plain file for Locust (0600)."""
    from memory_core.service.auth import hash_line, new_token

    run = uuid.uuid4().hex[:8]
    pairs = [(f"load-{run}-{i}", new_token()) for i in range(tenants)]
    hashes, plain = directory / "tokens.hashes", directory / "tokens.plain"
    for path, lines in ((hashes, [hash_line(t, k) for t, k in pairs]), (plain, [f"{t} {k}" for t, k in pairs])):
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write("\n".join(lines) + "\n")
    return hashes, plain


@contextmanager
def local_service(options: LoadOptions, workdir: Path) -> Iterator[LocalService]:
    """Bring up the local stack (reusing what runs), migrate, and run `memstack serve` on a free port.
    A stack started here is stopped again at the end; one that ran before is left running."""
    from memstack.local.backend import CORE_SERVICES, get_backend, stack_for_run

    backend = get_backend(options.backend)
    with stack_for_run(backend, CORE_SERVICES, say_on_stderr):
        with _service_on(backend, options, workdir) as service:
            yield service


def say_on_stderr(line: str) -> None:
    print(f"memstack: {line}", file=sys.stderr, flush=True)


@contextmanager
def _service_on(backend: Any, options: LoadOptions, workdir: Path) -> Iterator[LocalService]:
    from memory_core import migrate

    endpoints = backend.endpoints()
    try:
        asyncio.run(migrate(endpoints.settings()))
    except OSError as exc:
        raise MemstackError(f"migrate: cannot reach a store: {exc}") from None
    hashes, plain = write_tokens(workdir, options.tenants)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {**os.environ, **endpoints.env(), "MEMSTACK_TOKENS_FILE": str(hashes)}
    log = options.results / "service.log"
    with open(log, "w") as handle:
        process = subprocess.Popen(
            [sys.executable, "-c", _RUN_CLI, "serve", "--port", str(port), "--log-level", "warning"],
            env=env,
            stdout=handle,
            stderr=subprocess.STDOUT,
        )
    try:
        wait_ready(url, process, log)
        yield LocalService(url=url, tokens=plain, pid=process.pid, backend=backend)
    finally:
        stop(process)


def stop(process: subprocess.Popen) -> None:
    """SIGTERM (a server drains its requests), SIGKILL after 30 s."""
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def server_side_percentiles(metrics_text: str, route_prefix: str = "/v1/working/") -> dict:
    """p50/p95/p99 upper bounds (ms) of the service's own request histogram for routes under
    `route_prefix`: latency without the load generator's share of the CPU."""
    from prometheus_client.parser import text_string_to_metric_families

    from memory_core.metrics import HTTP_REQUEST_DURATION

    buckets: dict[float, float] = {}
    for family in text_string_to_metric_families(metrics_text):
        if family.name != HTTP_REQUEST_DURATION:
            continue
        for sample in family.samples:
            if sample.name.endswith("_bucket") and sample.labels.get("route", "").startswith(route_prefix):
                bound = float(sample.labels["le"])
                buckets[bound] = buckets.get(bound, 0.0) + sample.value
    bounds = sorted(buckets)
    total = buckets.get(float("inf"), 0.0)
    result: dict = {"requests": int(total)}
    for name, q in (("p50_ms", 0.50), ("p95_ms", 0.95), ("p99_ms", 0.99)):
        bound = next((b for b in bounds if total and buckets[b] >= q * total), None)
        result[name] = None if bound is None or bound == float("inf") else bound * 1000
    return result


def locust_command(options: LoadOptions, url: str, tokens: Path, locustfiles: list[Path]) -> list[str]:
    """Headless Locust with the profile's user class, the tokens and the SLO thresholds, writing
    its CSV and JSON stats into the results directory (its working directory)."""
    results = options.results
    command = [
        sys.executable,
        "-m",
        "locust",
        "-f",
        ",".join(str(f) for f in locustfiles),
        "--headless",
        "--only-summary",
        "-u",
        str(options.users),
        "-r",
        str(options.users),
        "--host",
        url,
        "--csv",
        str(results / "locust"),
        "--json-file",
        str(results / "locust"),
        "--loglevel",
        "WARNING",
        "--stop-timeout",
        "5",
        "--tokens-file",
        str(tokens),
        "--rate",
        str(options.rate),
        "--wm-p99-ms",
        str(options.wm_p99_ms),
        "--max-failure-ratio",
        str(options.max_failure_ratio),
    ]
    if options.workers > 1:
        command += ["--processes", str(options.workers)]
    return command + [PROFILES[options.profile]]


def require_finite(**values: float) -> None:
    """Refuse inf and nan, which no float option means (their names as keyword arguments)."""
    for name, value in values.items():
        if not math.isfinite(value):
            raise MemstackError(f"--{name.replace('_', '-')} must be a finite number, not {value!r}")


def check_options(options: LoadOptions) -> None:
    require_finite(
        warmup=options.warmup_s,
        rate=options.rate,
        wm_p99_ms=options.wm_p99_ms,
        max_failure_ratio=options.max_failure_ratio,
    )
    for option, value, most in (("--rate", options.rate, MAX_RATE), ("--warmup", options.warmup_s, MAX_RUN_S)):
        if value < 0:
            raise MemstackError(f"{option} must be 0 or more, not {value:g}")
        if value > most:
            raise MemstackError(f"{option} must be at most {most:g}, not {value:g}")
    if options.users > MAX_USERS:
        raise MemstackError(f"--users must be at most {MAX_USERS}, not {options.users}")
    if options.wm_p99_ms <= 0:
        raise MemstackError(f"--wm-p99-ms must be above 0, not {options.wm_p99_ms:g}")
    if not 0 <= options.max_failure_ratio <= 1:
        raise MemstackError(f"--max-failure-ratio must be between 0 and 1, not {options.max_failure_ratio:g}")
    if options.tokens_file is not None and not options.url:
        raise MemstackError("--tokens-file is only read with --url (a local service makes its own tokens)")
    if options.profile not in PROFILES:
        raise MemstackError(f"--profile must be one of {', '.join(PROFILES)}, not {options.profile!r}")
    if options.workers < 1:
        raise MemstackError(f"--workers must be 1 or more, not {options.workers}")
    if not options.locustfile.exists():
        raise MemstackError(f"no locustfile at {options.locustfile}")
    if options.url:
        check_http_url(options.url)
        if options.tokens_file is None:
            raise MemstackError("--url needs --tokens-file with lines '<tenant> <token>'")
        check_tokens_file(options.tokens_file)


def check_http_url(url: str, option: str = "--url") -> None:
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise MemstackError(f"{option} must be an http:// or https:// address, not {url!r}")


def check_tokens_file(path: Path) -> None:
    """Refused here, not after the wait for the service: the file Locust will read, with at least one line."""
    try:
        lines = [line.split() for line in path.read_text().splitlines() if line.strip() and not line.startswith("#")]
    except OSError as exc:
        raise MemstackError(f"--tokens-file {path}: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise MemstackError(f"--tokens-file {path}: not a text file of lines '<tenant> <token>'") from None
    if not lines or any(len(fields) != 2 for fields in lines):
        raise MemstackError(f"--tokens-file {path}: needs lines '<tenant> <token>'")


@contextmanager
def running_locust(
    command: list[str], log: IO[str], cwd: Path, env: dict[str, str] | None = None
) -> Iterator[subprocess.Popen]:
    """Locust in a session of its own, stopped with all its processes however the caller leaves:
    a SIGTERM to the CLI (SystemExit), Ctrl-C or an exception would otherwise leave it loading
    the service until its -t timer ends, and its --processes workers with it. Its own session
    because a signal to the CLI alone does not reach it; the CLI stops it here instead."""
    process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, cwd=cwd, env=env, start_new_session=True)
    try:
        yield process
    finally:
        stop_process_group(process)


def stop_process_group(process: subprocess.Popen, timeout_s: float = 15.0) -> None:
    """SIGTERM to the process's group (Locust writes its results on it), SIGKILL to what is left
    of the group after `timeout_s`, and after the leader's end to any worker that outlived it."""

    def signal_group(sig: int) -> None:
        try:
            os.killpg(process.pid, sig)
        except (ProcessLookupError, PermissionError):
            pass  # the group has no process left

    if process.poll() is None:
        signal_group(signal.SIGTERM)
        try:
            process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            signal_group(signal.SIGKILL)
            process.wait()
    signal_group(signal.SIGKILL)


def run_locust(
    options: LoadOptions, url: str, tokens: Path, started: Callable[[subprocess.Popen], None] | None = None
) -> tuple[int, dict]:
    """Run Locust to its end; `started` is handed the running process (to sample its CPU)."""
    results = options.results
    summary_path = results / "summary.json"
    # Locust runs warm-up + duration; statistics restart when the warm-up ends.
    warmup = math.ceil(options.warmup_s)
    run_time = seconds(options.duration, "--duration") + warmup
    command = locust_command(options, url, tokens, [options.locustfile]) + [
        "-t",
        f"{run_time}s",
        "--warmup-s",
        str(warmup),
        "--summary-file",
        str(summary_path),
    ]
    with open(results / "locust.log", "w") as log, running_locust(command, log, results) as process:
        if started is not None:
            started(process)
        code = process.wait()
    if not summary_path.exists():
        tail = (results / "locust.log").read_text().strip().splitlines()[-1:]
        raise MemstackError(f"locust exited with {code} and wrote no summary: {' '.join(tail) or 'no output'}")
    return code, json.loads(summary_path.read_text())


def run(options: LoadOptions) -> tuple[int, dict]:
    seconds(options.duration, "--duration")
    check_options(options)
    # Resolved: Locust runs with the results directory as cwd.
    options.results = output_dir(options.results, "--results")
    if options.url:
        wait_ready(options.url.rstrip("/"), None, None, timeout_s=10)
        # Resolved here: Locust reads it from the results directory, its working directory.
        return run_locust(options, options.url.rstrip("/"), options.tokens_file.resolve())
    with tempfile.TemporaryDirectory(prefix="memstack-load-") as workdir:
        with local_service(options, Path(workdir)) as service:
            code, summary = run_locust(options, service.url, service.tokens)
            with urllib.request.urlopen(f"{service.url}/metrics", timeout=10) as response:
                summary["server_working"] = server_side_percentiles(response.read().decode())
            (options.results / "summary.json").write_text(json.dumps(summary, indent=2))
            return code, summary
