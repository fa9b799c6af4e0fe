"""One deployment's replicas, moved step by step towards its target.

`step(now)` is idempotent and never blocks: it looks at the replicas' pending calls
(ready, health, shutdown) and starts or stops replicas through the `ReplicaIO` seam, so
the whole state machine runs against fakes in unit tests.

Replica life:  STARTING --ready--> RUNNING --stop--> STOPPING (draining) --> gone
               STARTING --ready raised--> gone (a start failure)

Invariants:
- A rolling update starts new replicas before it stops old ones, at most
  max(1, 20% of the target count) new ones starting at a time; old replicas are only
  stopped while more than the target count are RUNNING, so capacity never drops below it.
- Routers only ever see RUNNING replicas; a replica leaves the routing set before it
  starts draining.
- After MAX_START_FAILURES consecutive failed starts with nothing healthy, the
  deployment is UNHEALTHY (`broken`) and stops retrying until it is redeployed.
- A running replica whose health check has gone unanswered for longer than
  `unresponsive_after` (health_check_period_s: an answer in time comes well within it, the
  next check would be due; but at least UNRESPONSIVE_MIN_S, so that a short period on a
  busy machine is not taken for a freeze, and at most half health_check_timeout_s, so that
  it is reported before it is replaced) is unresponsive: the deployment is UNHEALTHY, its
  message naming the replica and for how long, until the replica answers (HEALTHY again)
  or `health_check_timeout_s` passes and it is replaced. Unlike `broken`, this does not
  stop the deployment's convergence.
- After a failed start, the next start waits an exponential back-off
  (START_BACKOFF_S doubling per consecutive failure, at most MAX_START_BACKOFF_S), so a
  constructor that keeps raising beside healthy replicas costs a start every few
  seconds, not one per controller tick.
- A replica still starting after PROBE_AFTER_S is asked about (`ReplicaIO.placement`, the
  head's view of its actor) every PROBE_EVERY_S, so the status can say why it is not ready
  (waiting for resources, its constructor running); see `status.waiting_reason`.
- With a `StartBudget` (the real controller's), at most its limit of replicas are
  STARTING at once across all deployments: a deploy of 200 applications forks their
  processes a few at a time instead of all at once (which starved the head past its nodes'
  heartbeats on 2 cores). A replica holds its slot until it runs, fails or is stopped.
- For the metrics: replicas replaced after failing health checks or dying are remembered
  (the latest LOST_KEPT), and autoscaling decisions are counted.
"""

from __future__ import annotations

import collections
import itertools
import logging
import math
import secrets
from dataclasses import dataclass, field
from typing import Any, Protocol

from actors import ActorDiedError

from ..messages import DeploymentStatus, DeploymentTarget, ReplicaId, ReplicaState
from .autoscaling import AutoscalingPolicy
from .pending import Pending, describe, error_of

__all__ = ["DeploymentState", "ReplicaIO", "Replica", "MAX_START_FAILURES", "HEALTH_FAILURES",
           "START_BACKOFF_S", "MAX_START_BACKOFF_S", "Placement"]

MAX_START_FAILURES = 3
START_BACKOFF_S = 0.1
MAX_START_BACKOFF_S = 10.0
HEALTH_FAILURES = 3
PROBE_AFTER_S = 1.0
UNRESPONSIVE_MIN_S = 1.0
PROBE_EVERY_S = 1.0
LOST_KEPT = 32
STARTING, RUNNING, STOPPING = ReplicaState.STARTING, ReplicaState.RUNNING, ReplicaState.STOPPING
log = logging.getLogger(__name__)
_GENERATIONS = itertools.count(1)  # DeploymentState.generation: unique in the process
_MOVING = "<moving to another node>"  # the version of a replica being moved: replaced as if outdated


