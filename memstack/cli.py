"""The `memstack` operator CLI.

Every failure an operator can cause or fix ends in one line on stderr and exit code 2;
a traceback is a bug (set MEMSTACK_DEBUG=1 to see one).
"""
from __future__ import annotations

import os
import shlex
import shutil
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer
from typer.exceptions import TyperException
from rich.console import Console
from rich.table import Table

from memstack.errors import MemstackError
from memstack.local.backend import BACKEND_ENV, CORE_SERVICES, OPTIONAL_SERVICES, SERVICES, check_service, get_backend
from memstack.local.redis_server import APPENDFSYNC_CHOICES

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
    Optional[str],
    typer.Option("--backend", "-b", help=f"process | containers | external (default: ${BACKEND_ENV} or process)"),
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


def _print_status(backend_name: Optional[str]) -> None:
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
    with_: Annotated[list[str], typer.Option("--with", help="Optional services to add: prometheus")] = [],
    port: Annotated[list[str], typer.Option("--port", help="Pin a port: SERVICE=PORT (repeatable)")] = [],
    appendfsync: Annotated[Optional[str], typer.Option(help="Redis AOF fsync policy: everysec | always")] = None,
) -> None:
    """Start the data tier (Redis, Postgres + pgvector, Neo4j); reuse what already runs."""
    for name in with_:
        check_service(name, OPTIONAL_SERVICES)
    if appendfsync is not None and appendfsync not in APPENDFSYNC_CHOICES:
        raise MemstackError(f"--appendfsync must be one of {', '.join(APPENDFSYNC_CHOICES)}, not {appendfsync!r}")
    ports = _parse_ports(port)
    chosen = get_backend(backend, appendfsync=appendfsync, ports=ports)
    chosen.up(CORE_SERVICES + tuple(dict.fromkeys(with_)))
    for name, value in chosen.endpoints().env().items():
        out.print(f"{name}={_redact(value) if 'PASSWORD' not in name else '***'}", highlight=False)
    out.print("credentials: `eval \"$(memstack env)\"`", highlight=False)


@app.command()
def down(backend: BackendOption = None) -> None:
    """Stop every service of the stack. Data directories are kept."""
    get_backend(backend).down()
    out.print("stack stopped")


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


@app.command()
def kill(service: str, backend: BackendOption = None) -> None:
    """SIGKILL one service, as a crash would (recovery drills)."""
    get_backend(backend).kill(check_service(service))
    out.print(f"{service} killed")


@app.command()
def start(service: str, backend: BackendOption = None) -> None:
    """Restart one service on its existing data and port, and wait until it answers."""
    get_backend(backend).start(check_service(service))
    out.print(f"{service} started")


def main() -> None:
    try:
        app(standalone_mode=False)
    except MemstackError as exc:
        if os.environ.get("MEMSTACK_DEBUG"):
            raise
        print(f"memstack: {exc}", file=sys.stderr)
        sys.exit(exc.exit_code)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except typer.Abort:
        sys.exit(130)
    except TyperException as exc:
        # Usage errors (unknown option, missing argument): one line, exit 2 as click does.
        print(f"memstack: {exc.format_message()}", file=sys.stderr)
        sys.exit(2 if exc.exit_code in (1, 2) else exc.exit_code)
    except KeyboardInterrupt:
        sys.exit(130)
