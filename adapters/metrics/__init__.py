"""Metrics on Prometheus (prometheus-client) and the small HTTP server that exposes them with the probes."""
