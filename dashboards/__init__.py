"""Grafana dashboards and Prometheus rules for the memory stack, as code.

`python -m dashboards` regenerates `dashboards/generated/*.json` (one Grafana dashboard each)
and `dashboards/alerts/*.yaml` (Prometheus rule files); both are committed, and a test checks
that regenerating gives the committed files. Metric names come from `memory_core.metrics`
(ours) and `dashboards.external_metrics` (exporters, CloudNativePG, Kubernetes).
"""
