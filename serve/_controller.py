"""The Serve controller: one named actor that keeps the cluster in the desired state.

Drivers send targets (`deploy`, `delete`); a reconcile loop steps every deployment
(`DeploymentState.step`) every TICK_S or at once after a change; routers long-poll
`listen` for their deployment's replica set. The same loop steps the HTTP proxies
(`ProxyState.step` over the cluster's nodes: one on the head node, or one per node for
EveryNode, following nodes that join and leave); proxies long-poll `listen_routes`.
After every change of targets or replica membership the controller checkpoints to the
head's KV; a restarted controller reads the checkpoint and adopts the replicas and proxies
still alive (they are named actors), so traffic keeps flowing while it is down: routers
and proxies keep their last replica sets and routes.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import pickle
import secrets
import time
from typing import Any

import actors
from actors.messages import ActorState
from actors.system import current_runtime

from ._deployment_state import DeploymentState
from ._http import HTTPProxyActor
from ._proxy_state import HEALTHY, PROXY_PREFIX, NodeView, ProxyState, proxy_actor_name
from ._replica import ReplicaActor
from ._router import ignore_outcome
from .messages import DeploymentTarget, ReplicaInfo, ReplicaSet

__all__ = ["ServeController", "CONTROLLER_NAME", "SERVE_NAMESPACE", "CHECKPOINT_KEY", "replica_actor_name"]

log = logging.getLogger(__name__)
CONTROLLER_NAME = "SERVE_CONTROLLER"
SERVE_NAMESPACE = "serve"
CHECKPOINT_KEY = "serve/controller-checkpoint"
STATUS_KEY = "serve/status.json"  # a plain summary for `zeroserve status` (no serve import needed)
TICK_S = 0.1
NODES_EVERY_S = 0.5  # how often the controller re-reads the node table (for the proxies)


def replica_actor_name(replica_id: str) -> str:
    return f"SERVE_REPLICA::{replica_id}"


class _ActorIO:
    """The controller's seam to the actors it runs: calls return ObjectRefs, kills tasks."""

    def __init__(self, detached: bool) -> None:
        self.detached = detached

    def call(self, handle: actors.ActorHandle, method: str, *args: Any) -> actors.ObjectRef:
        ref = getattr(handle, method).remote(*args)
        ref.future().add_done_callback(ignore_outcome)  # an actor dropped with a call pending: no noise
        return ref

    def kill(self, handle: actors.ActorHandle) -> asyncio.Task:
        rt = current_runtime()
        return rt.background(_kill(rt, handle))


class _ActorReplicaIO(_ActorIO):
    """Replicas are actors, spread over the nodes by deployment."""

    def start(self, target: DeploymentTarget, replica_id: str) -> actors.ActorHandle:
        cls = actors.remote(
            name=replica_actor_name(replica_id), namespace=SERVE_NAMESPACE,
            lifetime="detached" if self.detached else None,
            max_concurrency=target.config.max_ongoing_requests + 16, **target.config.actor_options,
            spread_group=f"serve:{target.name}",  # a deployment's replicas go to different nodes first
        )(ReplicaActor)
        return cls.remote(target.name, replica_id.split("#", 1)[1], target.app, target.code,
                          target.config.user_config, target.is_function, target.config.max_ongoing_requests)


class _ActorProxyIO(_ActorIO):
    """Proxies are actors pinned to their node."""

    def __init__(self, detached: bool, http_options: dict[str, Any]) -> None:
        super().__init__(detached)
        self.http_options = http_options

    def start(self, node: NodeView) -> actors.ActorHandle:
        cls = actors.remote(
            name=proxy_actor_name(node.node_id, secrets.token_hex(3)), namespace=SERVE_NAMESPACE,
            lifetime="detached" if self.detached else None, node_id=node.node_id,
            max_concurrency=100_000, max_restarts=0,  # the controller restarts it (while its node lives)
        )(HTTPProxyActor)
        return cls.remote(self.http_options.get("host", "127.0.0.1"), self.http_options.get("port", 8000),
                          self.http_options)


async def _kill(rt: Any, handle: actors.ActorHandle) -> None:
    try:
        await rt.call_head("kill_actor", handle.actor_id, True)
    except Exception as e:
        log.warning("could not kill %s: %s", handle, e)


