"""Placement: waiting actors put on nodes, and actors taken off them.

Waiting actors sit in the head's `PendingQueue` (O(1) per change); a scheduling pass
(`_schedule`) costs the number of shapes waiting plus the placements it makes, never the
queue's length: of the first actor of each shape, the earliest arrival is placed first,
until none fits. A node's free resources (and its GPU devices' free shares) are its total
less what the live actors placed there demand; an actor leaving a node (`_exited`,
`_release`) gives them back and, if it has restarts left, waits for a place again.
"""

from __future__ import annotations

import logging
from typing import Any

from actors import ActorUnschedulableError
from actors.messages import ActorId, ActorState, NodeId

from ._actor_table import ActorRecord
from ._gpus import allocate, free_shares, release
from ._head_core import HeadCore
from ._pending import shape_of
from ._records import NodeEntry
from ._scheduler import NodeLoad, pick_node

__all__ = ["Placement"]

log = logging.getLogger("cluster._head")
_WAITING = (ActorState.PENDING, ActorState.RESTARTING)


class Placement(HeadCore):
    """The head's placement of actors on nodes (see the module docstring)."""

    def free_on(self, node: NodeEntry) -> dict[str, float]:
        """The node's resources less what the head's live actors placed there demand (and
        sets the free share of each of its GPU devices likewise)."""
        free = dict(node.reg.resources)
        held = []
        for rec in self.actors.on_node(node.reg.node_id):
            for k, v in rec.spec.options.demand().items():
                free[k] = free.get(k, 0.0) - v
            if rec.gpu_ids:
                held.append((rec.gpu_ids, rec.spec.options.num_gpus))
        node.gpu_free = free_shares(node.reg.gpu_ids, held)
        return free

    def enqueue(self, rec: ActorRecord) -> None:
        opts = rec.spec.options
        self.pending.push(rec.actor_id, shape_of(opts.demand(), opts.node_id), rec.spec.job_id)

    def _loads(self, group: str | None) -> list[NodeLoad]:
        loads = []
        for n in self.node_table.values():
            node_id = n.reg.node_id
            in_group, latest = self.actors.group_on_node(group, node_id) if group is not None else (0, -1)
            alive = n.alive and node_id not in self.draining
            loads.append(NodeLoad(node_id, alive, n.reg.resources, n.available, self.actors.count_on_node(node_id),
                                  in_group, latest, accepting=n.synced, gpu_free=n.gpu_free))
        return loads

    def _schedule(self) -> None:
        """Place waiting actors that fit now: of the first actor of each shape, the earliest
        arrival first, until none of them fits."""
        blocked: set[Any] = set()
        while True:
            firsts = [f for f in self.pending.firsts() if f[2] not in blocked]
            if not firsts:
                break
            _, actor_id, shape = min(firsts, key=lambda f: f[0])
            rec = self.actors.get(actor_id)
            if rec is None or rec.state not in _WAITING or rec.node_id is not None:
                self.pending.remove(actor_id)
                continue
            try:
                node_id = pick_node(self._loads(rec.spec.options.spread_group), shape.demand_dict(), shape.node_id)
            except ActorUnschedulableError as e:
                if rec.state is ActorState.RESTARTING and shape.node_id is None:
                    blocked.add(shape)  # its node is gone; wait for one that fits to (re)join
                else:
                    self.pending.remove(actor_id)
                    self.actors.dead(rec, str(e))
                continue
            if node_id is None:
                blocked.add(shape)
                continue
            self.pending.remove(actor_id)
            node = self.node_table[node_id]
            for k, v in shape.demand:
                node.available[k] = node.available.get(k, 0.0) - v
            gpus = rec.spec.options.num_gpus
            rec.gpu_ids = (allocate(node.gpu_free, gpus, self._group_devices(rec, node_id)) or ()) if gpus > 0 else ()
            self.actors.placed(rec, node_id)
            self._background(self._start_on(node, rec, rec.incarnation))
        self._notify()

    def _group_devices(self, rec: ActorRecord, node_id: NodeId) -> set[str]:
        """The devices on `node_id` held by live actors of `rec`'s spread group."""
        group = rec.spec.options.spread_group
        if group is None:
            return set()
        return {d for other in self.actors.on_node(node_id) if other.live and other.spec.options.spread_group == group
                for d in other.gpu_ids}

    async def _start_on(self, node: NodeEntry, rec: ActorRecord, incarnation: int) -> None:
        try:
            await self.io.start_actor(node.reg.agent_address, rec.spec, incarnation, node.reg.node_id, rec.gpu_ids)
        except Exception as e:
            log.warning("could not start %s on node %s: %s", rec.actor_id, node.reg.node_id, e)
            self._exited(rec.actor_id, incarnation, f"its worker could not be started on node "
                                                    f"{node.reg.node_id}: {e}")
            self._commit_quietly()

    def _exited(self, actor_id: ActorId, incarnation: int, cause: str, release: bool = True) -> None:
        rec = self.actors.get(actor_id)
        if rec is None or rec.incarnation != incarnation or not rec.live:
            return
        if release:
            self._release(rec)
        rec.gpu_ids = ()  # a lost node's devices are counted afresh when it registers again
        rec = self.actors.exited(actor_id, incarnation, cause)
        if rec is not None and rec.state is ActorState.RESTARTING:
            self.enqueue(rec)
        self._schedule()

    def _release(self, rec: ActorRecord) -> None:
        node = self.node_table.get(rec.node_id) if rec.node_id is not None else None
        if node is not None:
            for k, v in rec.spec.options.demand().items():
                node.available[k] = node.available.get(k, 0.0) + v
            release(node.gpu_free, rec.gpu_ids, rec.spec.options.num_gpus)
        rec.gpu_ids = ()
