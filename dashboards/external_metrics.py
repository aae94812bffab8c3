"""Names of the metrics that other software exports, each defined once for the dashboards,
the alert rules and their tests. Versions: redis_exporter 1.45 and postgres_exporter 0.11
(Debian, the local stack), CloudNativePG 1.27 with the Barman Cloud plugin, kube-state-metrics
and the kubelet (Kubernetes)."""

from __future__ import annotations

# redis_exporter (the local stack runs Debian's; on Kubernetes, the Redis chart's metrics sidecar).
REDIS_UP = "redis_up"
REDIS_MEMORY_USED = "redis_memory_used_bytes"
REDIS_MEMORY_MAX = "redis_memory_max_bytes"
REDIS_COMMANDS = "redis_commands_processed_total"
REDIS_CLIENTS = "redis_connected_clients"
REDIS_AOF_DELAYED_FSYNC = "redis_aof_delayed_fsync"
REDIS_EVICTED_KEYS = "redis_evicted_keys_total"

# postgres_exporter (local). PG_REPLICATION_LAG comes from the query file the local stack adds.
PG_UP = "pg_up"
PG_BACKENDS = "pg_stat_database_numbackends"
PG_XACT_COMMIT = "pg_stat_database_xact_commit"
PG_XACT_ROLLBACK = "pg_stat_database_xact_rollback"
PG_DATABASE_SIZE = "pg_database_size_bytes"
PG_ARCHIVED = "pg_stat_archiver_archived_count"
PG_ARCHIVE_FAILED = "pg_stat_archiver_failed_count"
PG_LAST_ARCHIVE_AGE = "pg_stat_archiver_last_archive_age"
PG_REPLICATION_LAG = "pg_replication_lag"

# CloudNativePG's instance metrics (Kubernetes): the same facts under the operator's names.
CNPG_BACKENDS = "cnpg_backends_total"
CNPG_XACT_COMMIT = "cnpg_pg_stat_database_xact_commit"
CNPG_XACT_ROLLBACK = "cnpg_pg_stat_database_xact_rollback"
CNPG_DATABASE_SIZE = "cnpg_pg_database_size_bytes"
CNPG_ARCHIVED = "cnpg_pg_stat_archiver_archived_count"
CNPG_ARCHIVE_FAILED = "cnpg_pg_stat_archiver_failed_count"
CNPG_LAST_ARCHIVE_AGE = "cnpg_pg_stat_archiver_seconds_since_last_archival"
CNPG_REPLICATION_LAG = "cnpg_pg_replication_lag"
# With the Barman Cloud plugin, backup times come from the plugin (it supersedes the
# operator's own cnpg_collector_last_available_backup_timestamp).
BACKUP_LAST_AVAILABLE = "barman_cloud_cloudnative_pg_io_last_available_backup_timestamp"

# kube-state-metrics and the kubelet.
HPA_CURRENT_REPLICAS = "kube_horizontalpodautoscaler_status_current_replicas"
HPA_DESIRED_REPLICAS = "kube_horizontalpodautoscaler_status_desired_replicas"
HPA_MAX_REPLICAS = "kube_horizontalpodautoscaler_spec_max_replicas"
VOLUME_AVAILABLE = "kubelet_volume_stats_available_bytes"
VOLUME_CAPACITY = "kubelet_volume_stats_capacity_bytes"

# Series that only exist on Kubernetes: a panel query reading nothing else may return no data
# on the local stack (the panel-query test accepts exactly these).
KUBERNETES_ONLY = frozenset(
    {
        HPA_CURRENT_REPLICAS,
        HPA_DESIRED_REPLICAS,
        HPA_MAX_REPLICAS,
        BACKUP_LAST_AVAILABLE,
        VOLUME_AVAILABLE,
        VOLUME_CAPACITY,
    }
)
