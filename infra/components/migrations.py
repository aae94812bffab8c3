"""The schema migration: a Job that runs `memstack migrate` once the stores exist.

The memory service and the worker depend on it, and Pulumi waits for a Job to complete, so
no pod serves traffic against an old schema.
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


@dataclass(frozen=True)
class MigrationsArgs:
    cfg: StackConfig


class Migrations(Component):
    def __init__(self, name: str, args: MigrationsArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("Migrations", name, opts)
        cfg = args.cfg
        ns = cfg.namespace
        contract = cfg.memory_service.contract
        service_account(names.MIGRATIONS, ns, names.MIGRATIONS, cfg, self)
        migrate = container(
            "migrate",
            cfg.memstack_image.ref,
            cfg.migrations.resources,
            pull_policy=cfg.pull_policy,
            command=contract.migrate_command,
            env=app_env(cfg, names.MIGRATIONS, STORES),
        )
        self.job = k8s.batch.v1.Job(
            names.MIGRATIONS,
            metadata=metadata(names.MIGRATIONS, ns, names.MIGRATIONS, cfg),
            spec={
                # Retries cover stores that are still starting when the Job first runs.
                "backoff_limit": cfg.migrations.backoff_limit,
                "active_deadline_seconds": 900,
                "template": {
                    "metadata": {"labels": labels(names.MIGRATIONS, cfg)},
                    "spec": pod_spec(
                        names.MIGRATIONS, [migrate], run_as_user=contract.run_as_user, restart_policy="Never"
                    ),
                },
            },
            # A Job's pod template is immutable: a new image replaces the Job, which runs again.
            opts=self.child_opts(delete_before_replace=True),
        )
        network_policy(
            f"{names.MIGRATIONS}-traffic",
            ns,
            names.MIGRATIONS,
            cfg,
            self,
            pod_labels=selector_labels(names.MIGRATIONS),
            egress=app_egress(cfg, STORES),
        )
        self.register_outputs({"job": names.MIGRATIONS})
