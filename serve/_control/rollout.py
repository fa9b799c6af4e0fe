"""How a deployment moves its replicas towards its target: starts, stops, roll-outs, moves
and `user_config`/logging changes.

`Rollout` is a mixin of `DeploymentState` (which owns the state it reads); its steps run
from `DeploymentState.step`.

Invariants:
- A rolling update starts new replicas before it stops old ones, at most
  max(1, 20% of the target count) new ones starting at a time; old replicas are only
  stopped while more than the target count are RUNNING, so capacity never drops below it.
- After MAX_START_FAILURES consecutive failed starts with nothing healthy, the
  deployment is UNHEALTHY (`broken`) and stops retrying until it is redeployed.
- After a failed start, the next start waits an exponential back-off
  (START_BACKOFF_S doubling per consecutive failure, at most MAX_START_BACKOFF_S), so a
  constructor that keeps raising beside healthy replicas costs a start every few
  seconds, not one per controller tick.
- With a `StartBudget` (the real controller's), at most its limit of replicas are
  STARTING at once across all deployments: a deploy of 200 applications forks their
  processes a few at a time instead of all at once (which starved the head past its nodes'
  heartbeats on 2 cores). A replica holds its slot until it runs, fails or is stopped.
"""

from __future__ import annotations

import logging
import math
import secrets
from typing import TYPE_CHECKING

from ..messages import DeploymentStatus, ReplicaId
from .pending import Pending, describe, error_of
from .replicas import RUNNING, STARTING, STOPPING, Replica

if TYPE_CHECKING:
    from ..messages import DeploymentTarget
    from .replicas import ReplicaIO

__all__ = ["MAX_START_BACKOFF_S", "MAX_START_FAILURES", "START_BACKOFF_S", "Rollout", "StartBudget"]

MAX_START_FAILURES = 3
START_BACKOFF_S = 0.1
MAX_START_BACKOFF_S = 10.0
log = logging.getLogger("serve._control.deployment_state")  # the deployment's logger: its lines name it as they did
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



def _error_text(pending: Pending) -> str | None:
    error = error_of(pending)
    return None if error is None else describe(error)


class Rollout:
    """The converging side of `DeploymentState`."""

    if TYPE_CHECKING:  # set by DeploymentState
        target: DeploymentTarget
        io: ReplicaIO
        replicas: dict[ReplicaId, Replica]
        status: DeploymentStatus
        message: str
        start_failures: int
        next_start_at: float
        broken: bool
        deleting: bool
        methods: tuple[str, ...] | None
        starts: StartBudget | None

        @property
        def desired(self) -> int: ...

        def running(self) -> list[Replica]: ...

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
                r.health.next_at = now + self.target.config.health_check_period_s
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

