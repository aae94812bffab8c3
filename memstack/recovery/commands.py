"""The recovery commands of the CLI: `backup` (with `list` and `verify`), `restore`, `drill`."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from memstack.errors import MemstackError
from memstack.recovery import sets

out = Console(width=160, highlight=False)


def _stack():
    # Imported when a command runs: the stack brings the stores' drivers, which `--help` does without.
    from memstack.recovery.stack import LocalStack

    return LocalStack.at()


DirOption = Annotated[
    Path | None,
    typer.Option("--dir", help=f"Backup sets directory (default ${sets.SETS_DIR_ENV} or $MEMSTACK_HOME/backups/sets)"),
]

backup_app = typer.Typer(
    help="Backup sets of the local stack: take one (no sub-command), list, verify.", invoke_without_command=True
)


def _redis_keys(result: dict) -> str:
    expired = result["redis_keys_in_snapshot"] - result["redis_keys"]
    return f"{result['redis_keys']} keys" + (f" (the snapshot's other {expired} expired since)" if expired > 0 else "")


def _mb(n: int) -> str:
    return f"{n / 1e6:.1f} MB"


@backup_app.callback()
def backup(
    ctx: typer.Context,
    to: Annotated[Path | None, typer.Option("--to", help="Write the set under this directory instead")] = None,
) -> None:
    """Take a backup set of the running stack, online; the last line printed is its id."""
    if ctx.invoked_subcommand is not None:
        return
    from memstack.load import output_dir
    from memstack.recovery.backup import backup as take

    stack = _stack()
    sets_dir = output_dir(to, "--to") if to else None
    with stack.exclusive():
        manifest = take(stack, sets_dir)
    pg, rd, neo = manifest["postgres"], manifest["redis"], manifest["neo4j"]
    out.print(
        f"postgres: base backup {pg['start_lsn']}..{pg['stop_lsn']} (timeline {pg['timeline']}) in {pg['seconds']:.1f} s"
    )
    out.print(f"redis: snapshot of {rd['keys']} keys saved at {rd['last_save']}, with its AOF")
    out.print(f"neo4j: no files, rebuilt from Postgres on restore (outbox position {neo['last_outbox_id']})")
    out.print(f"{len(manifest['files'])} files, {_mb(manifest['bytes'])}, {manifest['seconds']:.1f} s")
    print(manifest["id"])


@backup_app.command("list")
def backup_list(dir: DirOption = None) -> None:
    """The backup sets, oldest first."""
    if dir is not None and not dir.is_dir():
        raise MemstackError(f"--dir {dir}: no such directory")
    stack = _stack()
    sets_dir = dir or sets.default_sets_dir(stack.home)
    table = Table(title=f"backup sets in {sets_dir}")
    for column in ("id", "finished", "size", "postgres stop LSN", "redis keys", "seconds"):
        table.add_column(column)
    children = sorted(sets_dir.iterdir()) if sets_dir.is_dir() else []
    for child in children:
        if child.name.endswith(".partial") or not (child / sets.MANIFEST).is_file():
            continue
        try:
            m = sets.load(sets_dir, child.name)
        except MemstackError as exc:
            # Listed, not skipped: a set that cannot be read is one an operator must know of.
            table.add_row(child.name, "UNREADABLE", "-", "-", "-", "-")
            print(f"memstack: warning: {exc}", file=sys.stderr)
            continue
        table.add_row(
            m["id"],
            m["finished_at"],
            _mb(m["bytes"]),
            str(m["postgres"]["stop_lsn"]),
            str(m["redis"]["keys"]),
            f"{m['seconds']:.1f}",
        )
    out.print(table)


@backup_app.command("verify")
def backup_verify(backup_id: Annotated[str, typer.Argument(metavar="ID")], dir: DirOption = None) -> None:
    """Restore a set into a throw-away home on free ports and check it; exit 1 if it does not hold."""
    from memstack.recovery.verify import verify

    stack = _stack()
    with stack.exclusive():
        result = verify(stack, backup_id, dir)
    graph = ", ".join(f"{label} {found}" for label, (_, found) in result["graph"].items())
    out.print(
        f"checksums ok; postgres {sum(result['rows'].values())} rows in range; redis {_redis_keys(result)}; "
        f"graph rebuilt: {graph}; {result['seconds']:.1f} s"
    )
    print(f"backup {backup_id} verified")


@backup_app.command("prune")
def backup_prune(
    keep: Annotated[int, typer.Option(help="Sets to keep, newest first")],
    dir: DirOption = None,
) -> None:
    """Delete older sets and the archived WAL only they need (point-in-time recovery then
    reaches back to the oldest set kept)."""
    from memstack.recovery.backup import prune

    stack = _stack()
    with stack.exclusive():
        result = prune(stack, keep, dir)
    out.print(
        f"removed {len(result['removed_sets'])} sets and {result['wal_files_removed']} archived WAL files; "
        f"kept {', '.join(result['kept_sets']) or 'none'}"
    )


def restore(
    backup_id: Annotated[str, typer.Argument(metavar="ID")],
    to_time: Annotated[
        str | None, typer.Option("--to-time", help="Point in time (ISO 8601, UTC if no offset); default: the latest")
    ] = None,
    force: Annotated[bool, typer.Option("--force", help="Stop a running stack first")] = False,
    dir: DirOption = None,
) -> None:
    """Restore the stack from a backup set (Postgres to a point in time), then rebuild Neo4j."""
    from memstack.recovery.restore import parse_time
    from memstack.recovery.restore import restore as run

    stack = _stack()
    target = parse_time(to_time) if to_time else None
    with stack.exclusive():
        report = run(stack, backup_id, to_time=target, force=force, sets_dir=dir)
    for name, path in report["moved_aside"].items():
        out.print(f"{name}: data moved aside to {path}")
    neo = report["neo4j"]
    out.print(
        f"postgres: recovered to {report['to_time'] or 'the end of the WAL archive'} "
        f"(timeline {report['postgres']['timeline']}) in {report['postgres']['seconds']:.1f} s"
    )
    out.print(f"redis: from its {'append-only file' if report['redis']['from'] == 'aof' else 'snapshot in the set'}")
    out.print(f"neo4j: rebuilt from Postgres, {sum(neo['events'].values())} events in {neo['seconds']:.1f} s")
    if report.get("restarted"):
        out.print(f"restarted: {', '.join(report['restarted'])}")
    out.print("serving after: " + ", ".join(f"{name} {s:.1f} s" for name, s in report["ready_s"].items()))
    print(f"restored from {backup_id} in {report['seconds']:.1f} s")


def drill(
    writes: Annotated[
        int,
        typer.Option(
            min=10,
            help="Writes per round, at least (turns, facts, working-memory keys; writing goes on until the backup ends)",
        ),
    ] = 3000,
    rounds: Annotated[int, typer.Option(min=1, help="Rounds; each after the first starts from the restored stack")] = 2,
    concurrency: Annotated[int, typer.Option(min=1, help="Writers in flight at once")] = 16,
    json_file: Annotated[Path | None, typer.Option("--json", help="Write the results here as JSON")] = None,
    keep: Annotated[
        bool,
        typer.Option(
            "--keep",
            help="Keep each passed round's data moved aside ($MEMSTACK_HOME/attic) and its backup set; "
            "a failed round's are always kept",
        ),
    ] = False,
) -> None:
    """Write through the service, back up mid-stream, destroy every store, restore, reconcile.
    A passed round's wiped data and backup set are removed at its end."""
    from memstack.load import check_output_file
    from memstack.recovery.drill import DrillOptions, print_results, run

    if json_file:
        check_output_file(json_file, "--json")
    stack = _stack()
    with stack.exclusive():
        results = run(stack, DrillOptions(writes=writes, rounds=rounds, concurrency=concurrency, keep=keep), _progress)
    print_results(out, results)
    if json_file:
        json_file.write_text(json.dumps(results, indent=2, default=str))
    if not results["passed"]:
        raise typer.Exit(1)


def _progress(line: str) -> None:
    # stderr: stdout carries the results alone.
    print(f"drill: {line}", file=sys.stderr, flush=True)


graph_app = typer.Typer(help="The Neo4j projection of Postgres.", no_args_is_help=True)


@graph_app.command("rebuild")
def rebuild_graph() -> None:
    """Rebuild the Neo4j projection from Postgres. Stores: the environment's (POSTGRES_URL,
    NEO4J_*) when set, else the stack in $MEMSTACK_HOME."""
    import psycopg

    from memory_core.stores.graph import GRAPH_UNAVAILABLE
    from memstack.recovery.graph import rebuild
    from memstack.service import no_stack_hint, stack_settings

    settings = stack_settings()
    try:
        result = asyncio.run(
            rebuild(
                settings.postgres_url.get_secret_value(),
                settings.neo4j_uri,
                settings.neo4j_user,
                settings.neo4j_password.get_secret_value(),
            )
        )
    except (OSError, psycopg.OperationalError, *GRAPH_UNAVAILABLE) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise MemstackError(f"graph rebuild: cannot reach a store: {first}{no_stack_hint()}") from None
    print(json.dumps(result))
