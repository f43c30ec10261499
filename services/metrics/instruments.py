"""The metrics service's Prometheus metrics, on a registry of its own (served at its /metrics)."""

from prometheus_client import CollectorRegistry

REGISTRY = CollectorRegistry(auto_describe=True)
