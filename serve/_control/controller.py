"""The Serve controller: one named actor that keeps the cluster in the desired state.

Drivers send targets (`deploy`, `delete`); a reconcile loop steps every deployment
(`DeploymentState.step`) and the HTTP proxies (`ProxyState.step` over the cluster's
nodes) every TICK_S, or at once after a change. What others wait for is published on one
long-poll host: each deployment's replica set (routers), the route table (proxies) and
the status summary (drivers waiting for a roll-out). After every change of targets or
replica membership the controller checkpoints to the head's KV; a restarted controller
recovers from it (`recovery`), so traffic keeps flowing while it is down: routers and
proxies keep their last replica sets and routes.

All I/O goes through `ControllerIO`; with `run_loop=False` nothing runs by itself and a
test drives the controller with `step(now)`.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import time
from collections.abc import Callable
from typing import Any

from actors.system import LongPollHost, Update

from .._config import HTTPOptions
from .._data.client import STATUS_KEY
from .._data.http_proxy import ROUTES_KEY
from .._data.router import replica_set_key
from ..messages import ApplicationStatus, DeploymentTarget, RouteTable
from .checkpoint import Checkpoint, membership
from .deployment_state import DeploymentState
from .io import ActorControllerIO, ControllerIO
from .proxy_state import HEALTHY, NodeView, ProxyState
from .recovery import adopt_proxies, recover_deployments
from .shutdown import shut_down
from .status import deployment_status, replica_set_of

__all__ = ["ServeController", "TICK_S"]

log = logging.getLogger(__name__)
TICK_S = 0.1
NODES_EVERY_S = 0.5  # how often the controller re-reads the node table (for the proxies)


class ServeController:
    def __init__(self, detached: bool = False, http_options: HTTPOptions | None = None, *,
                 io: ControllerIO | None = None,
                 clock: Callable[[], float] = time.monotonic, run_loop: bool = True) -> None:
        self.io: ControllerIO = io if io is not None else ActorControllerIO(detached)
        self.clock = clock
        self.http_options = HTTPOptions.of(http_options)
        self.deployments: dict[str, DeploymentState] = {}
        self.proxies = ProxyState(self.http_options, self.io.proxies)
        self.polls: LongPollHost[str, Any] = LongPollHost()
        self._kick = asyncio.Event()
        self._membership: tuple = ()
        self._published: dict[str, Any] = {}  # long-poll key -> what was published there last
        self._summary: dict[str, Any] | None = None
        self._nodes: list[NodeView] = []
        self._nodes_at = float("-inf")
        self._ready = asyncio.get_running_loop().create_task(self._start(run_loop))

    # -- life --------------------------------------------------------------------------
    async def _start(self, run_loop: bool) -> None:
        now = self.clock()
        recovered = await recover_deployments(self.io, now, _version_base())
        self.deployments = recovered.deployments
        if recovered.http_options is not None:
            self.http_options = recovered.http_options
            self.proxies.http_options = recovered.http_options
        await self._refresh_nodes(now)
        await adopt_proxies(self.io, self.proxies, self._nodes, now)
        self._reconcile(self.clock())  # proxies are STARTING before the first status answer
        if run_loop:
            self._loop_task = asyncio.get_running_loop().create_task(self._run())

    async def ready(self) -> None:
        await asyncio.shield(self._ready)  # a cancelled call must not cancel the start

    async def _refresh_nodes(self, now: float) -> None:
        self._nodes = await self.io.nodes()
        self._nodes_at = now

    async def _run(self) -> None:
        while True:
            try:
                await self.step(self.clock())
            except Exception:
                log.exception("reconcile step failed; retrying")
            try:
                await asyncio.wait_for(self._kick.wait(), TICK_S)
            except asyncio.TimeoutError:
                pass
            self._kick.clear()

    async def step(self, now: float) -> None:
        """One round: the node table (every NODES_EVERY_S), reconcile, checkpoint, summary."""
        if now - self._nodes_at >= NODES_EVERY_S:
            await self._refresh_nodes(now)
        self._reconcile(now)
        await self._checkpoint_if_changed()
        await self._publish_summary()

    def _reconcile(self, now: float) -> None:
        for name, state in list(self.deployments.items()):
            state.step(now)
            if state.finished:
                del self.deployments[name]
        self.proxies.step(now, self._nodes)
        self._publish()

    # -- what others wait for ----------------------------------------------------------
    def _publish(self) -> None:
        """Publish what changed: replica sets, the route table, the status."""
        for name, state in self.deployments.items():
            self._offer(replica_set_key(name), replica_set_of(state))
        for key in [k for k in self._published if k.startswith("replicas/")]:
            if key[len("replicas/"):] not in self.deployments:
                del self._published[key]
                self.polls.remove(key)
        routes = {s.target.route_prefix: name for name, s in self.deployments.items()
                  if s.target.route_prefix is not None and not s.deleting and s.running()}
        self._offer(ROUTES_KEY, RouteTable(routes))
        self._offer(STATUS_KEY, self._status())

    def _offer(self, key: str, value: Any) -> None:
        if self._published.get(key) != value:
            self._published[key] = value
            self.polls.publish(key, value)

    def _status(self) -> dict[str, Any]:
        apps: dict[str, dict[str, Any]] = {}
        for name, s in self.deployments.items():
            app = apps.setdefault(s.target.app, {"deployments": {}})
            app["deployments"][name] = deployment_status(s)
        for app in apps.values():
            app["status"] = ApplicationStatus.of({d["status"] for d in app["deployments"].values()})
        # Middlewares as text: a driver asking for the status may not be able to import their classes.
        http = {**dict(self.http_options), "middlewares": [repr(m) for m in self.http_options.middlewares]}
        return {"applications": apps, "http_options": http, "proxies": self.proxies.status()}

    # -- checkpoint and summary ----------------------------------------------------------
    async def _checkpoint_if_changed(self) -> None:
        snap = membership(self.deployments)
        if snap == self._membership:
            return
        await self.io.save_checkpoint(Checkpoint.of(self.deployments, self.http_options).dumps())
        self._membership = snap

    async def _publish_summary(self) -> None:
        """A plain JSON summary in the head's KV, for `zeroserve status` (which does not import serve)."""
        summary = {name: {"app": s.target.app, "status": s.status, "replicas": s.counts(), "target": s.desired,
                          "route_prefix": s.target.route_prefix, "message": s.message}
                   for name, s in sorted(self.deployments.items())}
        if summary != self._summary:
            await self.io.publish_summary(json.dumps(summary).encode())
            self._summary = summary

    # -- API for drivers ---------------------------------------------------------------
    async def deploy(self, targets: list[DeploymentTarget]) -> dict[str, bool]:
        """Set desired states; returns {name: changed}."""
        await self.ready()
        out = {}
        for target in targets:
            state = self.deployments.get(target.name)
            if state is None:
                self.deployments[target.name] = DeploymentState(target, self.io.replicas, version_base=_version_base())
                out[target.name] = True
            else:
                if target.version_given and target.version == state.target.version:
                    # Same code version: only the config may change (replicas, user_config...).
                    target = _same_code(state.target, target)
                out[target.name] = state.update(target)
        self._reconcile(self.clock())
        self._kick.set()
        return out

    async def delete(self, names: list[str]) -> None:
        await self.ready()
        for name in names:
            if name in self.deployments:
                self.deployments[name].delete()
        self._reconcile(self.clock())
        self._kick.set()

    async def delete_app(self, app: str) -> list[str]:
        await self.ready()
        names = [n for n, s in self.deployments.items() if s.target.app == app]
        await self.delete(names)
        return names

    async def status(self) -> dict[str, Any]:
        await self.ready()
        return self._status()

    async def targets(self) -> dict[str, DeploymentTarget]:
        await self.ready()
        return {n: s.target for n, s in self.deployments.items() if not s.deleting}

    def __actors_drain__(self, timeout_s: float) -> None:
        """Its node stops gracefully: nothing to finish (the state is checkpointed; the
        long polls held here would only delay the stop), so it stops at once."""

    async def listen(self, key: str, known_version: int, hold_s: float) -> Update:
        """Long poll on `key` (a replica set, the route table, the status): answered once its
        version differs from `known_version`, or after `hold_s` with the current one."""
        await self.ready()
        return await self.polls.listen(key, known_version, hold_s)

    def record_load(self, source: str, deployment: str, ongoing: float) -> None:
        """A router's requests in flight (and queued) for `deployment`, for autoscaling."""
        state = self.deployments.get(deployment)
        if state is not None:
            state.record_load(self.clock(), source, ongoing)

    async def shutdown(self, timeout_s: float = 60.0) -> bool:
        """Drain the proxies, delete every deployment, stop the proxies and drop the
        checkpoint, all within `timeout_s` in total (the driver waits a little longer, then
        kills whatever is left itself). True if every deployment was deleted in time."""
        await self.ready()
        proxies = [e.handle for e in self.proxies.proxies.values() if e.handle is not None and e.state == HEALTHY]
        done = await shut_down(self, proxies, timeout_s)
        self._membership = ()
        return done

    async def wait_gone(self, names: list[str], deadline: float) -> bool:
        """Until none of `names` is a deployment any more (True), or the deadline (False)."""
        version = -1
        while any(n in self.deployments for n in names):
            left = deadline - self.clock()
            if left <= 0:
                return False
            version = (await self.polls.listen(STATUS_KEY, version, min(left, 1.0))).version
        return True


def _version_base() -> int:
    """Where a replica set's versions start: the wall clock in µs, so a re-created
    deployment (or a restarted controller) starts above any version a router may hold."""
    return time.time_ns() // 1000


def _same_code(current: DeploymentTarget, new: DeploymentTarget) -> DeploymentTarget:
    """Keep the running code (its replicas stay) while taking the new config."""
    return dataclasses.replace(new, code=current.code)

