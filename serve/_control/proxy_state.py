"""The HTTP proxies, moved step by step towards `http_options.location` over the nodes.

`ProxyState.step(now, nodes)` is idempotent and never blocks, like `DeploymentState.step`:
it compares the proxies it runs with the nodes that should have one (HeadOnly: the alive
head node; EveryNode: every alive node; NoServer: none) and starts, checks and stops
proxies through the `ProxyIO` seam, so it runs against fakes in unit tests.

A node runs `http_options.num_workers` proxies (default: half its cores, 1..8), each an
entry of its own keyed by `slot_key(node, worker)` (the first: the node id alone), each
with its own routes and routers; with more than one they share the port (SO_REUSEPORT)
and fail, restart and drain independently.

Proxy life (one entry per node that should have a proxy):
    STARTING --ready--> HEALTHY --health check fails / died--> UNHEALTHY --(killed)--> STARTING
    STARTING --ready raised (e.g. port in use)--> UNHEALTHY, retried after a growing back-off
A proxy that was serving is restarted RESTART_DELAY_S after it is gone: if its node died
with it, the node table says so by then and the node is forgotten instead.
A node that leaves (dead, or no longer wanted) is forgotten; its proxy is killed.
"""

from __future__ import annotations

import enum
import errno
import os
from dataclasses import dataclass, field
from typing import Any, Protocol

from proxy import MiddlewareError

from .._config import HTTPOptions
from ..messages import ProxyStatus
from .health import HealthCheck, Outcome
from .pending import Completion, Pending, describe, error_of

__all__ = ["ProxyState", "ProxyIO", "ProxyEntry", "ProxyFailure", "NodeView", "STARTING", "HEALTHY", "UNHEALTHY",
           "default_workers", "failure_of", "slot_key"]

STARTING, HEALTHY, UNHEALTHY = ProxyStatus.STARTING, ProxyStatus.HEALTHY, ProxyStatus.UNHEALTHY
HEALTH_PERIOD_S = 2.0
HEALTH_TIMEOUT_S = 20.0
START_TIMEOUT_S = 60.0
MAX_BACKOFF_S = 30.0
RESTART_DELAY_S = 1.0  # a serving proxy that died: long enough for the node table to say if its node died too


class ProxyFailure(str, enum.Enum):
    """Why a proxy failed, as far as the user has something to change."""

    PORT_IN_USE = "port_in_use"
    ADDRESS_UNAVAILABLE = "address_unavailable"  # the host is not an address of the node
    MIDDLEWARE = "middleware"  # a middleware could not wrap the proxy's app
    OTHER = "other"

    def __str__(self) -> str:
        return self.value


def failure_of(error: BaseException) -> ProxyFailure:
    if isinstance(error, MiddlewareError):
        return ProxyFailure.MIDDLEWARE
    if isinstance(error, OSError) and error.errno == errno.EADDRINUSE:
        return ProxyFailure.PORT_IN_USE
    if isinstance(error, OSError) and error.errno == errno.EADDRNOTAVAIL:
        return ProxyFailure.ADDRESS_UNAVAILABLE
    return ProxyFailure.OTHER


@dataclass(frozen=True, slots=True)
class NodeView:
    """What the proxy step needs of a node."""

    node_id: str
    ip: str
    alive: bool
    is_head: bool
    cpus: float = 0.0  # its CPU resource (0: not declared)


