"""The head's actor table: one record per actor and the state machine that moves it.

    PENDING --started--> ALIVE --worker exit, restarts left--> RESTARTING --started--> ALIVE
       |                   |                                       |
       +--failed/killed----+--worker exit, none left / killed------+--> DEAD (final)

Every change gives the record a new table version (from `next_version`, by default a
counter from 0); `changed_since(v)` is what the long poll returns, in time proportional
to what changed (records are kept in version order), not to the table's size.
Events for an older incarnation than the record's are ignored (a late exit report of a
replaced worker must not kill its successor). Pure logic: no I/O, unit-tested directly.

Indexes kept in step with every transition, so no event scans the whole table: the live
records per node, per (spread group, node) with the order they were placed in, and per
job; DEAD records in the order they died (for purging). `on_change` is told the id of
every record that changed (the head persists them).
"""

from __future__ import annotations

import collections
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from actors.messages import ActorId, ActorInfo, ActorSpec, ActorState, JobId, NodeId

from .exceptions import NameTakenError

__all__ = ["ActorRecord", "ActorTable", "MUTABLE_FIELDS"]

# What changes in a record after its creation (the spec never does): what is persisted
# on every change, apart from the spec written once.
MUTABLE_FIELDS = ("state", "incarnation", "address", "node_id", "pid", "restarts_left", "death_cause",
                  "version", "kill_requested", "placed_seq", "died_at", "namespace", "gpu_ids")


@dataclass
class ActorRecord:
    spec: ActorSpec
    namespace: str
    state: ActorState = ActorState.PENDING
    incarnation: int = 0
    address: str | None = None
    node_id: NodeId | None = None
    pid: int | None = None
    restarts_left: int = 0
    death_cause: str | None = None
    version: int = 0
    kill_requested: bool = False
    placed_seq: int = 0  # when it was last placed (orders a spread group's members)
    died_at: float | None = None  # wall-clock time it became DEAD
    gpu_ids: tuple[str, ...] = ()  # the GPU devices of its node it holds while placed there

    @property
    def actor_id(self) -> ActorId:
        return self.spec.actor_id

    @property
    def detached(self) -> bool:
        return self.spec.options.lifetime == "detached"

    @property
    def live(self) -> bool:
        return self.state is not ActorState.DEAD

    def info(self) -> ActorInfo:
        return ActorInfo(
            actor_id=self.spec.actor_id, class_name=self.spec.class_name, state=self.state,
            incarnation=self.incarnation, address=self.address, node_id=self.node_id, pid=self.pid,
            name=self.spec.options.name, namespace=self.namespace, detached=self.detached,
            methods=self.spec.methods, async_methods=self.spec.async_methods,
            restarts_left=self.restarts_left, death_cause=self.death_cause, version=self.version,
            gpu_ids=self.gpu_ids,
        )

    def mutable(self) -> dict[str, object]:
        return {f: getattr(self, f) for f in MUTABLE_FIELDS}


