"""Placement policy: which node gets an actor. A pure function over node loads.

Feasible nodes are alive and have the demanded resources in total; of those accepting
placements (a node restored after a head restart accepts none until it has re-synced)
with the resources free now, the one hosting the fewest live actors of the actor's spread
group wins (so the replicas of one deployment land on different nodes whatever else runs
there); among those, the one whose latest member of the group was placed longest ago (so
a group being replaced member by member, as in a rolling update where outgoing members
still count, alternates between nodes instead of piling onto the emptiest one); then the
one hosting the fewest actors (spread), then the one with the most free CPU, then the
lowest id, so the choice is deterministic. A demand of GPUs must also fit the node's
devices (`_gpus`): a fraction in one device's free share, a whole number in that many
entirely free devices — a node with two half-free devices has 1.0 GPU free but no room
for `num_gpus=1`. The head counts only live actors placed on
alive nodes: dead actors, actors of a lost node and nodes that left weigh nothing.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from actors import ActorUnschedulableError
from actors.messages import NodeId

from ._gpus import GPU, fits_devices

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
    group_latest: int = -1  # placement order of the group's latest member here (-1: none)
    accepting: bool = True  # False: feasible, but takes no placement now
    labels: dict[str, str] = field(default_factory=dict)
    gpu_free: dict[str, float] = field(default_factory=dict)  # per device: its free share


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
            "Lower num_cpus/num_gpus/resources, or start a node with them "
            "(zeroserve start --num-cpus/--num-gpus/--resources)"
        )
    gpus = demand.get(GPU, 0.0)
    ready = [n for n in feasible if n.accepting and fits(n.available, demand)
             and (gpus <= 0 or not n.gpu_free or fits_devices(n.gpu_free, gpus))]
    if not ready:
        return None
    best = min(ready, key=lambda n: (n.group, n.group_latest, n.actors, -n.available.get("CPU", 0.0), n.node_id.hex))
    return best.node_id
