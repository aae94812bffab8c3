"""The `memstack` operator CLI.

Every failure an operator can cause or fix ends in one line on stderr and exit code 2;
a traceback is a bug (set MEMSTACK_DEBUG=1 to see one).
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import signal
import sys
import traceback
from pathlib import Path
from typing import Annotated

# Ctrl-C while the CLI loads (a second or so on a cold cache) ends as it does during a command:
# exit 130, no traceback.
try:
    import typer
    from rich.console import Console
    from rich.table import Table
    from typer.exceptions import TyperException

    from memstack import bench, observability, service
    from memstack import load as load_runner
    from memstack.capacity.commands import app as capacity_app
    from memstack.chaos import commands as chaos_cli
    from memstack.errors import MemstackError
    from memstack.images.build import IMAGES_ENV, image_source
    from memstack.images.commands import app as images_app
    from memstack.local.backend import BACKEND_ENV, CORE_SERVICES, OPTIONAL_SERVICES, check_service, get_backend
    from memstack.local.state import WAL_DIR_ENV, check_backend, default_home
    from memstack.local.state import load as load_state
    from memstack.recovery import commands as recovery
except KeyboardInterrupt:
    sys.exit(130)

app = typer.Typer(
    name="memstack",
    help="Operate the agent-memory stack: local data tier, service, load tests, drills.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)
# Wide enough for URLs in CI logs, where there is no terminal to measure.
out = Console(width=max(shutil.get_terminal_size((120, 24)).columns, 120))

BackendOption = Annotated[
    str | None,
    typer.Option(
        "--backend",
        "-b",
        help=f"process | containers | external (default: ${BACKEND_ENV}, else the home's stack's, else process)",
    ),
]


def _redact(url: str) -> str:
    """A URL with its password replaced, for tables that may end up in CI logs."""
    scheme, sep, rest = url.partition("://")
    if "@" not in rest:
        return url
    userinfo, _, host = rest.rpartition("@")
    user = userinfo.split(":", 1)[0]
    return f"{scheme}{sep}{user}:***@{host}"


def _relative(path: str) -> str:
    try:
        return str(Path(path).relative_to(Path.cwd()))
    except ValueError:
        return path


def _parse_ports(values: list[str]) -> dict[str, int]:
    ports: dict[str, int] = {}
    for value in values:
        name, sep, number = value.partition("=")
        check_service(name)
        if not sep or not number.isdigit() or not 0 < int(number) < 65536:
            raise MemstackError(f"--port takes SERVICE=PORT with a port from 1 to 65535, not {value!r}")
        ports[name] = int(number)
    return ports


def _print_status(backend_name: str | None) -> None:
    rows = get_backend(backend_name).status()
    table = Table(title="memstack local stack")
    for column in ("service", "state", "health", "pid", "url", "data"):
        table.add_column(column, overflow="fold")
    for row in rows:
        table.add_row(
            row.name,
            "running" if row.running else "stopped",
            "[green]ok[/]" if row.healthy else "[red]down[/]",
            str(row.pid or "-"),
            _redact(row.url),
            _relative(row.detail),
        )
    out.print(table)


@app.command()
def up(
    backend: BackendOption = None,
    with_: Annotated[
        list[str],
        typer.Option(
            "--with",
            metavar="SERVICE[,SERVICE]",
            help=f"Optional services to add, repeated or comma-separated: {', '.join(OPTIONAL_SERVICES)}",
        ),
    ] = [],
    port: Annotated[list[str], typer.Option("--port", metavar="SERVICE=PORT", help="Pin a port (repeatable)")] = [],
    appendfsync: Annotated[str | None, typer.Option(help="Redis AOF fsync policy: everysec | always")] = None,
    wal_dir: Annotated[
        Path | None, typer.Option(help=f"Postgres WAL archive (default ${WAL_DIR_ENV} or $MEMSTACK_HOME/backups/wal)")
    ] = None,
    images: Annotated[
        str | None,
        typer.Option(help=f"containers backend: local | official images (default ${IMAGES_ENV} or official)"),
    ] = None,
) -> None:
    """Start the data tier (Redis, Postgres + pgvector, Neo4j), reusing what already runs, and apply pending migrations."""
    if images is not None:
        os.environ[IMAGES_ENV] = image_source(images)
    if wal_dir is not None:
        os.environ[WAL_DIR_ENV] = str(wal_dir.resolve())
    optional = [name.strip() for value in with_ for name in value.split(",")]
    for name in optional:
        check_service(name, OPTIONAL_SERVICES)
    from memstack.local.redis_server import APPENDFSYNC_CHOICES

    if appendfsync is not None and appendfsync not in APPENDFSYNC_CHOICES:
        raise MemstackError(f"--appendfsync must be one of {', '.join(APPENDFSYNC_CHOICES)}, not {appendfsync!r}")
    ports = _parse_ports(port)
    chosen = get_backend(backend, appendfsync=appendfsync, ports=ports)
    if images is not None and chosen.name != "containers":
        # Refused rather than kept: a home holds one backend's stack, so a choice of images
        # stored with a process or external stack would never be used.
        raise MemstackError(
            f"--images applies to the containers backend (`-b containers`); this stack is {chosen.name}"
        )
    chosen.up(CORE_SERVICES + tuple(dict.fromkeys(optional)))
    applied = service.migrate(chosen.endpoints().settings())
    out.print(f"schema: applied {applied}" if any(applied.values()) else "schema: up to date", highlight=False)
    for name, value in chosen.endpoints().env().items():
        out.print(f"{name}={_redact(value) if 'PASSWORD' not in name else '***'}", highlight=False)
    out.print('credentials: `eval "$(memstack env)"`', highlight=False)


@app.command()
def down(
    backend: BackendOption = None,
    purge: Annotated[
        bool,
        typer.Option(
            "--purge",
            help="containers backend only: also delete the stack's containers, volumes (its data) and network",
        ),
    ] = False,
) -> None:
    """Stop every service of the stack; its data is kept. A containers stack's data goes with --purge;
    a process stack's data directories stay in its home ($MEMSTACK_HOME)."""
    chosen = get_backend(backend)
    if not purge:
        chosen.down()
        out.print(
            "stack stopped" if chosen.name != "external" else "nothing stopped: external servers are not memstack's"
        )
        return
    # Before anything is deleted: another backend's stack in this home is not this one's to remove.
    home = default_home()
    check_backend(home, load_state(home), chosen.name)
    remove = getattr(chosen, "remove", None)
    if remove is None:
        if chosen.name == "external":
            raise MemstackError(
                "--purge applies to a containers stack; external servers and their data are not memstack's to delete"
            )
        raise MemstackError(
            f"--purge applies to a containers stack; a {chosen.name} stack's data directories are in its home, {home}"
        )
    remove()
    out.print("stack removed: its containers, volumes and network are deleted")


