"""How a deployment watches its replicas: health checks, deaths, and where slow starts are.

`ReplicaWatch` is a mixin of `DeploymentState` (which owns the state it reads); its steps
run from `DeploymentState.step`.

Invariants:
- A running replica is asked `check_health` every health_check_period_s; HEALTH_FAILURES
  failed checks in a row, one unanswered for health_check_timeout_s, or its actor dying
  (a check raising ActorDiedError, or the head saying so: `replica_died`) replaces it: it
  is killed and remembered in `lost` (for the metrics), and the convergence starts another.
- A running replica whose health check has gone unanswered for longer than
  `unresponsive_after` (health_check_period_s: an answer in time comes well within it, the
  next check would be due; but at least UNRESPONSIVE_MIN_S, so that a short period on a
  busy machine is not taken for a freeze, and at most half health_check_timeout_s, so that
  it is reported before it is replaced) is unresponsive: the deployment is UNHEALTHY, its
  message naming the replica and for how long, until the replica answers (HEALTHY again)
  or `health_check_timeout_s` passes and it is replaced. Unlike `broken`, this does not
  stop the deployment's convergence.
- A replica still starting after PROBE_AFTER_S is asked about (`ReplicaIO.placement`, the
  head's view of its actor) every PROBE_EVERY_S, so the status can say why it is not ready
  (waiting for resources, its constructor running); see `status.waiting_reason`.
"""

from __future__ import annotations

import functools
import logging
from typing import TYPE_CHECKING, Any

from actors import ActorDiedError

from .health import Outcome
from .pending import describe, error_of
from .replicas import RUNNING, STARTING, Placement, Replica

if TYPE_CHECKING:
    import collections

    from ..messages import DeploymentTarget, ReplicaId
    from .replicas import ReplicaIO

__all__ = ["HEALTH_FAILURES", "PROBE_AFTER_S", "PROBE_EVERY_S", "UNRESPONSIVE_MIN_S", "ReplicaWatch"]

HEALTH_FAILURES = 3
PROBE_AFTER_S = 1.0
UNRESPONSIVE_MIN_S = 1.0
PROBE_EVERY_S = 1.0
log = logging.getLogger("serve._control.deployment_state")  # the deployment's logger: its lines name it as they did


class ReplicaWatch:
    """The watching side of `DeploymentState`."""

    if TYPE_CHECKING:  # set by DeploymentState
        target: DeploymentTarget
        io: ReplicaIO
        replicas: dict[ReplicaId, Replica]
        message: str
        lost: collections.deque[ReplicaId]

    def _check_health(self, now: float) -> None:
        cfg = self.target.config
        for r in list(self.replicas.values()):
            if r.state != RUNNING:
                continue
            outcome = r.health.poll(now, functools.partial(self.io.call, r.handle, "check_health"),
                                    cfg.health_check_period_s, cfg.health_check_timeout_s)
            if outcome is None:
                continue
            kind, failure = outcome
            if kind is Outcome.ANSWERED:
                r.health_failures = 0
                continue
            if failure is not None:
                dead = isinstance(failure, ActorDiedError)
                r.health_failures = HEALTH_FAILURES if dead else r.health_failures + 1
                self.message = f"replica {r.replica_id} failed its health check: {describe(failure)}"
            else:
                r.health_failures = HEALTH_FAILURES
                self.message = f"replica {r.replica_id} did not answer its health check within {cfg.health_check_timeout_s}s"
            log.warning("%s", self.message)
            if r.health_failures >= HEALTH_FAILURES:
                self._replace(r)


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


    def unresponsive_after(self) -> float:
        """How long a health check may go unanswered before its replica is called unresponsive."""
        cfg = self.target.config
        return min(max(cfg.health_check_period_s, UNRESPONSIVE_MIN_S), cfg.health_check_timeout_s / 2)

    def unresponsive(self, now: float) -> list[tuple[Replica, float]]:
        """Running replicas whose health check has gone unanswered for longer than
        `unresponsive_after()`, with how long (longest first)."""
        bound = self.unresponsive_after()
        late = [(r, r.health.unanswered_for(now)) for r in self.replicas.values()
                if r.state == RUNNING and r.health.unanswered_for(now) > bound]
        return sorted(late, key=lambda pair: -pair[1])

