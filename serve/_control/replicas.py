"""What the controller keeps of one replica, and the seam it reaches replicas through.

`Replica` is the controller's record of one replica: its handle, version and state
(STARTING, RUNNING, STOPPING), and the calls it has in flight (ready, health, reconfigure,
shutdown, a placement question). `ReplicaIO` is everything a deployment does outside
itself (start, call, kill, ask where a replica is), so the state machine runs against fakes
in unit tests; `Placement` is the head's view of a starting replica's actor.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

from ..messages import DeploymentTarget, ReplicaId, ReplicaState
from .health import HealthCheck
from .pending import Pending

__all__ = ["Placement", "Replica", "ReplicaIO", "RUNNING", "STARTING", "STOPPING"]

STARTING, RUNNING, STOPPING = ReplicaState.STARTING, ReplicaState.RUNNING, ReplicaState.STOPPING


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
    health: HealthCheck = field(default_factory=HealthCheck)
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