@app.command()
def status(backend: BackendOption = None) -> None:
    """Show each service, its health and where it listens."""
    _print_status(backend)


@app.command()
def env(backend: BackendOption = None) -> None:
    """Print `export` lines for the variables that configure memory_core."""
    values = get_backend(backend).endpoints().env()
    from memory_core.settings import CONNECTION_ENV_VARS

    for name in CONNECTION_ENV_VARS:
        if name in values:
            print(f"export {name}={shlex.quote(values[name])}")
        else:
            print(f"unset {name}")
    for name in sorted(set(values) - set(CONNECTION_ENV_VARS)):  # OpenTelemetry's, while Jaeger runs
        print(f"export {name}={shlex.quote(values[name])}")


@app.command()
def kill(service: str, backend: BackendOption = None) -> None:
    """SIGKILL one service, as a crash would (recovery drills)."""
    get_backend(backend).kill(check_service(service))
    out.print(f"{service} killed")


@app.command()
def start(service: str, backend: BackendOption = None) -> None:
    """Restart one service on its existing data and port, and wait until it answers. One that runs
    already is left running (exit 0: what was asked for holds), while `kill` refuses one that does
    not run (exit 2: the crash asked for cannot happen)."""
    started = get_backend(backend).start(check_service(service))
    out.print(f"{service} started" if started else f"{service} was already running", highlight=False)


