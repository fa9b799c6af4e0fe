"""The head's records of nodes and jobs (actors have their own table, `_actor_table`)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from actors.messages import JobId, NodeInfo

from .messages import NodeRegistration

__all__ = ["JobEntry", "NodeEntry"]


@dataclass
class NodeEntry:
    reg: NodeRegistration
    available: dict[str, float]
    alive: bool = True
    last_seen: float = field(default_factory=time.monotonic)
    # False for a node restored from the store until its agent registers again (the head
    # then reconciles its records with the workers really running there): nothing is
    # placed on an unsynced node.
    synced: bool = True
    dead_at: float | None = None  # wall-clock time it was lost
    gpu_free: dict[str, float] = field(default_factory=dict)  # per device of reg.gpu_ids: the share not held

    def info(self) -> NodeInfo:
        r = self.reg
        return NodeInfo(r.node_id, r.ip, r.agent_address, self.alive, r.is_head, dict(r.resources),
                        dict(self.available), r.hostname, r.metrics_url, dict(self.gpu_free))


@dataclass
class JobEntry:
    job_id: JobId
    address: str
    namespace: str
    pid: int
    last_seen: float = field(default_factory=time.monotonic)
