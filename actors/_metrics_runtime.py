"""The runtime's own metrics (`actors_*`): plain integers on the hot path, read at scrape.

`COUNTERS` is this process's one `RuntimeCounters`: the transport, the runtime and the
actor directory add to its integer attributes as calls and bytes go by (one attribute
increment each, no lock, no label lookup: they all run on the runtime's loop thread).
`RuntimeCollector`, registered once in the process's registry (`install()`), turns them
into Prometheus families when someone scrapes, with the open connections of the live
transports and the process's own CPU/memory (`process_*`).

Families:
    actors_calls_total{direction="sent"|"received", kind="actor"|"system"}   counter
        calls (requests and one-way messages) made or received: "actor" for actor
        methods, "system" for the cluster's services (head, agent, runtime endpoints)
    actors_bytes_total{direction="sent"|"received"}                          counter
    actors_open_connections                                                  gauge
        peers this process holds a connection to
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Iterator
from typing import Any, Protocol

from prometheus_client import ProcessCollector
from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, Metric

from ._metrics import metrics_registry

__all__ = ["COUNTERS", "RuntimeCounters", "RuntimeCollector", "install", "track_transport"]


class RuntimeCounters:
    """Monotonic counts of this process's traffic (loop thread only)."""

    __slots__ = ("actor_calls_received", "actor_calls_sent", "bytes_received", "bytes_sent",
                 "system_calls_received", "system_calls_sent")

    def __init__(self) -> None:
        self.actor_calls_sent = 0
        self.actor_calls_received = 0
        self.system_calls_sent = 0
        self.system_calls_received = 0
        self.bytes_sent = 0
        self.bytes_received = 0


COUNTERS = RuntimeCounters()


class _Connections(Protocol):
    def open_connections(self) -> int: ...


_transports: weakref.WeakSet[Any] = weakref.WeakSet()


def track_transport(transport: _Connections) -> None:
    """Count this transport's connections while it lives."""
    _transports.add(transport)


class RuntimeCollector:
    """Reads `COUNTERS` (and the live transports) into families, at scrape time."""

    def __init__(self, counters: RuntimeCounters = COUNTERS) -> None:
        self._c = counters

    def collect(self) -> Iterator[Metric]:
        c = self._c
        calls = CounterMetricFamily("actors_calls", "Calls (requests and one-way messages) this process made "
                                    "or received, by direction and kind (actor methods or system services)",
                                    labels=("direction", "kind"))
        calls.add_metric(("sent", "actor"), c.actor_calls_sent)
        calls.add_metric(("sent", "system"), c.system_calls_sent)
        calls.add_metric(("received", "actor"), c.actor_calls_received)
        calls.add_metric(("received", "system"), c.system_calls_received)
        yield calls
        data = CounterMetricFamily("actors_bytes", "Bytes this process sent or received over the runtime's "
                                   "sockets (frames, before encryption)", labels=("direction",))
        data.add_metric(("sent",), c.bytes_sent)
        data.add_metric(("received",), c.bytes_received)
        yield data
        conns = sum(t.open_connections() for t in list(_transports))
        yield GaugeMetricFamily("actors_open_connections", "Peers this process holds an open connection to",
                                value=conns)

    def describe(self) -> Iterator[Metric]:
        return iter(())  # families are known only when collected; no name clash checks at registration


_installed = False
_lock = threading.Lock()


def install() -> None:
    """Register the runtime's collectors in this process's registry (once per process)."""
    global _installed
    with _lock:
        if _installed:
            return
        registry = metrics_registry()
        registry.register(RuntimeCollector())
        ProcessCollector(registry=registry)
        _installed = True
