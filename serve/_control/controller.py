"""The Serve controller: one named actor that keeps the cluster in the desired state.

Drivers send targets (`deploy`, `delete`); a reconcile loop steps every deployment
(`DeploymentState.step`) and the HTTP proxies (`ProxyState.step` over the cluster's
nodes) every TICK_S, or at once after a change. What others wait for is published on one
long-poll host: each deployment's replica set (routers), the route table (proxies) and
the status summary (drivers waiting for a roll-out). After every change of a deployment's
target or replica membership the controller writes that deployment's record to the head's
KV (`checkpoint`: one value per deployment); a restarted controller recovers from them
(`recovery`), so traffic keeps flowing while it is down: routers and proxies keep their
last replica sets and routes.

Durability: a deploy or delete answers only once the records of the deployments it changed
are written (`changes.DeploymentChanges`, the mixin of `ServeController` that takes
deploys and deletes). A write that fails never stops the rest of a step (reconcile, the
summary): it is retried (`records`) and logged once per change of the record, not per tick.

All I/O goes through `ControllerIO`; with `run_loop=False` nothing runs by itself and a
test drives the controller with `step(now)`.

Serve-wide settings given at `serve.start` (`logging_config`: the controller's and the
proxies' logs and every deployment's default; `tracing_config`) are checkpointed with the
HTTP options and handed to every proxy and replica the controller starts. The controller's
own metrics (replicas healthy, target and running replicas, autoscaling decisions) are read
from its state when the node scrapes it.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Callable
from typing import Any

from actors.system import LongPollHost, Update, node_logs_dir

from .._config import HTTPOptions
from .._data import counting, logs, tracing
from .._data.serve_metrics import controller_metrics
from .._obs_config import LoggingConfig, TracingConfig
from ..messages import (
    ApplicationStatus,
    DeploymentId,
    DeploymentTarget,
    ReplicaId,
    ServeSettings,
)
from .changes import DeploymentChanges, version_base
from .checkpoint import SettingsRecord
from .deployment_state import DeploymentState
from .io import ActorControllerIO, ControllerIO
from .proxy_state import HEALTHY, NodeView, ProxyState
from .publish import Publisher
from .records import RecordKeeper
from .recovery import adopt_proxies, recover_deployments
from .replicas import RUNNING
from .rollout import StartBudget
from .schedule import Schedule
from .shutdown import shut_down
from .status import app_import_path, deployment_status

__all__ = ["ServeController", "TICK_S"]

log = logging.getLogger(__name__)
TICK_S = 0.1
# Replicas starting at once across the cluster (the real controller; $ZEROSERVE_MAX_STARTING_REPLICAS).
MAX_STARTING = 16
NODES_EVERY_S = 0.5  # how often the controller re-reads the node table (for the proxies)


class ServeController(DeploymentChanges):
    def __init__(self, detached: bool = False, http_options: HTTPOptions | None = None,
                 logging_config: LoggingConfig | None = None, tracing_config: TracingConfig | None = None, *,
                 io: ControllerIO | None = None,
                 clock: Callable[[], float] = time.monotonic, run_loop: bool = True,
                 max_starting: int | None = None) -> None:
        settings = ServeSettings(LoggingConfig.of(logging_config),
                                 TracingConfig.of(tracing_config) or (TracingConfig.from_env() if io is None else None))
        if io is None:  # the real controller: its own log file, its traces
            logs.configure(logs.Who.controller(), settings.logging_config, default_dir=node_logs_dir())
            tracing.configure(settings.tracing_config)
        self.io: ControllerIO = io if io is not None else ActorControllerIO(detached)
        if io is None and max_starting is None:
            max_starting = int(os.environ.get("ZEROSERVE_MAX_STARTING_REPLICAS", MAX_STARTING))
        self.starts = None if max_starting is None else StartBudget(max(1, max_starting))
        self.io.settings = settings
        self.clock = clock
        self.http_options = HTTPOptions.of(http_options)
        self.deployments: dict[DeploymentId, DeploymentState] = {}
        self.proxies = ProxyState(self.http_options, self.io.proxies)
        self.polls: LongPollHost[str, Any] = LongPollHost()
        self._kick = asyncio.Event()
        self.records = RecordKeeper(self.io)  # the checkpoint in the head's KV
        self._max_value_bytes: int | None = None  # the head's cap on a KV value (read at start)
        self._summary_failed = False
        self.schedule: Schedule[DeploymentId] = Schedule()  # which deployments a tick steps
        self.published = Publisher(self.polls)
        self._http_status_of: HTTPOptions | None = None
        self._metric_rows: dict[str, list[tuple[tuple[str, ...], float]]] | None = None
        self._http_status_cache: dict[str, Any] = {}
        self._deployed_at: dict[str, float] = {}  # application -> wall-clock time of its last deploy
        self._nodes: list[NodeView] = []
        self._nodes_at = float("-inf")
        self._ready = asyncio.get_running_loop().create_task(self._start(run_loop))
        if counting.ENABLED:
            metrics = controller_metrics()
            for family in (metrics.healthy, metrics.target, metrics.running, metrics.decisions):
                family.add_source(self)

    # -- life --------------------------------------------------------------------------
    async def _start(self, run_loop: bool) -> None:
        now = self.clock()
        recovered = await recover_deployments(self.io, now, version_base())
        self.deployments = recovered.deployments
        for s in self.deployments.values():
            s.starts = self.starts
        self.records.recovered(self.deployments, legacy=recovered.legacy, stale_legacy=recovered.stale_legacy,
                               settings_found=recovered.http_options is not None)
        self.schedule.touch_all(self.deployments)
        if recovered.http_options is not None:
            self.http_options = recovered.http_options
            self.proxies.http_options = recovered.http_options
        if recovered.settings is not None:
            self.io.settings = recovered.settings
        self.io.on_actor_death(self._actor_died)
        try:
            self._max_value_bytes = await self.io.max_value_bytes()
        except Exception as e:  # checked again at the first deploy
            log.warning("could not read the head's cap on a KV value: %s", e)
        await self._refresh_nodes(now)
        await adopt_proxies(self.io, self.proxies, self._nodes, now)
        self._reconcile(self.clock())  # proxies are STARTING before the first status answer
        if run_loop:
            self._loop_task = asyncio.get_running_loop().create_task(self._run())

    def _actor_died(self, actor_id: Any, cause: str) -> None:
        """A replica's actor died (the head says so): replace it and republish now."""
        dep_id = next((d for d, s in self.deployments.items() if s.replica_died(actor_id, cause)), None)
        if dep_id is not None:
            self.schedule.touch(dep_id)
            self._reconcile(self.clock())
            self._kick.set()

    async def ready(self) -> None:
        await asyncio.shield(self._ready)  # a cancelled call must not cancel the start

    async def _refresh_nodes(self, now: float) -> None:
        known = {n.node_id for n in self._nodes if n.alive}
        self._nodes = await self.io.nodes()
        self._nodes_at = now
        joined = {n.node_id for n in self._nodes if n.alive} - known
        if known and joined:  # not at start: spread deployments over nodes that joined
            for dep_id, s in self.deployments.items():
                if s.spread_onto(joined, now):
                    self.schedule.touch(dep_id)

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
        """One round: the node table (every NODES_EVERY_S), reconcile, checkpoint, summary.
        A failed write (checkpoint or summary) is logged and retried; it stops nothing."""
        if now - self._nodes_at >= NODES_EVERY_S:
            try:
                await self._refresh_nodes(now)
            except Exception as e:  # the head busy or restarting: the last node table stays
                self._nodes_at = now
                log.warning("could not read the node table: %s", e)
        self._reconcile(now)
        await self._checkpoint(now)
        await self._publish_summary()

    def _reconcile(self, now: float, only: list[DeploymentId] | None = None) -> None:
        """Step the deployments due (`Schedule`: those with something under way, and the
        settled ones whose next health check came), the proxies, and publish what changed.
        `only`: step just these (a driver's deploy or delete answers after its own
        deployments' first step; the others wait for the loop, kicked at once), so a roll-out
        of N applications deployed one by one costs N steps per tick, not N² per roll-out."""
        for dep_id in self.schedule.due(now) if only is None else only:
            state = self.deployments.get(dep_id)
            if state is None:
                self.schedule.forget(dep_id)
                continue
            state.step(now)
            if state.finished:
                del self.deployments[dep_id]
                self.schedule.forget(dep_id)
                self.published.took(dep_id, None, now)
                continue
            self.schedule.settle(dep_id, state.quiet_until())
            self.published.took(dep_id, state, now)
        self._metric_rows = None
        self.proxies.step(now, self._nodes)
        self.published.publish(self._deployed_at, self._http_status(), self.proxies.status())

    # -- what others wait for ----------------------------------------------------------
    def _http_status(self) -> dict[str, Any]:
        """The HTTP options as the status shows them (made again only when they change)."""
        if self._http_status_of is not self.http_options:
            # Middlewares as text: a driver asking for the status may not be able to import their classes.
            self._http_status_cache = {**dict(self.http_options),
                                       "middlewares": [repr(m) for m in self.http_options.middlewares]}
            self._http_status_of = self.http_options
        return self._http_status_cache

    def _status(self) -> dict[str, Any]:
        apps: dict[str, dict[str, Any]] = {}
        now = self.clock()
        for dep_id, s in self.deployments.items():
            app = apps.setdefault(dep_id.app, {"deployments": {}})
            app["deployments"][dep_id.name] = deployment_status(s, now)
        for name, app in apps.items():
            app["status"] = ApplicationStatus.of({d["status"] for d in app["deployments"].values()})
            app["last_deployed_time_s"] = self._deployed_at.get(name)
            app["import_path"] = app_import_path(app["deployments"].values())
        return {"applications": apps, "http_options": self._http_status(), "proxies": self.proxies.status()}

    # -- checkpoint and summary ----------------------------------------------------------
    async def _checkpoint(self, now: float, retry: bool = False) -> None:
        """Write the records that changed (never raises; see `records`)."""
        self.records.changed(self.published.take_members_changed(), self.deployments)
        await self.records.save(now, self.deployments,
                                lambda: SettingsRecord(self.http_options, self.io.settings).dumps(), retry=retry)

    async def _publish_summary(self) -> None:
        """A plain JSON summary in the head's KV, for `zeroserve status` (which does not
        import serve). A failed write is logged once, and retried at the next step."""
        if self.published.summary_dirty:
            try:
                await self.io.publish_summary(self.published.summary_blob())
            except Exception as e:
                if not self._summary_failed:
                    log.warning("could not write the status summary to the head's KV (retrying): %s", e)
                self._summary_failed = True
                return
            self.published.summary_dirty = self._summary_failed = False

    async def status(self) -> dict[str, Any]:
        await self.ready()
        return self._status()

    async def targets(self) -> dict[DeploymentId, DeploymentTarget]:
        await self.ready()
        return {d: s.target for d, s in self.deployments.items() if not s.deleting}

    def __actors_drain__(self, timeout_s: float) -> None:
        """Its node stops gracefully: nothing to finish (the state is checkpointed; the
        long polls held here would only delay the stop), so it stops at once."""

    async def listen(self, key: str, known_version: int, hold_s: float) -> Update:
        """Long poll on `key` (a replica set, the route table, the status): answered once its
        version differs from `known_version`, or after `hold_s` with the current one."""
        await self.ready()
        return await self.polls.listen(key, known_version, hold_s)

    def metric_rows(self, name: str) -> list[tuple[tuple[str, ...], float]]:
        """The controller's metrics, read from its state at scrape time (the four families
        in one pass over the deployments, kept until the next reconcile)."""
        if self._metric_rows is None:
            self._metric_rows = _metric_rows(self.deployments, self.clock())
        return self._metric_rows.get(name, [])

    def record_load(self, source: str, deployment: DeploymentId, ongoing: float) -> None:
        """A router's requests in flight (and queued) for `deployment`, for autoscaling."""
        state = self.deployments.get(deployment)
        if state is not None:
            state.record_load(self.clock(), source, ongoing)
            if state.autoscaler is not None:
                self.schedule.touch(deployment)
            if ongoing > 0 and state.desired == 0:
                self._kick.set()  # requests wait for a replica (scaled to zero): decide now

    def record_models(self, replica_id: ReplicaId, model_ids: tuple[str, ...], max_models: int) -> None:
        """A replica's multiplexed models changed (it reports them, debounced): routers get
        them with its replica set."""
        state = self.deployments.get(replica_id.deployment)
        replica = state.replicas.get(replica_id) if state is not None else None
        if replica is None or state is None:
            return
        replica.model_ids, replica.max_models = tuple(model_ids), int(max_models)
        self.published.replica_set(replica_id.deployment, state)

    async def shutdown(self, timeout_s: float = 60.0) -> bool:
        """Drain the proxies, delete every deployment, stop the proxies and drop the
        checkpoint, all within `timeout_s` in total (the driver waits a little longer, then
        kills whatever is left itself). True if every deployment was deleted in time."""
        await self.ready()
        proxies = [e.handle for e in self.proxies.proxies.values() if e.handle is not None and e.state == HEALTHY]
        done = await shut_down(self, proxies, timeout_s)
        self.records.dropped()
        return done


