"""One deployment's replicas, moved step by step towards its target.

`step(now)` is idempotent and never blocks: it looks at the replicas' pending calls
(ready, health, shutdown) and starts or stops replicas through the `ReplicaIO` seam, so
the whole state machine runs against fakes in unit tests. `DeploymentState` owns the
deployment's target, its replicas and its status; its steps live in two mixins:
- `rollout.Rollout`: starting, stopping, rolling and reconfiguring replicas (start
  failures, back-off, the `StartBudget`);
- `watch.ReplicaWatch`: health checks, deaths, unresponsive replicas, placement probes.
The replica record and the `ReplicaIO` seam are in `replicas`.

Replica life:  STARTING --ready--> RUNNING --stop--> STOPPING (draining) --> gone
               STARTING --ready raised--> gone (a start failure)

Invariants (the mixins' modules list their own):
- Routers only ever see RUNNING replicas; a replica leaves the routing set before it
  starts draining.
- A deployment that is `broken` (its starts kept failing) or has an unresponsive replica
  is UNHEALTHY; one running exactly its target count of replicas, all of the current
  version, with its `user_config` applied, is HEALTHY; otherwise UPDATING (DELETING once
  deleted).
- For the metrics: replicas replaced after failing health checks or dying are remembered
  (the latest LOST_KEPT), and autoscaling decisions are counted.
"""

from __future__ import annotations

import collections
import itertools
import math
from typing import Any

from ..messages import DeploymentStatus, DeploymentTarget, ReplicaId, ReplicaState
from .autoscaling import AutoscalingPolicy
from .replicas import RUNNING, STARTING, STOPPING, Placement, Replica, ReplicaIO
from .rollout import MAX_START_BACKOFF_S, MAX_START_FAILURES, START_BACKOFF_S, Rollout, StartBudget
from .watch import HEALTH_FAILURES, ReplicaWatch

__all__ = ["DeploymentState", "ReplicaIO", "Replica", "MAX_START_FAILURES", "HEALTH_FAILURES",
           "START_BACKOFF_S", "MAX_START_BACKOFF_S", "Placement"]

LOST_KEPT = 32
_GENERATIONS = itertools.count(1)  # DeploymentState.generation: unique in the process


class DeploymentState(Rollout, ReplicaWatch):
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
            r.health.next_at = now
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
            if (r.state != RUNNING or r.version != version or r.health.pending is not None or r.reconfiguring is not None
                    or r.logging_pending is not None):
                return None
            wake = min(wake, r.health.next_at)
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
