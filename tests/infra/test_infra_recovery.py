"""Recovery on Kubernetes: Postgres restore and replica clusters, the Neo4j rebuild, the Redis restore."""

from __future__ import annotations

import json

import kubernetes_validate
import pytest
from pulumi_runs import Run, check_config

RESTORE = {
    "restore": {"serverName": "memstack-pg", "targetTime": "2026-12-01T10:00:00Z"},
    "backup": {"serverName": "memstack-pg-r1"},
}


def merge(key: str, value: dict) -> str:
    return f"memstack:{key}={json.dumps(value)}"


def cluster_spec(run: Run) -> dict:
    return run.one("Cluster", "memstack-pg").manifest["spec"]


def pod(manifest: dict) -> dict:
    spec = manifest["spec"]
    return (spec["jobTemplate"]["spec"] if manifest["kind"] == "CronJob" else spec)["template"]["spec"]


@pytest.fixture(scope="module")
def restored(run_program_module) -> Run:
    run = run_program_module("prod", merges=[merge("postgres", RESTORE)])
    assert run.error is None, run.error
    return run


# --- Postgres: restore into a new cluster -----------------------------------------------------------


def test_a_restore_bootstraps_from_the_object_store_to_the_target_time(restored):
    spec = cluster_spec(restored)
    assert spec["bootstrap"] == {
        "recovery": {
            "source": "origin",
            "database": "memstack",
            "owner": "memstack",
            "secret": {"name": "memstack-postgres-app"},
            "recoveryTarget": {"targetTime": "2026-12-01T10:00:00Z"},
        }
    }
    assert spec["externalClusters"] == [
        {
            "name": "origin",
            "plugin": {
                "name": "barman-cloud.cloudnative-pg.io",
                "parameters": {"barmanObjectName": "memstack-pg-store", "serverName": "memstack-pg"},
            },
        }
    ]


def test_the_restored_cluster_archives_under_a_new_server_name(restored):
    (archiver,) = cluster_spec(restored)["plugins"]
    assert archiver["isWALArchiver"] is True
    assert archiver["parameters"]["serverName"] == "memstack-pg-r1"
    assert (
        archiver["parameters"]["serverName"]
        != cluster_spec(restored)["externalClusters"][0]["plugin"]["parameters"]["serverName"]
    )


def test_a_restore_into_the_old_wal_path_is_refused():
    run = check_config("prod", merges=[merge("postgres", {"restore": {"serverName": "memstack-pg"}})])
    assert run.error["type"] == "ConfigError"
    assert run.error["message"] == (
        "memstack:postgres.backup.serverName: must differ from restore.serverName (memstack-pg), so that this"
        " cluster never archives into the WAL history it reads from"
    )


def test_a_target_time_without_a_zone_is_refused():
    run = check_config(
        "prod",
        merges=[
            merge("postgres", {**RESTORE, "restore": {"serverName": "memstack-pg", "targetTime": "2026-12-01 10:00"}})
        ],
    )
    assert run.error["message"].startswith("memstack:postgres.restore.targetTime: '2026-12-01 10:00' has no time zone")


def test_a_restore_from_another_object_store_reads_it_and_may_reach_it(run_program):
    source = {
        "serverName": "memstack-pg",
        "objectStore": {
            "destinationPath": "s3://old-region/postgres",
            "endpointUrl": "http://minio.dr.svc:9000",
            "credentialsSecret": "old-region-s3",
        },
    }
    run = run_program("prod", merges=[merge("postgres", {"restore": source})])
    assert run.error is None, run.error
    origin = run.one("ObjectStore", "memstack-pg-source-store").manifest["spec"]["configuration"]
    assert origin["destinationPath"] == "s3://old-region/postgres"
    assert cluster_spec(run)["externalClusters"][0]["plugin"]["parameters"]["barmanObjectName"] == (
        "memstack-pg-source-store"
    )
    assert run.depends_on(run.one("Cluster", "memstack-pg"), run.one("ObjectStore", "memstack-pg-source-store"))
    egress = run.one("NetworkPolicy", "memstack-pg-traffic").manifest["spec"]["egress"]
    assert 9000 in {p["port"] for rule in egress if rule["to"] == [] for p in rule["ports"]}