def default_workers(cpus: float, machine_cores: int | None = None) -> int:
    """Proxy processes for a node: `$ZEROSERVE_PROXY_WORKERS` when the operator sets it
    (a whole number >= 1), else half its cores (the replicas need the rest), at least 1,
    at most 8. Its cores: those of the machine the controller runs on (`machine_cores`,
    default `os.cpu_count()`; a cluster's machines are usually alike), or its CPU resource
    if that is fewer (logical CPUs can be declared above the cores, never more processes)."""
    pinned = os.environ.get("ZEROSERVE_PROXY_WORKERS", "")
    if pinned.isdigit() and int(pinned) >= 1:
        return int(pinned)
    cores = machine_cores or os.cpu_count() or 1
    if cpus >= 1:
        cores = min(cores, int(cpus))
    return max(1, min(8, cores // 2))


def slot_key(node_id: str, worker: int) -> str:
    """The key of a node's proxy worker: the node id for the first, `<node id>#<worker>` after."""
    return f"{node_id}#{worker}" if worker else node_id


class ProxyIO(Protocol):
    # returns a proxy handle; `reuse_port`: it shares its port with its node's other workers
    def start(self, node: NodeView, http_options: HTTPOptions, worker: int = 0, reuse_port: bool = False) -> Any: ...

    def call(self, handle: Any, method: str, *args: Any) -> Pending: ...

    def kill(self, handle: Any) -> Completion: ...  # done once the proxy is gone


@dataclass
class ProxyEntry:
    node: NodeView
    worker: int = 0
    handle: Any = None
    state: ProxyStatus = STARTING
    ready: Pending | None = None
    started_at: float = 0.0
    url: str = ""
    message: str = ""
    failure: ProxyFailure | None = None
    failures: int = 0
    retry_at: float = 0.0
    killing: Completion | None = None
    health: HealthCheck = field(default_factory=HealthCheck)

    def view(self) -> dict[str, Any]:
        return {"node_id": self.node.node_id, "node_ip": self.node.ip, "worker": self.worker, "state": self.state,
                "url": self.url, "message": self.message, "failure": self.failure, "failures": self.failures}


def wanted_nodes(location: str, nodes: list[NodeView]) -> dict[str, NodeView]:
    alive = [n for n in nodes if n.alive]
    if location == "EveryNode":
        return {n.node_id: n for n in alive}
    if location == "HeadOnly":
        return {n.node_id: n for n in alive if n.is_head}
    return {}


class ProxyState:
    def __init__(self, http_options: HTTPOptions, io: ProxyIO) -> None:
        self.http_options = http_options  # the proxies' options (where: `location`)
        self.io = io
        self.proxies: dict[str, ProxyEntry] = {}
        self.stopped = False

    @property
    def location(self) -> str:
        return self.http_options.location

    def workers_on(self, node: NodeView) -> int:
        """How many proxy processes `node` runs (`num_workers`, else by its cores)."""
        return self.http_options.num_workers or default_workers(node.cpus)

    def adopt(self, node: NodeView, handle: Any, now: float, worker: int = 0) -> None:
        """A running proxy found after a controller restart: STARTING until it answers again."""
        entry = ProxyEntry(node, worker, handle, started_at=now)
        entry.ready = self.io.call(handle, "ready")
        self.proxies[slot_key(node.node_id, worker)] = entry

    def stop_all(self) -> list[Completion]:
        """Stop every proxy and start none again (Serve shuts down)."""
        self.stopped = True
        pending = [self.io.kill(e.handle) for e in self.proxies.values() if e.handle is not None]
        self.proxies.clear()
        return pending

    def status(self) -> dict[str, dict[str, Any]]:
        return {node_id: e.view() for node_id, e in sorted(self.proxies.items())}

    # -- the step ----------------------------------------------------------------------
    def step(self, now: float, nodes: list[NodeView]) -> bool:
        """Advance every proxy; True if any proxy changed state."""
        if self.stopped:
            return False
        before = {k: (e.state, e.url) for k, e in self.proxies.items()}
        wanted = {slot_key(node_id, w): (node, w) for node_id, node in wanted_nodes(self.location, nodes).items()
                  for w in range(self.workers_on(node))}
        for key in [k for k in self.proxies if k not in wanted]:
            gone = self.proxies.pop(key)  # its node left (or is no longer wanted)
            if gone.handle is not None:
                self.io.kill(gone.handle)
        for key, (node, worker) in wanted.items():
            entry = self.proxies.get(key)
            if entry is None:
                entry = self.proxies[key] = ProxyEntry(node, worker)
                self._start(entry, now)
            elif entry.state == STARTING:
                self._collect_start(entry, now)
            elif entry.state == HEALTHY:
                self._check_health(entry, now)
            elif entry.state == UNHEALTHY:
                self._retry(entry, now)
        return before != {k: (e.state, e.url) for k, e in self.proxies.items()}

    def _start(self, entry: ProxyEntry, now: float) -> None:
        entry.state, entry.url, entry.started_at = STARTING, "", now
        entry.killing, entry.health = None, HealthCheck()
        if self.workers_on(entry.node) > 1:
            entry.handle = self.io.start(entry.node, self.http_options, entry.worker, True)
        else:
            entry.handle = self.io.start(entry.node, self.http_options)
        entry.ready = self.io.call(entry.handle, "ready")

    def _collect_start(self, entry: ProxyEntry, now: float) -> None:
        assert entry.ready is not None
        if not entry.ready.done():
            if now - entry.started_at > START_TIMEOUT_S:
                self._fail(entry, now, f"the proxy did not start within {START_TIMEOUT_S:.0f}s", ProxyFailure.OTHER)
            return
        error = error_of(entry.ready)
        if error is not None:
            failure = failure_of(error)  # a wrong middleware: its message says it all
            self._fail(entry, now, str(error) if failure is ProxyFailure.MIDDLEWARE else describe(error), failure)
            return
        entry.url = entry.ready.result(0)
        entry.state, entry.message, entry.failure, entry.failures = HEALTHY, "", None, 0
        entry.health.next_at = now + HEALTH_PERIOD_S

    def _check_health(self, entry: ProxyEntry, now: float) -> None:
        outcome = entry.health.poll(now, lambda: self.io.call(entry.handle, "ready"), HEALTH_PERIOD_S, HEALTH_TIMEOUT_S)
        if outcome is None or outcome[0] is Outcome.ANSWERED:
            return
        error = outcome[1]
        if error is not None:
            self._fail(entry, now, f"health check failed: {describe(error)}", failure_of(error), backoff=False)
        else:
            self._fail(entry, now, f"did not answer its health check within {HEALTH_TIMEOUT_S:.0f}s",
                       ProxyFailure.OTHER, backoff=False)

    def _fail(self, entry: ProxyEntry, now: float, message: str, failure: ProxyFailure,
              backoff: bool = True) -> None:
        """Kill the proxy; start another once it is gone (after a back-off if it never started)."""
        entry.state, entry.url, entry.message, entry.failure = UNHEALTHY, "", message, failure
        entry.failures += 1
        entry.retry_at = now + (min(MAX_BACKOFF_S, 2.0 ** (entry.failures - 1)) if backoff else RESTART_DELAY_S)
        entry.ready, entry.health = None, HealthCheck()
        entry.killing = self.io.kill(entry.handle) if entry.handle is not None else None
        entry.handle = None

    def _retry(self, entry: ProxyEntry, now: float) -> None:
        if entry.killing is not None and not entry.killing.done():
            return  # its port is free once it is gone
        if now >= entry.retry_at:
            self._start(entry, now)
