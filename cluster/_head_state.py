"""What the head remembers across restarts, and the bounds on what it holds.

`Journal` collects the head's changes (actor records, nodes, jobs, KV keys) as they
happen and hands them to the `HeadStore` in one transaction when the head calls
`commit()` — before every reply that acknowledges a change, and after every background
change (liveness checks, purges, failed starts). Without a store it only forgets.

`restore()` loads the store into a fresh head: actor records (names and indexes rebuilt),
nodes, jobs, KV. Restored nodes are not *synced*: the head places nothing on them until
their agent registers again and the head has reconciled its records with the workers the
agent really runs (`Head.register_node`). A restored head starts a new epoch, so every
watcher resyncs; nodes and jobs restored get a fresh heartbeat deadline, and those that
are really gone time out as usual, taking their actors with them.

`HeadLimits` are the head's bounds, each from an environment variable: the size of one
stored blob (an actor's pickled class and constructor arguments, a KV value), waiting
actors per job, and how long/how many dead actors and dead nodes are kept.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from actors.messages import ActorId, ActorState, JobId, NodeId

from ._actor_table import ActorRecord, ActorTable
from ._head_store import Changes, HeadStore
from ._records import JobEntry, NodeEntry

__all__ = ["HeadLimits", "HeadTables", "Journal", "RestoringHead", "restore"]

log = logging.getLogger(__name__)


def _env(name: str, default: float) -> float:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        return float(raw)
    except ValueError:
        raise ValueError(f"${name} must be a number, got {raw!r}") from None


class HeadTables(Protocol):
    """What `Journal.commit` reads of the head (`cluster._head.Head`)."""

    actors: ActorTable
    node_table: dict[NodeId, NodeEntry]
    jobs: dict[JobId, JobEntry]
    kv: dict[str, bytes]


class RestoringHead(HeadTables, Protocol):
    """What `restore` fills and calls on a fresh head (`cluster._head.Head`)."""

    def restore_actor_version(self, saved: int) -> None: ...

    def free_on(self, node: NodeEntry) -> dict[str, float]: ...

    def enqueue(self, rec: ActorRecord) -> None: ...


@dataclass(frozen=True)
class HeadLimits:
    max_blob_bytes: int = 16 * 2**20  # ZEROSERVE_HEAD_MAX_BLOB_BYTES
    max_pending_per_job: int = 10_000  # ZEROSERVE_MAX_PENDING_ACTORS_PER_JOB
    dead_actor_ttl_s: float = 600.0  # ZEROSERVE_DEAD_ACTOR_TTL_S
    max_dead_actors: int = 1_000  # ZEROSERVE_MAX_DEAD_ACTORS
    dead_node_ttl_s: float = 600.0  # ZEROSERVE_DEAD_NODE_TTL_S
    max_dead_nodes: int = 100  # ZEROSERVE_MAX_DEAD_NODES

    @classmethod
    def from_env(cls) -> HeadLimits:
        d = cls()
        return cls(
            max_blob_bytes=int(_env("ZEROSERVE_HEAD_MAX_BLOB_BYTES", d.max_blob_bytes)),
            max_pending_per_job=int(_env("ZEROSERVE_MAX_PENDING_ACTORS_PER_JOB", d.max_pending_per_job)),
            dead_actor_ttl_s=_env("ZEROSERVE_DEAD_ACTOR_TTL_S", d.dead_actor_ttl_s),
            max_dead_actors=int(_env("ZEROSERVE_MAX_DEAD_ACTORS", d.max_dead_actors)),
            dead_node_ttl_s=_env("ZEROSERVE_DEAD_NODE_TTL_S", d.dead_node_ttl_s),
            max_dead_nodes=int(_env("ZEROSERVE_MAX_DEAD_NODES", d.max_dead_nodes)),
        )


class Journal:
    """The head's changes since the last commit. `on_dirty` is called when the first
    change after a commit arrives (the head schedules a commit as a safety net)."""

    def __init__(self, store: HeadStore | None, on_dirty: Callable[[], None] | None = None) -> None:
        self.store = store
        self.on_dirty = on_dirty
        self._actors: set[ActorId] = set()
        self._new: set[ActorId] = set()
        self._nodes: set[NodeId] = set()
        self._jobs: set[JobId] = set()
        self._kv: set[str] = set()
        self._dirty = False

    def _mark(self) -> None:
        if not self._dirty:
            self._dirty = True
            if self.on_dirty is not None and self.store is not None:
                self.on_dirty()

    def actor(self, actor_id: ActorId) -> None:
        self._actors.add(actor_id)
        self._mark()

    def new_actor(self, actor_id: ActorId) -> None:
        self._new.add(actor_id)
        self.actor(actor_id)

    def node(self, node_id: NodeId) -> None:
        self._nodes.add(node_id)
        self._mark()

    def job(self, job_id: JobId) -> None:
        self._jobs.add(job_id)
        self._mark()

    def key(self, key: str) -> None:
        self._kv.add(key)
        self._mark()

    def commit(self, head: HeadTables) -> None:
        """Write every change since the last commit, in one transaction."""
        if not self._dirty:
            return
        changes = Changes(version=head.actors.version)
        for actor_id in self._actors:
            rec = head.actors.get(actor_id)
            changes.actors[actor_id] = rec.mutable() if rec is not None else None
            if rec is not None and actor_id in self._new:
                changes.specs[actor_id] = rec.spec
        for node_id in self._nodes:
            n = head.node_table.get(node_id)
            changes.nodes[node_id] = (n.reg, n.alive, n.dead_at) if n is not None else None
        for job_id in self._jobs:
            j = head.jobs.get(job_id)
            changes.jobs[job_id] = (j.address, j.namespace, j.pid) if j is not None else None
        for key in self._kv:
            changes.kv[key] = head.kv.get(key)
        self._actors.clear()
        self._new.clear()
        self._nodes.clear()
        self._jobs.clear()
        self._kv.clear()
        self._dirty = False
        if self.store is not None:
            self.store.write(changes)


def restore(head: RestoringHead, store: HeadStore) -> bool:
    """Load the store into a fresh head; False if it is empty."""
    snap = store.load()
    if snap is None:
        return False
    for spec, fields in snap.actors:
        fields = dict(fields)
        namespace = str(fields.pop("namespace"))
        rec = ActorRecord(spec, namespace, **fields)
        head.actors.restore(rec)
    head.restore_actor_version(snap.version)
    now = time.monotonic()
    for reg, alive, dead_at in snap.nodes:
        head.node_table[reg.node_id] = NodeEntry(reg, {}, alive, now, synced=False, dead_at=dead_at)
    for node in head.node_table.values():
        node.available = head.free_on(node)
    for job_id, address, namespace, pid in snap.jobs:
        head.jobs[job_id] = JobEntry(job_id, address, namespace, pid, now)
    head.kv.update(snap.kv)
    waiting = [r for r in head.actors.records.values()
               if r.state in (ActorState.PENDING, ActorState.RESTARTING) and r.node_id is None]
    for rec in sorted(waiting, key=lambda r: r.version):
        head.enqueue(rec)
    log.info("restored %d actors (%d waiting), %d nodes, %d jobs, %d keys from %s", len(snap.actors), len(waiting),
             len(snap.nodes), len(snap.jobs), len(snap.kv), store.path)
    return True
