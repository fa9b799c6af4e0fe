"""Messages between agents and the head (the runtime's messages are in `actors.messages`)."""

from __future__ import annotations

from dataclasses import dataclass, field

from actors.messages import ActorId, NodeId

__all__ = ["NodeRegistration", "WorkerExit"]


@dataclass(frozen=True, slots=True)
class NodeRegistration:
    """Sent by an agent when it starts (and again after the head restarts)."""

    node_id: NodeId
    ip: str
    agent_address: str
    resources: dict[str, float] = field(default_factory=dict)
    is_head: bool = False
    hostname: str = ""
    running: tuple[tuple[ActorId, int], ...] = ()  # actors (and incarnations) already hosted


@dataclass(frozen=True, slots=True)
class WorkerExit:
    """Sent by an agent the moment one of its worker processes exits."""

    actor_id: ActorId
    incarnation: int
    exit_code: int | None
    reason: str