def test_a_new_cluster_starts_empty(runs):
    for run in runs.values():
        spec = cluster_spec(run)
        assert set(spec["bootstrap"]) == {"initdb"} and "externalClusters" not in spec and "replica" not in spec


# --- Postgres: a replica cluster in a second region -----------------------------------------------

REPLICA = {
    "replica": {
        "serverName": "memstack-pg",
        "objectStore": {
            "destinationPath": "s3://memstack-prod-backups/postgres",
            "credentialsSecret": "memstack-backup-s3",
        },
    },
    "backup": {
        "serverName": "memstack-pg-dr",
        "objectStore": {
            "destinationPath": "s3://memstack-dr-backups/postgres",
            "credentialsSecret": "memstack-backup-s3",
        },
    },
}


@pytest.fixture(scope="module")
def standby(run_program_module) -> Run:
    run = run_program_module("prod", merges=[merge("postgres", REPLICA)])
    assert run.error is None, run.error
    return run


def test_a_replica_cluster_follows_the_primarys_object_store(standby):
    spec = cluster_spec(standby)
    assert spec["replica"] == {"enabled": True, "source": "origin"}
    assert spec["bootstrap"]["recovery"]["source"] == "origin"
    assert spec["externalClusters"][0]["plugin"]["parameters"] == {
        "barmanObjectName": "memstack-pg-source-store",
        "serverName": "memstack-pg",
    }
    origin = standby.one("ObjectStore", "memstack-pg-source-store").manifest["spec"]["configuration"]
    assert origin["destinationPath"] == "s3://memstack-prod-backups/postgres"


def test_a_standby_stack_runs_nothing_that_writes(standby):
    assert standby.outputs["standby"] is True
    kinds = {r.kind for r in standby.resources if r.type.startswith("kubernetes:")}
    assert not {"Deployment", "StatefulSet", "Job", "CronJob"} & kinds
    assert not standby.kinds("ScheduledBackup")
    assert {r.raw_inputs["name"] for r in standby.kinds("Release")} >= {"cnpg", "barman-cloud"}


def test_promoting_the_replica_deploys_the_rest(run_program):
    promoted = {**REPLICA, "replica": {**REPLICA["replica"], "enabled": False}}
    run = run_program("prod", merges=[merge("postgres", promoted), merge("neo4j", {"rebuild": {"enabled": True}})])
    assert run.error is None, run.error
    assert cluster_spec(run)["replica"] == {"enabled": False, "source": "origin"}
    assert run.one("Deployment", "memstack-api") and run.one("Job", "memstack-neo4j-rebuild")


def test_the_replica_stack_file_is_a_standby(runs_dr):
    assert runs_dr.error is None, runs_dr.error
    assert runs_dr.outputs["standby"] is True
    assert cluster_spec(runs_dr)["replica"]["enabled"] is True


@pytest.fixture(scope="module")
def runs_dr(run_program_module) -> Run:
    return run_program_module("prod-dr")


# --- Neo4j: rebuilt from Postgres, never stopped --------------------------------------------------


def test_a_restore_rebuilds_the_graph_after_the_migration(restored):
    job = restored.one("Job", "memstack-neo4j-rebuild")
    spec = pod(job.manifest)
    assert spec["containers"][0]["command"] == ["memstack", "graph", "rebuild"]
    assert restored.depends_on(job, restored.one("Job", "memstack-migrate"))
    env = {v["name"] for v in spec["containers"][0]["env"]}
    assert {"POSTGRES_URL", "NEO4J_URI", "NEO4J_PASSWORD", "MEMORY_EMBEDDING_DIM"} <= env
    assert job.delete_before_replace


def test_a_new_run_id_replaces_the_rebuild_job(run_program):
    first = run_program("dev", 'memstack:neo4j={"rebuild": {"enabled": true, "runId": "r1"}}')
    second = run_program("dev", 'memstack:neo4j={"rebuild": {"enabled": true, "runId": "r2"}}')
    annotations = [
        r.one("Job", "memstack-neo4j-rebuild").manifest["spec"]["template"]["metadata"]["annotations"]
        for r in (first, second)
    ]
    assert annotations == [{"memstack.dev/rebuild-run": "r1"}, {"memstack.dev/rebuild-run": "r2"}]


