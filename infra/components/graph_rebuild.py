"""Rebuild the Neo4j graph from Postgres: a Job that re-projects every row, Neo4j staying up.

Neo4j holds a projection of Postgres, the source of truth. After Postgres is restored (or
whenever the graph is suspect) this Job replays the projection into the running server: no
dump, no scale-down, no access to Neo4j's volume. It runs after the schema migration; a new
`neo4j.rebuild.runId` replaces the Job, which runs again.
"""

from __future__ import annotations

from dataclasses import dataclass

import pulumi

from infra import names
from infra.components.app_pod import app_egress, app_env
from infra.components.common import Component, app_job
from infra.components.migrations import SCHEMA_STORES
from infra.config import StackConfig

RUN_ANNOTATION = "memstack.dev/rebuild-run"


@dataclass(frozen=True)
class GraphRebuildArgs:
    cfg: StackConfig
    # The schema migration Job: the rebuild writes into the migrated schema.
    migration: pulumi.Resource


def rebuild_requested(cfg: StackConfig) -> bool:
    """On demand, and always after a Postgres restore (the graph then runs ahead of Postgres)."""
    return cfg.neo4j.rebuild.enabled or cfg.postgres.restore is not None


class GraphRebuild(Component):
    def __init__(self, name: str, args: GraphRebuildArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("GraphRebuild", name, opts)
        cfg = args.cfg
        rebuild = cfg.neo4j.rebuild
        self.job = app_job(
            names.NEO4J_REBUILD,
            cfg,
            self,
            step="rebuild",
            command=cfg.memory_service.contract.graph_rebuild_command,
            resources=rebuild.resources,
            env=app_env(cfg, names.NEO4J_REBUILD, SCHEMA_STORES),
            egress=app_egress(cfg, SCHEMA_STORES),
            backoff_limit=2,
            active_deadline_seconds=rebuild.active_deadline_seconds,
            run_annotations={RUN_ANNOTATION: rebuild.run_id},
            depends_on=[args.migration],
        )
        self.register_outputs({"job": names.NEO4J_REBUILD, "run": rebuild.run_id})
