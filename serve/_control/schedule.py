"""Which deployments the reconcile loop steps this tick: the cost of a tick grows with
what is happening, not with how many deployments there are.

A deployment is *active* (stepped every tick) while anything is under way: replicas
starting or stopping, calls in flight (readiness, health, reconfigure, placement),
autoscaling, a roll-out, a deletion, a new target. Once `DeploymentState.quiet_until`
says it is settled, it sleeps until its next timed event (the earliest health check),
kept in a heap; anything from outside (a deploy, a delete, a replica's death, a node
joining) wakes it with `touch`.

Invariants: a deployment is either active, or asleep with exactly one live heap entry
(`_wake_at` holds its time; older entries are skipped as stale), or asleep for good
(settled with nothing timed, e.g. num_replicas=0) until touched. Stepping a deployment
that has nothing to do is harmless (`step` is idempotent), so waking early is safe;
waking late is not, and `quiet_until` returns None whenever in doubt.
"""

from __future__ import annotations

import heapq
import itertools
import math
from collections.abc import Hashable, Iterable
from typing import Generic, TypeVar

__all__ = ["Schedule"]

K = TypeVar("K", bound=Hashable)


class Schedule(Generic[K]):
    def __init__(self) -> None:
        self._active: dict[K, None] = {}  # an ordered set: stepped in the order they became active
        self._heap: list[tuple[float, int, K]] = []
        self._wake_at: dict[K, float] = {}
        self._seq = itertools.count()

    def touch(self, key: K) -> None:
        """Step `key` at the next tick (something changed from outside)."""
        self._wake_at.pop(key, None)
        self._active[key] = None

    def touch_all(self, keys: Iterable[K]) -> None:
        for key in keys:
            self.touch(key)

    def due(self, now: float) -> list[K]:
        """The deployments to step at `now`: the active ones and those whose time came."""
        heap = self._heap
        while heap and heap[0][0] <= now:
            at, _, key = heapq.heappop(heap)
            if self._wake_at.get(key) == at:  # not stale
                del self._wake_at[key]
                self._active[key] = None
        return list(self._active)

    def settle(self, key: K, until: float | None) -> None:
        """After a step: `until` None keeps `key` active; a time puts it to sleep until then
        (math.inf: until touched)."""
        if until is None:
            self._active[key] = None
            return
        self._active.pop(key, None)
        if until != math.inf:
            self._wake_at[key] = until
            heapq.heappush(self._heap, (until, next(self._seq), key))
        else:
            self._wake_at.pop(key, None)

    def forget(self, key: K) -> None:
        self._active.pop(key, None)
        self._wake_at.pop(key, None)

    @property
    def active(self) -> int:
        return len(self._active)

    @property
    def sleeping(self) -> int:
        return len(self._wake_at)
