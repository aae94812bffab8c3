"""Rebuild the Neo4j graph from Postgres: a Job that re-projects every row, Neo4j staying up.

Neo4j holds a projection of Postgres, the source of truth. After Postgres is restored (or
whenever the graph is suspect) this Job replays the projection into the running server: no
dump, no scale-down, no access to Neo4j's volume. It runs after the schema migration; a new
`neo4j.rebuild.runId` replaces the Job, which runs again.
"""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_kubernetes as k8s

from infra import names
from infra.components.app_pod import app_egress, app_env
from infra.components.common import (
    Component,
    container,
    labels,
    metadata,
    network_policy,
    pod_spec,
    selector_labels,
    service_account,
)
from infra.config import StackConfig

STORES = ("postgres", "neo4j")
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
        ns = cfg.namespace
        rebuild = cfg.neo4j.rebuild
        contract = cfg.memory_service.contract
        service_account(names.NEO4J_REBUILD, ns, names.NEO4J_REBUILD, cfg, self)
        step = container(
            "rebuild",
            cfg.memstack_image.ref,
            rebuild.resources,
            pull_policy=cfg.pull_policy,
            command=contract.graph_rebuild_command,
            env=app_env(cfg, names.NEO4J_REBUILD, STORES),
        )
        self.job = k8s.batch.v1.Job(
            names.NEO4J_REBUILD,
            metadata=metadata(
                names.NEO4J_REBUILD,
                ns,
                names.NEO4J_REBUILD,
                cfg,
                # Pulumi waits for the Job to complete, as long as the Job itself may run.
                annotations={"pulumi.com/timeoutSeconds": str(rebuild.active_deadline_seconds)},
            ),
            spec={
                "backoff_limit": 2,
                "active_deadline_seconds": rebuild.active_deadline_seconds,
                "template": {
                    "metadata": {
                        "labels": labels(names.NEO4J_REBUILD, cfg),
                        "annotations": {RUN_ANNOTATION: rebuild.run_id},
                    },
                    "spec": pod_spec(
                        names.NEO4J_REBUILD, [step], run_as_user=contract.run_as_user, restart_policy="Never"
                    ),
                },
            },
            opts=self.child_opts(args.migration, delete_before_replace=True),
        )
        network_policy(
            f"{names.NEO4J_REBUILD}-traffic",
            ns,
            names.NEO4J_REBUILD,
            cfg,
            self,
            pod_labels=selector_labels(names.NEO4J_REBUILD),
            egress=app_egress(cfg, STORES),
        )
        self.register_outputs({"job": names.NEO4J_REBUILD, "run": rebuild.run_id})
