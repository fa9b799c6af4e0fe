"""Node membership: agents registering (and re-registering after a head restart or a
loss, when the head reconciles its records with the workers the agent really runs),
heartbeating, draining, leaving, and being declared lost after `NODE_TIMEOUT_S` of silence
(their actors exit with them); and the cluster's resources summed over live nodes.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from actors.messages import ActorId, ActorState, NodeId, NodeInfo
from actors.system import rpc

from ._head_core import durable
from ._head_placement import Placement
from ._records import NodeEntry
from .messages import NodeRegistration

__all__ = ["NODE_TIMEOUT_S", "NodeMembership"]

log = logging.getLogger("cluster._head")
NODE_TIMEOUT_S = 3.0


class NodeMembership(Placement):
    """The head's nodes (see the module docstring)."""

    @rpc
    @durable
    def register_node(self, reg: NodeRegistration) -> dict[str, Any]:
        """An agent joins, or joins again (after a head restart, or after it was declared
        lost). The head's records of actors on that node are reconciled with the workers
        the agent really runs: those it knows are adopted, workers it does not know are
        named `stale` (the agent kills them), and actors it placed there whose worker is
        not running are restarted or placed again."""
        old = self.node_table.get(reg.node_id)
        node = NodeEntry(reg, {}, alive=True)
        node.available = self.free_on(node)
        self.node_table[reg.node_id] = node
        self.journal.node(reg.node_id)
        if reg.draining:  # the head restarted (or lost it) while it drained: the drain is its word
            self.draining.add(reg.node_id)
        running = set(reg.running)
        for rec in self.actors.on_node(reg.node_id):
            if (rec.actor_id, rec.incarnation) in running:
                continue  # adopted
            if rec.state is ActorState.ALIVE:
                self._exited(rec.actor_id, rec.incarnation, f"its worker was gone when node {reg.node_id} "
                                                            "registered again")
            else:  # placed, never came up: wait for a place again (a new incarnation)
                self._release(rec)
                self.actors.unplaced(rec)
                self.enqueue(rec)
        if old is None:
            log.info("node %s registered at %s with %s", reg.node_id, reg.ip, reg.resources)
        else:
            log.info("node %s at %s registered again; %d of its workers adopted", reg.node_id, reg.ip,
                     self.actors.count_on_node(reg.node_id))
        stale = [(actor_id, inc) for actor_id, inc in reg.running if not self._hosts(reg.node_id, actor_id, inc)]
        self._schedule()  # notifies
        return {"node_id": reg.node_id.hex, "epoch": self.epoch, "stale": stale}

    def _hosts(self, node_id: NodeId, actor_id: ActorId, incarnation: int) -> bool:
        rec = self.actors.get(actor_id)
        return rec is not None and rec.node_id == node_id and rec.incarnation == incarnation and rec.live

    @rpc
    def node_heartbeat(self, node_id: NodeId) -> bool:
        """False tells the agent to register again: the head does not know it, declared it
        lost, or restarted and has not reconciled its workers yet."""
        node = self.node_table.get(node_id)
        if node is None or not node.alive or not node.synced:
            return False
        node.last_seen = time.monotonic()
        return True

    def check_nodes(self, now: float | None = None) -> list[NodeId]:
        """Mark nodes silent for NODE_TIMEOUT_S dead, with their actors. Returns them."""
        now = time.monotonic() if now is None else now
        lost = [n for n in self.node_table.values() if n.alive and now - n.last_seen > NODE_TIMEOUT_S]
        for node in lost:
            self._node_lost(node, f"node {node.reg.node_id} ({node.reg.ip}) stopped heartbeating")
        return [n.reg.node_id for n in lost]

    @rpc
    def node_draining(self, node_id: NodeId) -> None:
        """The node stops gracefully (its workers finish their work, then it leaves):
        place nothing more on it; what it ran is rescheduled as its workers exit."""
        if node_id in self.node_table:
            log.info("node %s (%s) is draining", node_id, self.node_table[node_id].reg.ip)
            self.draining.add(node_id)

    @rpc
    @durable
    def node_leaving(self, node_id: NodeId) -> None:
        node = self.node_table.get(node_id)
        if node is not None and node.alive:
            self._node_lost(node, f"node {node_id} ({node.reg.ip}) was stopped")

    def _node_lost(self, node: NodeEntry, cause: str) -> None:
        node.alive = False
        node.dead_at = time.time()
        self.draining.discard(node.reg.node_id)  # gone: nothing to keep (node ids are not reused)
        self.journal.node(node.reg.node_id)
        log.warning("%s", cause)
        for rec in self.actors.on_node(node.reg.node_id):
            self._exited(rec.actor_id, rec.incarnation, cause, release=False)
        self._notify()

    @rpc
    def nodes(self) -> list[NodeInfo]:
        return [n.info() for n in self.node_table.values()]

    @rpc
    def cluster_resources(self) -> dict[str, float]:
        return _sum(n.reg.resources for n in self.node_table.values() if n.alive)

    @rpc
    def available_resources(self) -> dict[str, float]:
        return _sum(n.available for n in self.node_table.values() if n.alive)


def _sum(dicts: Any) -> dict[str, float]:
    out: dict[str, float] = {}
    for d in dicts:
        for k, v in d.items():
            out[k] = out.get(k, 0.0) + v
    return out
