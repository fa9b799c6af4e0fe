"""This process's metrics: one Prometheus registry per process, for every layer.

Anything registered in `metrics_registry()` (the runtime's own counters, the serving
layer's, a user's `serve.metrics`) is what this process reports; each node collects its
processes' registries and serves them together on its metrics endpoint.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry

__all__ = ["metrics_registry"]

_registry = CollectorRegistry(auto_describe=True)


def metrics_registry() -> CollectorRegistry:
    """The process-wide registry (the same object for the life of the process)."""
    return _registry