# --- the memory service ---------------------------------------------------------------------

token_app = typer.Typer(help="Bearer tokens of the memory service.", no_args_is_help=True)
app.add_typer(token_app, name="token")
app.add_typer(observability.app, name="dashboards")


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="Address to listen on")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on")] = service.SERVICE_PORT,
    workers: Annotated[int, typer.Option(min=1, help="Processes; Kubernetes scales pods, so 1 per pod")] = 1,
    log_level: Annotated[str, typer.Option(help="debug | info | warning | error")] = "info",
) -> None:
    """Run the memory service in the foreground (configured by the memory_core environment; tokens from
    $MEMSTACK_TOKENS_FILE, else $MEMSTACK_HOME/tokens as `token create` writes it)."""
    service.serve(host, port, workers, log_level)


@app.command()
def worker(
    host: Annotated[
        str, typer.Option(help="Address of the probe server (a pod's: 0.0.0.0, as the Kubernetes program sets)")
    ] = "127.0.0.1",
    port: Annotated[
        int | None,
        typer.Option(help="Port of /health, /ready and /metrics  [default: MEMORY_WORKER_PROBE_PORT or 8081]"),
    ] = None,
    log_level: Annotated[str, typer.Option(help="debug | info | warning | error")] = "info",
) -> None:
    """Run the consolidation worker, with its probe endpoints."""
    service.worker(host, port, log_level)


@app.command()
def migrate() -> None:
    """Apply pending schema migrations to Postgres and Neo4j; print what was applied. Stores: the
    environment's (REDIS_URL, POSTGRES_URL, NEO4J_*) when set, else the stack in $MEMSTACK_HOME."""
    print(json.dumps(service.migrate()))


@token_app.command("create")
def token_create(
    tenant: Annotated[str, typer.Option(help="Tenant the token grants access to")],
    file: Annotated[
        Path | None,
        typer.Option(help=f"Hash file to append to (default: ${service.TOKENS_FILE_ENV}, else $MEMSTACK_HOME/tokens)"),
    ] = None,
) -> None:
    """Print a new token once; only its hash is appended to the tokens file."""
    path = file or service.tokens_file()
    token = service.create_token(tenant, path)
    print(token)
    print(f"hash appended to {path}; the token is not stored and will not be shown again", file=sys.stderr)


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f}"


def _print_load_summary(summary: dict) -> None:
    slo = summary["slo"]
    warmup = f" after {summary['warmup_s']:g} s warm-up" if summary.get("warmup_s") else ""
    table = Table(
        title=f"memory service load: {summary['duration_s']:.0f} s{warmup}, "
        f"working-memory p99 SLO < {slo['working_p99_ms']:g} ms"
    )
    for column in ("route group", "requests", "req/s", "p50 ms", "p95 ms", "p99 ms", "failures", "SLO"):
        table.add_column(column, justify="left" if column == "route group" else "right")

    def add(name: str, row: dict, verdict: str = "") -> None:
        table.add_row(
            name,
            str(row["requests"]),
            f"{row['rps']:.0f}",
            _ms(row["p50_ms"]),
            _ms(row["p95_ms"]),
            _ms(row["p99_ms"]),
            str(row["failures"]),
            verdict,
        )

    for name, row in summary["groups"].items():
        add(name, row)
    working = summary["working"]
    ok = working["p99_ms"] is not None and working["p99_ms"] < slo["working_p99_ms"]
    add("working (all)", working, "[green]pass[/]" if ok else "[red]FAIL[/]")
    total = summary["total"]
    ratio_ok = total["failure_ratio"] <= slo["max_failure_ratio"]
    add("total", total, f"{total['failure_ratio']:.3%} " + ("[green]pass[/]" if ratio_ok else "[red]FAIL[/]"))
    out.print(table)
    server = summary.get("server_working")
    if server:
        out.print(
            f"service-side working memory (its own histogram, bucket upper bounds): p50 {server['p50_ms']} ms, "
            f"p95 {server['p95_ms']} ms, p99 {server['p99_ms']} ms over {server['requests']} requests",
            highlight=False,
        )
    generator = summary.get("generator") or {}
    if generator.get("send_lag_p99_ms") is not None:
        out.print(
            f"load generator: offered {generator['offered_rps']:g} req/s; requests left behind schedule by "
            f"p50 {generator['send_lag_p50_ms']:.0f} ms, p99 {generator['send_lag_p99_ms']:.0f} ms",
            highlight=False,
        )
    out.print(
        "Locust percentiles are whole milliseconds; load generator and service share this machine.", highlight=False
    )


