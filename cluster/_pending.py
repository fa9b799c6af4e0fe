"""The head's queue of actors waiting for a node, in O(1) per change.

Waiting actors are grouped by *shape*: their resource demand and node affinity. Whether
an actor fits anywhere depends on its shape only (not on its spread group), so only the
first actor of each shape needs trying: if it does not fit, none behind it does. Within
a shape the order is FIFO; across shapes the earliest arrival that fits goes first.

Invariants: an actor is queued at most once; `push`, `remove` and `first` are O(1);
`firsts()` is O(number of shapes), which is small (one per deployment or actor class
with its options), whatever the number of waiting actors. The count per job is kept for
the head's cap on waiting actors per job.
"""

from __future__ import annotations

import collections
import itertools
from collections.abc import Iterator
from dataclasses import dataclass

from actors.messages import ActorId, JobId, NodeId

__all__ = ["PendingQueue", "Shape", "shape_of"]


@dataclass(frozen=True, slots=True)
class Shape:
    demand: tuple[tuple[str, float], ...]
    node_id: NodeId | None

    def demand_dict(self) -> dict[str, float]:
        return dict(self.demand)


def shape_of(demand: dict[str, float], node_id: NodeId | None) -> Shape:
    return Shape(tuple(sorted(demand.items())), node_id)


class PendingQueue:
    def __init__(self) -> None:
        self._shapes: dict[Shape, collections.OrderedDict[ActorId, int]] = {}
        self._where: dict[ActorId, tuple[Shape, JobId | None]] = {}
        self._per_job: collections.Counter[JobId | None] = collections.Counter()
        self._seq = itertools.count()

    def __len__(self) -> int:
        return len(self._where)

    def __contains__(self, actor_id: ActorId) -> bool:
        return actor_id in self._where

    def ids(self) -> list[ActorId]:
        """Every waiting actor, in arrival order (for tests and status; O(n log n))."""
        return [a for _, a in sorted((seq, a) for q in self._shapes.values() for a, seq in q.items())]

    def of_job(self, job_id: JobId | None) -> int:
        return self._per_job[job_id]

    def push(self, actor_id: ActorId, shape: Shape, job_id: JobId | None) -> None:
        if actor_id in self._where:
            return
        self._shapes.setdefault(shape, collections.OrderedDict())[actor_id] = next(self._seq)
        self._where[actor_id] = (shape, job_id)
        self._per_job[job_id] += 1

    def remove(self, actor_id: ActorId) -> None:
        found = self._where.pop(actor_id, None)
        if found is None:
            return
        shape, job_id = found
        queue = self._shapes[shape]
        del queue[actor_id]
        if not queue:
            del self._shapes[shape]
        self._per_job[job_id] -= 1
        if self._per_job[job_id] <= 0:
            del self._per_job[job_id]

    def firsts(self) -> Iterator[tuple[int, ActorId, Shape]]:
        """(arrival order, actor, shape) of the first actor of every shape."""
        for shape, queue in self._shapes.items():
            actor_id = next(iter(queue))
            yield queue[actor_id], actor_id, shape

    def of_shape(self, shape: Shape) -> list[ActorId]:
        return list(self._shapes.get(shape, ()))
