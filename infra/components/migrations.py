"""The schema migration: a Job that runs `memstack migrate` once the stores exist.

The memory service and the worker depend on it, and Pulumi waits for a Job to complete, so
no pod serves traffic against an old schema.
"""

from __future__ import annotations

from dataclasses import dataclass

import pulumi

from infra import names
from infra.components.app_pod import Store, app_egress, app_env
from infra.components.common import Component, app_job
from infra.config import StackConfig

# The stores that hold a schema; the graph rebuild reads and writes the same two.
SCHEMA_STORES: tuple[Store, ...] = ("postgres", "neo4j")
MIGRATION_DEADLINE_SECONDS = 900


@dataclass(frozen=True)
class MigrationsArgs:
    cfg: StackConfig


class Migrations(Component):
    def __init__(self, name: str, args: MigrationsArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("Migrations", name, opts)
        cfg = args.cfg
        self.job = app_job(
            names.MIGRATIONS,
            cfg,
            self,
            step="migrate",
            command=cfg.memory_service.contract.migrate_command,
            resources=cfg.migrations.resources,
            env=app_env(cfg, names.MIGRATIONS, SCHEMA_STORES),
            egress=app_egress(cfg, SCHEMA_STORES),
            # Retries cover stores that are still starting when the Job first runs.
            backoff_limit=cfg.migrations.backoff_limit,
            active_deadline_seconds=MIGRATION_DEADLINE_SECONDS,
        )
        self.register_outputs({"job": names.MIGRATIONS})