class StartBudget:
    """How many replicas may be starting at once, shared by every deployment."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.starting = 0

    def take(self) -> bool:
        if self.starting >= self.limit:
            return False
        self.starting += 1
        return True

    def release(self) -> None:
        self.starting = max(0, self.starting - 1)


@dataclass(frozen=True, slots=True)
class Placement:
    """Where a starting replica's actor is, as the head sees it: not placed yet (waiting for
    resources), placed on a node (its process starting, then its constructor running), or
    constructed (alive)."""

    placed: bool
    alive: bool
    node: str = ""
    phase: str = ""  # alive: what the replica's start is doing ("constructor", "reconfigure", ...; "" unknown)


class ReplicaIO(Protocol):
    """Everything a deployment does outside itself."""

    def start(self, target: DeploymentTarget, replica_id: ReplicaId) -> Any: ...  # returns a replica handle

    def call(self, handle: Any, method: str, *args: Any) -> Pending: ...

    def kill(self, handle: Any) -> Any: ...

    def placement(self, handle: Any) -> Pending: ...  # resolves to a Placement (None: unknown actor)


@dataclass
class Replica:
    replica_id: ReplicaId
    handle: Any
    version: str
    state: ReplicaState = STARTING
    started_at: float = 0.0
    ready: Pending | None = None
    user_config: Any = None
    health: Pending | None = None
    health_sent_at: float = 0.0
    next_health_at: float = 0.0
    health_failures: int = 0
    shutdown: Pending | None = None
    stop_by: float = 0.0
    reconfiguring: Pending | None = None
    config_error: str | None = None  # the last reconfigure failed (kept in the status)
    logging_config: Any = None  # the logging_config it runs with
    logging_pending: Pending | None = None
    probe: Pending | None = None  # a placement question in flight
    probed_at: float = float("-inf")
    placement: Placement | None = None
    placed_at: float | None = None  # first seen placed on a node (its constructor starts about then)
    meta: dict[str, Any] = field(default_factory=dict)
    budgeted: bool = False  # holds a StartBudget slot (until it runs, fails or stops)
    model_ids: tuple[str, ...] = ()  # the multiplexed models it reported holding (least recently used first)
    max_models: int = 0  # how many it can hold (0: none reported)


def _error_text(pending: Pending) -> str | None:
    error = error_of(pending)
    return None if error is None else describe(error)


class DeploymentState:
    def __init__(self, target: DeploymentTarget, io: ReplicaIO, *, version_base: int = 0) -> None:
        self.target = target
        self.io = io
        self.replicas: dict[ReplicaId, Replica] = {}
        self.status = DeploymentStatus.UPDATING
        self.message = ""
        self.start_failures = 0
        self.next_start_at = 0.0  # no start before this (back-off after a failed start)
        self.broken = False  # it failed to start MAX_START_FAILURES times: UNHEALTHY until redeployed
        self.generation = next(_GENERATIONS)  # a new one with each target taken (the checkpoint writes each)
        self.deleting = False
        self.routing_version = version_base  # a restarted controller starts above any earlier version
        self._routed: tuple[ReplicaId, ...] = ()
        self.autoscaler: AutoscalingPolicy | None = None
        self._autoscaled = 0
        self.scaled = {"up": 0, "down": 0}  # autoscaling decisions taken
        self.lost: collections.deque[ReplicaId] = collections.deque(maxlen=LOST_KEPT)  # replaced: unhealthy/died
        self.methods: tuple[str, ...] | None = None  # the public methods its current code's replicas report
        self.starts: StartBudget | None = None  # shared with the other deployments (None: no limit)
        self._set_autoscaler(0.0)

    # -- the target --------------------------------------------------------------------
    def update(self, target: DeploymentTarget) -> bool:
        """Take a new target; False if it changes nothing (same version and config)."""
        if target == self.target and not self.deleting and not self.broken:
            return False
        old_autoscaling = self.target.config.autoscaling_config
        if target.code != self.target.code:
            self.methods = None  # until a replica of the new code reports its own
        self.target = target
        self.generation = next(_GENERATIONS)
        if target.config.autoscaling_config != old_autoscaling:
            self._set_autoscaler(0.0)
        self.deleting = False
        self.broken = False
        self.start_failures = 0
        self.next_start_at = 0.0
        self.status = DeploymentStatus.UPDATING
        self.message = ""
        return True

    def adopt(self, replica_id: ReplicaId, handle: Any, version: str, user_config: Any, now: float,
              state: ReplicaState = STARTING) -> None:
        """Take over a replica an earlier controller ran, in the state it had there: a RUNNING
        one keeps serving (it stays in the routing set) and gets its health checked at once;
        a STARTING one is asked `ready` again; a STOPPING one is drained again."""
        r = Replica(replica_id, handle, version, state=RUNNING, started_at=now, user_config=user_config,
                    logging_config=self.target.config.logging_config)
        self.replicas[replica_id] = r
        if state == RUNNING:
            r.next_health_at = now
        elif state == STOPPING:
            self._stop(r, now)
        else:
            r.state = STARTING
            r.ready = self.io.call(handle, "ready")

    def _set_autoscaler(self, now: float) -> None:
        cfg = self.target.config.autoscaling_config
        if cfg is None:
            self.autoscaler = None
            return
        self.autoscaler = AutoscalingPolicy(cfg, now)
        self._autoscaled = self.autoscaler.initial()

    def record_load(self, now: float, source: str, ongoing: float) -> None:
        if self.autoscaler is not None:
            self.autoscaler.record(now, source, ongoing)

    def delete(self) -> None:
        self.deleting = True
        self.status = DeploymentStatus.DELETING

    @property
    def desired(self) -> int:
        if self.deleting:
            return 0
        if self.autoscaler is not None:
            return self._autoscaled
        return self.target.config.num_replicas

    @property
    def finished(self) -> bool:
        """Deleted and every replica gone."""
        return self.deleting and not self.replicas

    # -- queries -----------------------------------------------------------------------
    def running(self) -> list[Replica]:
        return [r for r in self.replicas.values() if r.state == RUNNING]

    def counts(self) -> dict[ReplicaState, int]:
        out: dict[ReplicaState, int] = {}
        for r in self.replicas.values():
            out[r.state] = out.get(r.state, 0) + 1
        return out

    def quiet_until(self) -> float | None:
        """After a step, when `step` next has something to do if nothing comes from outside
        (a target, a death, a load report): the earliest health check of a settled deployment
        (math.inf: none); None while anything is under way (replicas starting or stopping,
        calls in flight, autoscaling, a roll-out, a deletion, UNHEALTHY)."""
        if self.autoscaler is not None or self.deleting or self.status != DeploymentStatus.HEALTHY:
            return None
        wake, version = math.inf, self.target.version
        for r in self.replicas.values():
            if (r.state != RUNNING or r.version != version or r.health is not None or r.reconfiguring is not None
                    or r.logging_pending is not None):
                return None
            wake = min(wake, r.next_health_at)
        return wake

    # -- the step ----------------------------------------------------------------------
    def step(self, now: float) -> bool:
        """Advance every replica and the replica count; True if the routing set changed."""
        if self.autoscaler is not None and not self.deleting:
            decided = self.autoscaler.desired_replicas(now, self._autoscaled)
            if decided != self._autoscaled:
                self.scaled["up" if decided > self._autoscaled else "down"] += 1
            self._autoscaled = decided
        self._collect_starts(now)
        self._probe_starts(now)
        self._check_health(now)
        self._finish_stops(now)
        if not self.broken or self.deleting:
            self._converge(now)
        self._reconfigure()
        self._update_status(now)
        routed = tuple(sorted((r.replica_id for r in self.running()), key=str))
        if routed != self._routed:
            self._routed = routed
            self.routing_version += 1
            return True
        return False

    def _collect_starts(self, now: float) -> None:
        for r in list(self.replicas.values()):
            if r.state != STARTING or r.ready is None or not r.ready.done():
                continue
            error = _error_text(r.ready)
            if error is None:
                info = r.ready.result(0)
                if isinstance(info, dict):  # its pid and log file, for the status
                    r.meta.update({k: info[k] for k in ("pid", "log_file", "node_id") if k in info})
                    if isinstance(info.get("max_models"), int) and not r.max_models:
                        r.max_models = info["max_models"]  # @serve.multiplexed: routers know its room at once
                    if r.version == self.target.version and isinstance(info.get("methods"), (list, tuple)):
                        self.methods = tuple(info["methods"])
                log.info("replica %s is running (started in %.1f s)", r.replica_id, now - r.started_at)
                r.state = RUNNING  # r.user_config is what it was built with; _reconfigure catches it up
                self._release(r)
                r.probe = None  # a placement question still in flight is moot now
                r.next_health_at = now + self.target.config.health_check_period_s
                self.start_failures = 0
                continue
            self.io.kill(r.handle)
            self._release(r)
            del self.replicas[r.replica_id]
            self.start_failures += 1
            backoff = min(START_BACKOFF_S * 2 ** (self.start_failures - 1), MAX_START_BACKOFF_S)
            self.next_start_at = now + backoff
            self.message = f"replica {r.replica_id} failed to start (retrying in {backoff:.1f} s): {error}"
            log.warning("%s", self.message)
            if self.start_failures >= MAX_START_FAILURES and not self.running():
                self.broken = True
                self.status = DeploymentStatus.UNHEALTHY
                self.message = (f"the deployment failed to start {self.start_failures} times in a row; "
                                f"last error: {error}")

    def _check_health(self, now: float) -> None:
        cfg = self.target.config
        for r in list(self.replicas.values()):
            if r.state != RUNNING:
                continue
            if r.health is None:
                if now >= r.next_health_at:
                    r.health, r.health_sent_at = self.io.call(r.handle, "check_health"), now
                continue
            if r.health.done():
                failure = error_of(r.health)
                r.health = None
                r.next_health_at = now + cfg.health_check_period_s
                if failure is None:
                    r.health_failures = 0
                    continue
                dead = isinstance(failure, ActorDiedError)
                r.health_failures = HEALTH_FAILURES if dead else r.health_failures + 1
                self.message = f"replica {r.replica_id} failed its health check: {describe(failure)}"
                log.warning("%s", self.message)
            elif now - r.health_sent_at > cfg.health_check_timeout_s:
                r.health = None
                r.health_failures = HEALTH_FAILURES
                self.message = f"replica {r.replica_id} did not answer its health check within {cfg.health_check_timeout_s}s"
                log.warning("%s", self.message)
            if r.health_failures >= HEALTH_FAILURES:
                self._replace(r)

    def spread_onto(self, joined: set[str], now: float) -> bool:
        """Nodes `joined` the cluster: if one of them runs none of this deployment's
        replicas while another node runs two or more, move one replica from the most crowded
        node (rolled like an update: its replacement starts, placed by the head's spread,
        then it drains). One move per join, so a node that cannot take a replica costs one
        extra start, not a churn. True if a move began."""
        current = [r for r in self.replicas.values() if r.version == self.target.version]
        if self.deleting or len(current) != self.desired or any(r.state != RUNNING for r in current):
            return False  # mid roll-out: the roll-out places its own replicas
        by_node: dict[str, list[Replica]] = {}
        for r in current:
            node = r.meta.get("node_id")
            if node:
                by_node.setdefault(node, []).append(r)
        if not by_node or not any(n not in by_node for n in joined):
            return False
        crowded = max(by_node.values(), key=len)
        if len(crowded) < 2:
            return False
        mover = max(crowded, key=lambda r: r.started_at)
        mover.version = _MOVING  # _converge starts its replacement, then drains it
        log.info("moving replica %s off node %s (%d replicas there) onto a node that joined", mover.replica_id,
                 mover.meta.get("node_id"), len(crowded))
        self._converge(now)
        return True

    def replica_died(self, actor_id: Any, cause: str) -> bool:
        """The head says the actor of a running replica died: replace it now, not at its
        next health check. True if it was one of this deployment's replicas."""
        r = next((r for r in self.replicas.values() if r.state == RUNNING and r.handle.actor_id == actor_id), None)
        if r is None:
            return False
        self.message = f"replica {r.replica_id} died: {cause}"
        log.warning("%s", self.message)
        self._replace(r)
        return True

    def _replace(self, r: Replica) -> None:
        log.warning("replacing replica %s (unhealthy or dead)", r.replica_id)
        self.io.kill(r.handle)  # replaced by _converge
        del self.replicas[r.replica_id]
        self.lost.append(r.replica_id)

    def _probe_starts(self, now: float) -> None:
        """Ask where replicas that are slow to start are (for the status's reasons)."""
        for r in self.replicas.values():
            if r.state != STARTING:
                continue
            if r.probe is not None:
                if r.probe.done():
                    placement = None if error_of(r.probe) is not None else r.probe.result(0)
                    r.probe, r.probed_at = None, now
                    if isinstance(placement, Placement):
                        r.placement = placement
                        if placement.placed and r.placed_at is None:
                            r.placed_at = now
            elif now - r.started_at >= PROBE_AFTER_S and now - r.probed_at >= PROBE_EVERY_S:
                r.probe = self.io.placement(r.handle)

    def _finish_stops(self, now: float) -> None:
        for r in list(self.replicas.values()):
            if r.state == STOPPING and ((r.shutdown is not None and r.shutdown.done()) or now > r.stop_by):
                self.io.kill(r.handle)
                del self.replicas[r.replica_id]

    def _start(self, now: float) -> None:
        if now < self.next_start_at:
            return  # backing off after a failed start
        if self.starts is not None and not self.starts.take():
            return  # enough replicas are starting cluster-wide: a later tick
        replica_id = ReplicaId(self.target.id, secrets.token_hex(3))
        log.info("starting replica %s (version %s)", replica_id, self.target.version)
        handle = self.io.start(self.target, replica_id)
        r = Replica(replica_id, handle, self.target.version, started_at=now, user_config=self.target.config.user_config,
                    logging_config=self.target.config.logging_config)
        r.ready = self.io.call(handle, "ready")
        r.budgeted = self.starts is not None
        self.replicas[replica_id] = r

    def _release(self, r: Replica) -> None:
        if r.budgeted and self.starts is not None:
            r.budgeted = False
            self.starts.release()

    def _stop(self, r: Replica, now: float) -> None:
        cfg = self.target.config
        if r.state == STARTING:
            self.io.kill(r.handle)
            self._release(r)
            del self.replicas[r.replica_id]
            return
        log.info("stopping replica %s", r.replica_id)
        r.state = STOPPING
        r.shutdown = self.io.call(r.handle, "prepare_for_shutdown", cfg.graceful_shutdown_wait_loop_s,
                                  cfg.graceful_shutdown_timeout_s)
        r.stop_by = now + cfg.graceful_shutdown_timeout_s + 5.0

    def _converge(self, now: float) -> None:
        n = self.desired
        live = [r for r in self.replicas.values() if r.state in (STARTING, RUNNING)]
        new = [r for r in live if r.version == self.target.version]
        old = [r for r in live if r.version != self.target.version]
        if old:  # rolling update: new ones first, then drain old ones beyond the target count
            surge = max(1, math.ceil(0.2 * n))
            starting_new = sum(1 for r in new if r.state == STARTING)
            for _ in range(max(0, min(surge - starting_new, n - len(new)))):
                self._start(now)
            running = [r for r in live if r.state == RUNNING]
            excess = len(running) - n
            for r in sorted(old, key=lambda r: (r.state != STARTING, r.started_at)):
                if r.state == STARTING:
                    self._stop(r, now)  # never serving yet: just go
                elif excess > 0:
                    self._stop(r, now)
                    excess -= 1
            return
        if len(new) < n:
            for _ in range(n - len(new)):
                self._start(now)
        elif len(new) > n:
            extra = sorted(new, key=lambda r: (r.state != STARTING, -r.started_at))[: len(new) - n]
            for r in extra:
                self._stop(r, now)

    def _reconfigure(self) -> None:
        wanted = self.target.config.user_config
        logging_config = self.target.config.logging_config
        for r in self.running():
            if r.logging_pending is not None and r.logging_pending.done():
                r.logging_pending = None
            if r.logging_pending is None and r.logging_config != logging_config and r.version == self.target.version:
                r.logging_config = logging_config
                r.logging_pending = self.io.call(r.handle, "set_logging_config", logging_config)
            if r.reconfiguring is not None:
                if r.reconfiguring.done():
                    error = _error_text(r.reconfiguring)
                    r.config_error = None if error is None else f"reconfigure failed on {r.replica_id}: {error}"
                    r.reconfiguring = None
                continue
            if r.version == self.target.version and r.user_config != wanted and wanted is not None:
                r.user_config = wanted
                r.reconfiguring = self.io.call(r.handle, "reconfigure", wanted)

    def unresponsive_after(self) -> float:
        """How long a health check may go unanswered before its replica is called unresponsive."""
        cfg = self.target.config
        return min(max(cfg.health_check_period_s, UNRESPONSIVE_MIN_S), cfg.health_check_timeout_s / 2)

    def unresponsive(self, now: float) -> list[tuple[Replica, float]]:
        """Running replicas whose health check has gone unanswered for longer than
        `unresponsive_after()`, with how long (longest first)."""
        bound = self.unresponsive_after()
        late = [(r, now - r.health_sent_at) for r in self.replicas.values()
                if r.state == RUNNING and r.health is not None and now - r.health_sent_at > bound]
        return sorted(late, key=lambda pair: -pair[1])

    def _update_status(self, now: float) -> None:
        if self.deleting:
            self.status = DeploymentStatus.DELETING
        elif self.broken:
            self.status = DeploymentStatus.UNHEALTHY
        elif late := self.unresponsive(now):
            r, waited = late[0]
            self.status = DeploymentStatus.UNHEALTHY
            others = f" (and {len(late) - 1} more)" if len(late) > 1 else ""
            self.message = (f"replica {r.replica_id} is unresponsive: its health check has gone unanswered for "
                            f"{waited:.0f} s{others}; it is replaced at health_check_timeout_s="
                            f"{self.target.config.health_check_timeout_s:g} s")
        else:
            current = [r for r in self.running() if r.version == self.target.version]
            settled = (len(current) == self.desired and len(self.replicas) == self.desired
                       and not any(r.reconfiguring is not None for r in current))  # user_config applied
            self.status = DeploymentStatus.HEALTHY if settled else DeploymentStatus.UPDATING
            config_errors = [r.config_error for r in self.running() if r.config_error]
            if config_errors:
                self.message = config_errors[0]
            elif settled:
                self.message = ""