def test_no_recovery_step_touches_neo4j_itself(restored, runs):
    """The old nightly dump: mounted the volume root of `data-memstack-neo4j-0` (the chart keeps the
    store under a `data` sub-path), could sit in Multi-Attach on another node (the volume is
    ReadWriteOnce), scaled the StatefulSet to 0 and left it there when the dump failed, and so
    took every API pod out of its Service (`/ready` needs Neo4j). Nothing of that may come back."""
    for run in (restored, *runs.values()):
        for manifest in [r.manifest for r in run.kinds("Deployment", "StatefulSet", "Job", "CronJob")]:
            spec = pod(manifest)
            claims = {
                v["persistentVolumeClaim"]["claimName"] for v in spec.get("volumes", []) if "persistentVolumeClaim" in v
            }
            assert not {c for c in claims if c.startswith("data-memstack-neo4j")}, manifest["metadata"]["name"]
            for container in spec["containers"] + spec.get("initContainers", []):
                argv = " ".join(container.get("command", []) + container.get("args", []))
                assert "kubectl" not in argv and "scale" not in argv.split(), manifest["metadata"]["name"]
        for role in run.kinds("Role"):
            resources = {res for rule in role.manifest["rules"] for res in rule["resources"]}
            assert not {"statefulsets", "statefulsets/scale"} & resources, role.name


def test_community_edition_has_no_backup_to_switch_on():
    run = check_config("prod", 'memstack:neo4j={"backup": {"enabled": true}}')
    assert run.error["message"].startswith("memstack:neo4j.backup.enabled: community edition has no online backup")


# --- Redis: restore from a snapshot, as config ------------------------------------------------------


@pytest.fixture(scope="module")
def redis_restored(run_program_module) -> Run:
    run = run_program_module("prod", merges=[merge("redis", {"restore": {"snapshot": "dump-20261201T030000.rdb"}})])
    assert run.error is None, run.error
    return run


def test_redis_restores_its_snapshot_before_it_starts(redis_restored):
    spec = pod(redis_restored.one("StatefulSet", "memstack-redis").manifest)
    (restore,) = spec["initContainers"]
    script = restore["command"][-1]
    assert "/snapshots/dump-20261201T030000.rdb" in script
    # The damaged AOF is kept, the snapshot becomes the new AOF, and it happens once.
    assert 'mv /data/appendonlydir "/data/appendonlydir.before-restore-$stamp"' in script
    assert "config set appendonly yes" in script and "/data/.restored-dump-20261201T030000.rdb" in script
    assert "rm " not in script
    mounts = {m["name"]: m for m in restore["volumeMounts"]}
    assert mounts["snapshots"]["readOnly"] is True and mounts["data"]["mountPath"] == "/data"
    claims = {
        v["name"]: v["persistentVolumeClaim"]["claimName"] for v in spec["volumes"] if "persistentVolumeClaim" in v
    }
    assert claims == {"snapshots": "memstack-redis-snapshots"}


def test_the_snapshot_job_runs_beside_redis_so_the_volume_never_multi_attaches(redis_restored):
    spec = pod(redis_restored.one("CronJob", "memstack-redis-snapshot").manifest)
    (term,) = spec["affinity"]["podAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
    assert term["topologyKey"] == "kubernetes.io/hostname"
    assert term["labelSelector"]["matchLabels"]["app.kubernetes.io/name"] == "memstack-redis"


def test_a_redis_restore_needs_the_snapshot_volume():
    run = check_config("dev", 'memstack:redis={"restore": {"snapshot": "dump-20261201T030000.rdb"}}')
    assert run.error["message"] == (
        "memstack:redis.restore: snapshots live on the snapshot volume; it needs snapshot.enabled true"
    )


def test_redis_starts_as_before_without_a_restore(runs):
    for run in runs.values():
        assert "initContainers" not in pod(run.one("StatefulSet", "memstack-redis").manifest)


def test_every_recovery_object_is_valid_and_passes_the_policy(restored, redis_restored, standby):
    from infra.policy import rules

    for run in (restored, redis_restored, standby):
        assert run.core_objects
        for resource in run.core_objects:
            kubernetes_validate.validate(resource.manifest, "1.31", strict=True)
        violations = [m for manifest in run.manifests for rule in rules.OBJECT_RULES.values() for m in rule(manifest)]
        violations += [m for rule in rules.STACK_RULES.values() for m in rule(run.manifests)]
        assert not violations, "\n".join(violations)