def _load(options: load_runner.LoadOptions) -> None:
    code, summary = load_runner.run(options)
    _print_load_summary(summary)
    out.print(f"results: {_relative(str(options.results))}", highlight=False)
    for violation in summary["violations"]:
        print(f"memstack: SLO violated: {violation}", file=sys.stderr)
    if code != 0 or not summary["passed"]:
        raise typer.Exit(1)


_LOAD = load_runner.LoadOptions()  # the defaults, defined once


def _results_dir(results: Path | None) -> Path:
    return results or load_runner.new_results_dir("load")


@app.command()
def load(
    url: Annotated[str | None, typer.Option(help="Service to load; default: start one on the local stack")] = None,
    tokens_file: Annotated[Path | None, typer.Option(help="With --url: lines '<tenant> <token>'")] = None,
    duration: Annotated[str, typer.Option(help="Measured run time, e.g. 20s, 2m")] = _LOAD.duration,
    warmup: Annotated[
        float, typer.Option(help="Seconds of load before the measured run; not in the statistics")
    ] = _LOAD.warmup_s,
    users: Annotated[
        int, typer.Option(min=1, help="Locust users; each acts for random tenants and conversations")
    ] = _LOAD.users,
    rate: Annotated[float, typer.Option(help="Target total requests/s; 0 = as fast as possible")] = _LOAD.rate,
    tenants: Annotated[int, typer.Option(min=1, help="Tenants to create tokens for (local service)")] = _LOAD.tenants,
    results: Annotated[Path | None, typer.Option(help="Results directory (default $MEMSTACK_HOME/load/<time>)")] = None,
    wm_p99_ms: Annotated[
        float,
        typer.Option(
            help="Gate: working-memory p99, and the p99 of how late requests leave against schedule, must be below this"
        ),
    ] = _LOAD.wm_p99_ms,
    max_failure_ratio: Annotated[
        float, typer.Option(help="Gate: failures/requests must not exceed this")
    ] = _LOAD.max_failure_ratio,
    profile: Annotated[str, typer.Option(help="mixed | working (working memory only)")] = _LOAD.profile,
    workers: Annotated[
        int, typer.Option(min=1, help="Locust worker processes (master/worker mode when > 1)")
    ] = _LOAD.workers,
    backend: BackendOption = None,
) -> None:
    """Run the Locust profile headless; exit 1 when the SLO gate fails."""
    _load(
        load_runner.LoadOptions(
            url=url,
            tokens_file=tokens_file,
            duration=duration,
            warmup_s=warmup,
            users=users,
            rate=rate,
            tenants=tenants,
            results=_results_dir(results),
            wm_p99_ms=wm_p99_ms,
            max_failure_ratio=max_failure_ratio,
            backend=backend,
            profile=profile,
            workers=workers,
        )
    )