class ActorTable:
    def __init__(self, next_version: Callable[[], int] | None = None,
                 on_change: Callable[[ActorId], None] | None = None) -> None:
        """`next_version()` gives each change its version (increasing); default a counter."""
        self.records: dict[ActorId, ActorRecord] = {}
        self.names: dict[tuple[str, str], ActorId] = {}
        self._next_version = next_version
        self._on_change = on_change
        self.version = next_version() if next_version is not None else 0
        self.restarts = 0  # actors moved to RESTARTING since this table was made (a metric)
        self._by_version: collections.OrderedDict[ActorId, None] = collections.OrderedDict()
        self._on_node: dict[NodeId, set[ActorId]] = {}
        self._group_on_node: dict[tuple[str, NodeId], dict[ActorId, int]] = {}
        self._of_job: dict[JobId, set[ActorId]] = {}
        self._dead: collections.deque[ActorId] = collections.deque()  # in order of death
        self._placements = 0

    def _touch(self, rec: ActorRecord) -> None:
        self.version = self._next_version() if self._next_version is not None else self.version + 1
        rec.version = self.version
        self._by_version[rec.actor_id] = None
        self._by_version.move_to_end(rec.actor_id)
        if self._on_change is not None:
            self._on_change(rec.actor_id)

    # -- indexes -----------------------------------------------------------------------
    def _set_node(self, rec: ActorRecord, node_id: NodeId | None) -> None:
        old = rec.node_id
        if old is not None:
            self._on_node.get(old, set()).discard(rec.actor_id)
            group = rec.spec.options.spread_group
            if group is not None:
                members = self._group_on_node.get((group, old))
                if members is not None:
                    members.pop(rec.actor_id, None)
                    if not members:
                        del self._group_on_node[(group, old)]
        rec.node_id = node_id
        if node_id is not None:
            self._on_node.setdefault(node_id, set()).add(rec.actor_id)
            group = rec.spec.options.spread_group
            if group is not None:
                self._group_on_node.setdefault((group, node_id), {})[rec.actor_id] = rec.placed_seq

    def _index(self, rec: ActorRecord) -> None:
        """Enter a record (new or restored) in every index."""
        self.records[rec.actor_id] = rec
        self._by_version[rec.actor_id] = None
        if rec.live:
            name = rec.spec.options.name
            if name is not None:
                self.names[(rec.namespace, name)] = rec.actor_id
            if rec.spec.job_id is not None:
                self._of_job.setdefault(rec.spec.job_id, set()).add(rec.actor_id)
            node, rec.node_id = rec.node_id, None
            self._set_node(rec, node)
            self._placements = max(self._placements, rec.placed_seq)
        else:
            self._dead.append(rec.actor_id)

    def _became_dead(self, rec: ActorRecord) -> None:
        self._set_node(rec, None)
        if rec.spec.job_id is not None:
            self._of_job.get(rec.spec.job_id, set()).discard(rec.actor_id)
        rec.died_at = time.time()
        self._dead.append(rec.actor_id)
        self._drop_name(rec)

    # -- queries -----------------------------------------------------------------------
    def get(self, actor_id: ActorId) -> ActorRecord | None:
        return self.records.get(actor_id)

    def named(self, name: str, namespace: str) -> ActorRecord | None:
        actor_id = self.names.get((namespace, name))
        return self.records.get(actor_id) if actor_id is not None else None

    def changed_since(self, version: int) -> list[ActorInfo]:
        out = []
        for actor_id in reversed(self._by_version):
            rec = self.records[actor_id]
            if rec.version <= version:
                break
            out.append(rec.info())
        out.reverse()
        return out

    def of_job(self, job_id: JobId) -> list[ActorRecord]:
        return [self.records[a] for a in self._of_job.get(job_id, ())]

    def on_node(self, node_id: NodeId) -> list[ActorRecord]:
        return [self.records[a] for a in self._on_node.get(node_id, ())]

    def count_on_node(self, node_id: NodeId) -> int:
        return len(self._on_node.get(node_id, ()))

    def group_on_node(self, group: str, node_id: NodeId) -> tuple[int, int]:
        """(how many live members of the spread group the node hosts, the placement
        order of the latest of them; -1 if none)."""
        members = self._group_on_node.get((group, node_id))
        if not members:
            return 0, -1
        return len(members), max(members.values())

    def dead_oldest_first(self) -> Iterator[ActorRecord]:
        for actor_id in self._dead:
            rec = self.records.get(actor_id)
            if rec is not None and not rec.live:
                yield rec

    def purge(self, actor_id: ActorId) -> None:
        """Forget a DEAD record for good."""
        rec = self.records.get(actor_id)
        if rec is None or rec.live:
            return
        del self.records[actor_id]
        self._by_version.pop(actor_id, None)
        if self._dead and self._dead[0] == actor_id:
            self._dead.popleft()
        else:
            try:
                self._dead.remove(actor_id)
            except ValueError:
                pass

    # -- transitions -------------------------------------------------------------------
    def add(self, spec: ActorSpec, namespace: str) -> ActorRecord:
        name = spec.options.name
        if name is not None:
            existing = self.named(name, namespace)
            if existing is not None and existing.live:
                raise NameTakenError(
                    f"an actor named {name!r} already exists in namespace {namespace!r}; pick another name, "
                    "kill it first, or pass get_if_exists=True"
                )
        rec = ActorRecord(spec, namespace, restarts_left=spec.options.max_restarts)
        self._index(rec)
        self._touch(rec)
        return rec

    def restore(self, rec: ActorRecord) -> None:
        """Enter a record read back from the state store (no new version)."""
        self._index(rec)

    def placed(self, rec: ActorRecord, node_id: NodeId) -> None:
        self._placements += 1
        rec.placed_seq = self._placements
        self._set_node(rec, node_id)
        self._touch(rec)

    def unplaced(self, rec: ActorRecord) -> None:
        """A placement whose worker never came up (the head restarted before it did): back
        to waiting, under a new incarnation so a late start of the old one is refused."""
        self._set_node(rec, None)
        rec.incarnation += 1
        rec.address = rec.pid = None
        self._touch(rec)

    def started(self, actor_id: ActorId, incarnation: int, address: str, pid: int, node_id: NodeId) -> bool:
        rec = self.records.get(actor_id)
        if rec is None or rec.incarnation != incarnation or rec.state not in (ActorState.PENDING, ActorState.RESTARTING):
            return False
        rec.state, rec.address, rec.pid = ActorState.ALIVE, address, pid
        if rec.node_id != node_id:
            self._set_node(rec, node_id)
        self._touch(rec)
        return True

    def exited(self, actor_id: ActorId, incarnation: int, cause: str, allow_restart: bool = True) -> ActorRecord | None:
        """The worker of this incarnation is gone. Returns the record if it changed."""
        rec = self.records.get(actor_id)
        if rec is None or rec.incarnation != incarnation or not rec.live:
            return None
        can_restart = allow_restart and not rec.kill_requested and rec.restarts_left != 0
        if can_restart:
            if rec.restarts_left > 0:
                rec.restarts_left -= 1
            rec.state = ActorState.RESTARTING
            rec.incarnation += 1
            self.restarts += 1
            self._set_node(rec, None)
        else:
            rec.state = ActorState.DEAD
            self._became_dead(rec)
        rec.death_cause = cause
        rec.address = rec.pid = None
        self._touch(rec)
        return rec

    def kill_requested(self, rec: ActorRecord, no_restart: bool) -> None:
        rec.kill_requested = no_restart
        if self._on_change is not None:  # not a new version: watchers see nothing new
            self._on_change(rec.actor_id)

    def dead(self, rec: ActorRecord, cause: str) -> None:
        if not rec.live:
            return
        rec.state = ActorState.DEAD
        rec.death_cause = cause
        rec.address = rec.pid = None
        self._became_dead(rec)
        self._touch(rec)

    def _drop_name(self, rec: ActorRecord) -> None:
        name = rec.spec.options.name
        if name is not None and self.names.get((rec.namespace, name)) == rec.actor_id:
            del self.names[(rec.namespace, name)]
