"""Replica choice in a router: power of two choices, and which replica holds which model.

`PowerOfTwoChoices` (the policy): over the replicas with room (requests this caller has in
flight there < max_ongoing_requests), sample two and take the less loaded.
`ModelLocator` (a request naming a multiplexed model):

A router learns what each replica holds from two sources:
- the replica set the controller pushes (`ReplicaInfo.model_ids`, least recently used first,
  and `max_models`): each replica reports its held set when it changes (debounced), so every
  router converges on the truth. A replica's entry replaces what the router believed only
  when that replica's report changed (the controller pushes the whole set when any replica
  reports): a push caused by another replica does not undo this router's newer sends;
- its own sends: a request for model m sent to replica r means r holds m as soon as it runs
  (r's LRU is mirrored: past its capacity the least recently used one is dropped).

Choice for a request naming model m, among replicas with room (requests in flight below
max_ongoing_requests): power of two choices among those that hold m; if none does, among
those with a free model slot (or an unknown capacity); else among all with room (the
chosen one evicts its least recently used model). Stale knowledge is harmless: a replica
that evicted m since just loads it again.

`ENABLED` is False when `$ZEROSERVE_MODEL_ROUTING=0` (routers then ignore model ids: the
benchmark's baseline).
"""

from __future__ import annotations

import collections
import os
import random
from collections.abc import Sequence
from typing import Any

from ..messages import ReplicaId, ReplicaInfo

__all__ = ["ENABLED", "ModelLocator", "PowerOfTwoChoices"]

ENABLED = os.environ.get("ZEROSERVE_MODEL_ROUTING", "1") != "0"


class PowerOfTwoChoices:
    """Among replicas with room, the less loaded of two picked at random; None if all are full."""

    def __init__(self, rng: random.Random | None = None) -> None:
        self._rng = rng or random.Random()

    def choose(self, replicas: Sequence[ReplicaInfo], in_flight: dict[ReplicaId, int]) -> ReplicaInfo | None:
        room = [r for r in replicas if in_flight.get(r.replica_id, 0) < r.max_ongoing_requests]
        if not room:
            return None
        if len(room) == 1:
            return room[0]
        a, b = self._rng.sample(room, 2)
        return a if in_flight.get(a.replica_id, 0) <= in_flight.get(b.replica_id, 0) else b


class ModelLocator:
    """Which replicas hold which models, as one router knows it, and the choice it makes."""

    def __init__(self) -> None:
        self._held: dict[ReplicaId, collections.OrderedDict[str, None]] = {}  # oldest first
        self._capacity: dict[ReplicaId, int] = {}  # 0: unknown, -1: no limit
        self._reported: dict[ReplicaId, tuple[tuple[str, ...], int]] = {}  # each replica's last report seen

    def held(self, replica_id: ReplicaId) -> tuple[str, ...]:
        return tuple(self._held.get(replica_id, ()))

    def update(self, replicas: Sequence[ReplicaInfo]) -> None:
        """Take the held sets of a pushed replica set (and forget replicas gone from it)."""
        live = set()
        for r in replicas:
            rid = r.replica_id
            live.add(rid)
            report = (r.model_ids, r.max_models)
            if self._reported.get(rid) == report:
                continue  # nothing new from this replica: what this router sent there since stands
            self._reported[rid] = report
            self._held[rid] = collections.OrderedDict.fromkeys(r.model_ids)
            self._capacity[rid] = r.max_models
            self._trim(rid)
        for table in (self._held, self._capacity, self._reported):
            for rid in [k for k in table if k not in live]:
                del table[rid]

    def note(self, replica_id: ReplicaId, model_id: str) -> None:
        """A request for `model_id` goes to `replica_id`: it holds the model now (most recently used)."""
        held = self._held.get(replica_id)
        if held is None:
            held = self._held[replica_id] = collections.OrderedDict()
        held[model_id] = None
        held.move_to_end(model_id)
        self._trim(replica_id)

    def _trim(self, rid: ReplicaId) -> None:
        capacity, held = self._capacity.get(rid, 0), self._held[rid]
        while capacity > 0 and len(held) > capacity:
            held.popitem(last=False)

    def _has_free_slot(self, r: ReplicaInfo) -> bool:
        capacity = self._capacity.get(r.replica_id, r.max_models)
        return capacity <= 0 or len(self._held.get(r.replica_id, ())) < capacity

    def choose(self, policy: Any, replicas: Sequence[ReplicaInfo], in_flight: dict[ReplicaId, int],
               model_id: str) -> ReplicaInfo | None:
        """The replica for a request for `model_id` (None if none has room); noted as its holder."""
        room = [r for r in replicas if in_flight.get(r.replica_id, 0) < r.max_ongoing_requests]
        if not room:
            return None
        holders = [r for r in room if model_id in self._held.get(r.replica_id, ())]
        if not holders:
            holders = [r for r in room if self._has_free_slot(r)] or room
        chosen = policy.choose(holders, in_flight)
        if chosen is not None:
            self.note(chosen.replica_id, model_id)
        return chosen