def _metric_rows(deployments: dict[DeploymentId, DeploymentState],
                 now: float) -> dict[str, list[tuple[tuple[str, ...], float]]]:
    """The controller's metric families from its state. A running replica is healthy (1)
    unless its last health check failed or its check has gone unanswered past the bound
    that makes it unresponsive (`ReplicaWatch.unresponsive`); a lost one shows 0."""
    healthy: list[tuple[tuple[str, ...], float]] = []
    target: list[tuple[tuple[str, ...], float]] = []
    running: list[tuple[tuple[str, ...], float]] = []
    decisions: list[tuple[tuple[str, ...], float]] = []
    for dep_id, s in list(deployments.items()):
        dep, app = dep_id.name, dep_id.app
        live = [r for r in list(s.replicas.values()) if r.state == RUNNING]
        late = {r.replica_id for r, _ in s.unresponsive(now)}
        healthy += [((dep, str(r.replica_id), app), float(r.health_failures == 0 and r.replica_id not in late))
                    for r in live]
        healthy += [((dep, str(rid), app), 0.0) for rid in list(s.lost)]
        target.append(((dep, app), float(s.desired)))
        running.append(((dep, app), float(len(live))))
        if s.autoscaler is not None:
            decisions += [((dep, app, direction), float(n)) for direction, n in s.scaled.items()]
    return {"serve_deployment_replica_healthy": healthy, "serve_deployment_target_replicas": target,
            "serve_deployment_running_replicas": running, "serve_autoscaling_decisions": decisions}