class ServeController:
    def __init__(self, detached: bool = False, http_options: dict[str, Any] | None = None) -> None:
        self.detached = detached
        self.http_options = dict(http_options or {})
        self.io = _ActorReplicaIO(detached)
        self.deployments: dict[str, DeploymentState] = {}
        self._changed = asyncio.Event()
        self._kick = asyncio.Event()
        self._membership: tuple = ()
        self._routes: dict[str, str] = {}
        self._published: dict[str, Any] | None = None
        self.routes_version = _version_base()
        self.proxies = ProxyState(self.http_options.get("location", "HeadOnly"),
                                  _ActorProxyIO(detached, self.http_options))
        self._nodes: list[NodeView] = []
        self._nodes_at = 0.0
        self._ready = asyncio.get_running_loop().create_task(self._start())

    # -- life --------------------------------------------------------------------------
    async def _start(self) -> None:
        await self._recover()
        await self._refresh_nodes(time.monotonic())
        self._reconcile(time.monotonic())  # proxies are STARTING before the first status answer
        self._loop_task = asyncio.get_running_loop().create_task(self._run())

    async def _refresh_nodes(self, now: float) -> None:
        infos = await current_runtime().call_head("nodes")
        self._nodes = [NodeView(n.node_id.hex, n.ip, n.alive, n.is_head) for n in infos]
        self._nodes_at = now

    async def _run(self) -> None:
        while True:
            try:
                now = time.monotonic()
                if now - self._nodes_at >= NODES_EVERY_S:
                    await self._refresh_nodes(now)
                self._reconcile(time.monotonic())
                await self._checkpoint_if_changed()
                await self._publish_status()
            except Exception:
                log.exception("reconcile step failed; retrying")
            try:
                await asyncio.wait_for(self._kick.wait(), TICK_S)
            except asyncio.TimeoutError:
                pass
            self._kick.clear()

    def _reconcile(self, now: float) -> None:
        changed = False
        for name, state in list(self.deployments.items()):
            changed |= state.step(now)
            if state.finished:
                del self.deployments[name]
                changed = True
        routes = {s.target.route_prefix: name for name, s in self.deployments.items()
                  if s.target.route_prefix is not None and not s.deleting and s.running()}
        if routes != self._routes:
            self._routes = routes
            self.routes_version += 1
            changed = True
        changed |= self.proxies.step(now, self._nodes)
        if changed:
            self._changed.set()
            self._changed = asyncio.Event()

    # -- checkpoint and recovery -------------------------------------------------------
    def _snapshot(self) -> tuple:
        return tuple(sorted(
            (name, s.target.version, s.deleting,
             tuple(sorted((r.replica_id, r.version, r.state) for r in s.replicas.values())))
            for name, s in self.deployments.items()))

    async def _checkpoint_if_changed(self) -> None:
        snap = self._snapshot()
        if snap == self._membership:
            return
        state = {
            "targets": [s.target for s in self.deployments.values()],
            "deleting": [n for n, s in self.deployments.items() if s.deleting],
            "replicas": {n: [(r.replica_id, r.version, r.user_config, r.state) for r in s.replicas.values()]
                         for n, s in self.deployments.items()},
            "http_options": self.http_options,
        }
        await current_runtime().call_head("kv_put", CHECKPOINT_KEY, pickle.dumps(state))
        self._membership = snap

    async def _publish_status(self) -> None:
        summary = {name: {"app": s.target.app, "status": s.status, "replicas": s.counts(), "target": s.desired,
                          "route_prefix": s.target.route_prefix, "message": s.message}
                   for name, s in sorted(self.deployments.items())}
        if summary != self._published:
            await current_runtime().call_head("kv_put", STATUS_KEY, json.dumps(summary).encode())
            self._published = summary

    async def _recover(self) -> None:
        await self._recover_deployments()
        await self._adopt_proxies()

    async def _adopt_proxies(self) -> None:
        """Proxies still running (this controller restarted): keep one per node, kill extras."""
        infos = await current_runtime().call_head("list_actors")
        nodes = {n.node_id.hex: n for n in await current_runtime().call_head("nodes")}
        now = time.monotonic()
        for info in infos:
            if (info.namespace != SERVE_NAMESPACE or not (info.name or "").startswith(PROXY_PREFIX)
                    or info.state is ActorState.DEAD):
                continue
            handle = actors.ActorHandle(info.actor_id, info.class_name, info.methods, info.async_methods, info)
            node = nodes.get(info.name[len(PROXY_PREFIX):].split("::", 1)[0])
            if node is None or node.node_id.hex in self.proxies.proxies:
                self.proxies.io.kill(handle)
                continue
            self.proxies.adopt(NodeView(node.node_id.hex, node.ip, node.alive, node.is_head), handle, now)
        if self.proxies.proxies:
            log.info("adopted %d running HTTP proxies", len(self.proxies.proxies))

    async def _recover_deployments(self) -> None:
        rt = current_runtime()
        blob = await rt.call_head("kv_get", CHECKPOINT_KEY)
        if blob is None:
            return
        state = pickle.loads(blob)
        self.http_options = state.get("http_options", self.http_options)
        self.proxies.location = self.http_options.get("location", "HeadOnly")
        self.proxies.io.http_options = self.http_options
        adopted = 0
        for target in state["targets"]:
            ds = DeploymentState(target, self.io, version_base=_version_base())
            if target.name in state["deleting"]:
                ds.delete()
            for replica_id, version, user_config, replica_state in state["replicas"].get(target.name, ()):
                info = await rt.call_head("get_named_actor", replica_actor_name(replica_id), SERVE_NAMESPACE)
                if info is None or info.state is ActorState.DEAD:
                    continue
                handle = actors.ActorHandle(info.actor_id, info.class_name, info.methods, info.async_methods, info)
                ds.adopt(replica_id, handle, version, user_config, time.monotonic(), replica_state)
                adopted += 1
            self.deployments[target.name] = ds
        log.info("recovered %d deployments and adopted %d running replicas", len(self.deployments), adopted)

    # -- API for drivers ---------------------------------------------------------------
    async def deploy(self, targets: list[DeploymentTarget]) -> dict[str, bool]:
        """Set desired states; returns {name: changed}."""
        await asyncio.shield(self._ready)  # a cancelled call must not cancel the start
        out = {}
        for target in targets:
            state = self.deployments.get(target.name)
            if state is None:
                self.deployments[target.name] = DeploymentState(target, self.io, version_base=_version_base())
                out[target.name] = True
            else:
                if target.version_given and target.version == state.target.version:
                    # Same code version: only the config may change (replicas, user_config...).
                    target = _same_code(state.target, target)
                out[target.name] = state.update(target)
        self._kick.set()
        return out

    async def delete(self, names: list[str]) -> None:
        await asyncio.shield(self._ready)  # a cancelled call must not cancel the start
        for name in names:
            if name in self.deployments:
                self.deployments[name].delete()
        self._kick.set()

    async def delete_app(self, app: str) -> list[str]:
        names = [n for n, s in self.deployments.items() if s.target.app == app]
        await self.delete(names)
        return names

    async def wait_deleted(self, names: list[str], timeout_s: float) -> bool:
        deadline = time.monotonic() + timeout_s
        while any(n in self.deployments for n in names):
            if time.monotonic() > deadline:
                return False
            await self._next_change(deadline)
        return True

    async def _next_change(self, deadline: float) -> None:
        try:
            await asyncio.wait_for(self._changed.wait(), max(0.0, min(deadline - time.monotonic(), 1.0)))
        except asyncio.TimeoutError:
            pass

    async def status(self) -> dict[str, Any]:
        await asyncio.shield(self._ready)  # a cancelled call must not cancel the start
        apps: dict[str, dict[str, Any]] = {}
        for name, s in self.deployments.items():
            app = apps.setdefault(s.target.app, {"deployments": {}})
            app["deployments"][name] = {
                "status": s.status, "message": s.message, "replicas": s.counts(),
                "target_replicas": s.desired, "version": s.target.version, "route_prefix": s.target.route_prefix,
                "replica_details": [{"replica_id": r.replica_id, "state": r.state, "version": r.version,
                                     "actor_id": r.handle.actor_id.hex} for r in s.replicas.values()],
            }
        for app in apps.values():
            states = {d["status"] for d in app["deployments"].values()}
            app["status"] = ("UNHEALTHY" if "UNHEALTHY" in states else "DELETING" if states == {"DELETING"}
                             else "RUNNING" if states == {"HEALTHY"} else "DEPLOYING")
        # Middlewares as text: a driver asking for the status may not be able to import their classes.
        http = {**self.http_options, "middlewares": [repr(m) for m in self.http_options.get("middlewares", ())]}
        return {"applications": apps, "http_options": http, "proxies": self.proxies.status()}

    async def targets(self) -> dict[str, DeploymentTarget]:
        await asyncio.shield(self._ready)  # a cancelled call must not cancel the start
        return {n: s.target for n, s in self.deployments.items() if not s.deleting}

    async def listen(self, deployment: str, known_version: int, hold_s: float) -> ReplicaSet:
        """Long poll: the replica set of `deployment` once its version differs from `known_version`."""
        await asyncio.shield(self._ready)  # a cancelled call must not cancel the start
        deadline = time.monotonic() + hold_s
        while True:
            s = self.deployments.get(deployment)
            if s is None:
                return ReplicaSet(deployment, -1, (), exists=False)
            if s.routing_version != known_version or time.monotonic() >= deadline:
                return ReplicaSet(deployment, s.routing_version,
                                  tuple(ReplicaInfo(r.replica_id, r.handle, s.target.config.max_ongoing_requests)
                                        for r in s.running()),
                                  s.target.config.max_queued_requests,
                                  extra={"metrics_interval_s": _metrics_interval(s)})
            await self._next_change(deadline)

    async def listen_routes(self, known_version: int, hold_s: float) -> tuple[int, dict[str, str]]:
        """Long poll for proxies: the route table once its version differs from theirs."""
        await asyncio.shield(self._ready)  # a cancelled call must not cancel the start
        deadline = time.monotonic() + hold_s
        while self.routes_version == known_version and time.monotonic() < deadline:
            await self._next_change(deadline)
        return self.routes_version, dict(self._routes)

    def record_load(self, source: str, deployment: str, ongoing: float) -> None:
        """A router's requests in flight (and queued) for `deployment`, for autoscaling."""
        state = self.deployments.get(deployment)
        if state is not None:
            state.record_load(time.monotonic(), source, ongoing)

    async def shutdown(self, timeout_s: float = 60.0) -> bool:
        """Drain the proxies, delete every deployment, stop the proxies and drop the
        checkpoint, all within `timeout_s` in total (the driver waits a little longer, then
        kills whatever is left itself). True if every deployment was deleted in time."""
        deadline = time.monotonic() + timeout_s
        reserve = min(10.0, timeout_s / 4)  # kept back for stopping the proxies and the checkpoint

        def left(keep: float = 0.0) -> float:
            return max(0.0, deadline - time.monotonic() - keep)

        # Proxies drain first (healthz 503) and still serve while the deployments finish
        # their requests; then they stop accepting and finish theirs before they are killed.
        proxies = [e.handle for e in self.proxies.proxies.values() if e.handle is not None and e.state == HEALTHY]
        await _all_answered([self.proxies.io.call(h, "start_draining") for h in proxies], min(5.0, left(2 * reserve)))
        names = list(self.deployments)
        await asyncio.wait_for(self.delete(names), max(left(2 * reserve), 1.0))
        done = await self.wait_deleted(names, left(2 * reserve))
        drain_s = left(reserve)
        await _all_answered([self.proxies.io.call(h, "drain", max(drain_s - 1.0, 0.0)) for h in proxies], drain_s)
        kills = self.proxies.stop_all()
        if kills:
            await asyncio.wait(kills, timeout=max(left(reserve / 2), 0.5))
        for key in (CHECKPOINT_KEY, STATUS_KEY):
            await current_runtime().call_head("kv_delete", key, timeout=max(left(), 1.0))
        self._membership = ()
        return done



async def _all_answered(refs: list[Any], timeout_s: float) -> None:
    """Wait for calls to answer (or fail), at most `timeout_s`; best effort."""
    if refs:
        await asyncio.wait([asyncio.ensure_future(_outcome(r)) for r in refs], timeout=timeout_s)


async def _outcome(ref: Any) -> None:
    try:
        await ref
    except Exception as e:
        log.debug("a proxy did not drain cleanly: %r", e)


def _version_base() -> int:
    """Where a route table's or replica set's versions start: the wall clock in µs, so a
    restarted controller (or a re-created deployment) starts above any version a proxy or
    router may still hold, and the long polls answer them at once."""
    return time.time_ns() // 1000


def _metrics_interval(state: DeploymentState) -> float | None:
    """How often routers should report load: None without autoscaling."""
    cfg = state.target.config.autoscaling_config
    if cfg is None:
        return None
    return min(float(cfg.get("metrics_interval_s", 10.0)), 1.0)


def _same_code(current: DeploymentTarget, new: DeploymentTarget) -> DeploymentTarget:
    """Keep the running code (its replicas stay) while taking the new config."""
    return dataclasses.replace(new, code=current.code)
