"""Placement policy: which node gets an actor. A pure function over node loads.

Feasible nodes are alive and have the demanded resources in total; of those with the
resources free now, the one hosting the fewest actors of the actor's spread group wins
(so the replicas of one deployment land on different nodes whatever else runs there),
then the one hosting the fewest actors (spread), then the one with the most free CPU,
then the lowest id, so the choice is deterministic.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from actors import ActorUnschedulableError
from actors.messages import NodeId

__all__ = ["NodeLoad", "pick_node", "fits"]

_EPS = 1e-9


@dataclass
class NodeLoad:
    node_id: NodeId
    alive: bool
    total: dict[str, float]
    available: dict[str, float]
    actors: int = 0
    group: int = 0  # actors of the spread group being placed
    labels: dict[str, str] = field(default_factory=dict)


def fits(have: dict[str, float], demand: dict[str, float]) -> bool:
    return all(have.get(k, 0.0) + _EPS >= v for k, v in demand.items() if v > 0)


def pick_node(nodes: list[NodeLoad], demand: dict[str, float], node_id: NodeId | None = None) -> NodeId | None:
    """The node to place on now; None if feasible but busy; raises if never feasible."""
    candidates = [n for n in nodes if n.alive and (node_id is None or n.node_id == node_id)]
    if node_id is not None and not candidates:
        raise ActorUnschedulableError(f"node {node_id} is not an alive node of this cluster (see actors.nodes())")
    feasible = [n for n in candidates if fits(n.total, demand)]
    if not feasible:
        totals = {str(n.node_id): n.total for n in candidates}
        raise ActorUnschedulableError(
            f"no node can ever satisfy the resource request {demand}; node totals are {totals}. "
            "Lower num_cpus/resources, or start a node with them (zeroserve start --num-cpus/--resources)"
        )
    ready = [n for n in feasible if fits(n.available, demand)]
    if not ready:
        return None
    best = min(ready, key=lambda n: (n.group, n.actors, -n.available.get("CPU", 0.0), n.node_id.hex))
    return best.node_id
