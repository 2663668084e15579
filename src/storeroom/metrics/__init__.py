"""Metrics: Prometheus series of every process, served at GET /metrics."""
