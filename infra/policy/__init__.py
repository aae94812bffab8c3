"""The memstack policy pack: Kubernetes guard rails, validators as plain functions."""