@app.command()
def demo(
    duration: Annotated[str, typer.Option(help=f"Measured run time, after a {_LOAD.warmup_s:g} s warm-up")] = "30s",
    rate: Annotated[float, typer.Option(min=1, help="Target total requests/s")] = _LOAD.rate,
    users: Annotated[
        int, typer.Option(min=1, help="Locust users; each acts for random tenants and conversations")
    ] = _LOAD.users,
    backend: BackendOption = None,
) -> None:
    """Bring up the local stack with Prometheus, run the service and its worker under load, and print
    latency per route group against the SLO, the stack's health and what Prometheus recorded."""
    from memstack import demo as demo_runner

    options = load_runner.LoadOptions(
        duration=duration, rate=rate, users=users, results=_results_dir(None), backend=backend
    )
    # Bad values are refused before anything starts.
    load_runner.seconds(duration, "--duration")
    load_runner.check_options(options)
    with demo_runner.demo_stack(backend, options.results) as live_data:

        def show() -> None:
            _print_status(backend)
            for line in live_data():
                out.print(line, highlight=False)
            if get_backend(backend).name != "external":
                # Unlike `load` and the other commands that start a stack for their run: what it
                # recorded is there to look at afterwards.
                out.print(
                    "the stack keeps running (`memstack dashboards snapshot` draws from its Prometheus); "
                    "`memstack down` stops it",
                    highlight=False,
                )

        try:
            _load(options)
        except typer.Exit:  # the SLO was missed: what the run recorded is what explains it
            show()
            raise
        show()


app.add_typer(capacity_app, name="capacity")


app.add_typer(recovery.backup_app, name="backup")
app.command()(recovery.restore)
app.command()(recovery.drill)
app.add_typer(recovery.graph_app, name="graph")
app.add_typer(images_app, name="images")
app.command()(chaos_cli.chaos)
app.add_typer(bench.app, name="bench")


# The signal that ended the CLI, once its handler ran: whatever the cleanup on the way out
# raises instead of its SystemExit (a database driver's own error) must not change the exit code.
_terminated_by: int | None = None


def _exit_on_sigterm(signum: int, _frame: object) -> None:
    # As Ctrl-C does: the cleanup on the way out runs (a service that was starting is stopped,
    # not left behind unrecorded). Servers run by `serve`, `worker` and `load` install their own.
    global _terminated_by
    _terminated_by = signum
    raise SystemExit(128 + signum)


def main() -> None:
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    try:
        # Without standalone mode click returns a command's `typer.Exit` code instead of exiting.
        code = app(standalone_mode=False)
    except BaseException as exc:
        if _terminated_by is not None:
            if os.environ.get("MEMSTACK_DEBUG") and not isinstance(exc, SystemExit):
                traceback.print_exception(exc)
            sys.exit(128 + _terminated_by)
        _exit_for(exc)
    if _terminated_by is not None:  # the SystemExit was swallowed by the code it interrupted
        sys.exit(128 + _terminated_by)
    if isinstance(code, int) and code:
        sys.exit(code)


def _exit_for(exc: BaseException) -> None:
    """Exit as `exc` calls for: one line and its code for what the operator can act on."""
    if isinstance(exc, MemstackError):
        if os.environ.get("MEMSTACK_DEBUG"):
            raise exc
        print(f"memstack: {exc}", file=sys.stderr)
        sys.exit(exc.exit_code)
    if isinstance(exc, typer.Exit):
        sys.exit(exc.exit_code)
    if isinstance(exc, typer.Abort):
        sys.exit(130)
    if isinstance(exc, TyperException):
        # Usage errors (unknown option, missing argument): one line, exit 2 as click does.
        print(f"memstack: {exc.format_message()}", file=sys.stderr)
        sys.exit(2 if exc.exit_code in (1, 2) else exc.exit_code)
    if isinstance(exc, KeyboardInterrupt):
        sys.exit(130)
    if isinstance(exc, OSError) and exc.filename is not None and not os.environ.get("MEMSTACK_DEBUG"):
        # A path the operator named or set (a home, a results or WAL directory) that cannot be
        # used; an OSError without a path is no operator's to fix, and keeps its traceback.
        print(f"memstack: {exc.filename}: {exc.strerror}", file=sys.stderr)
        sys.exit(2)
    raise exc
