"""The head's actor table: one record per actor and the state machine that moves it.

    PENDING --started--> ALIVE --worker exit, restarts left--> RESTARTING --started--> ALIVE
       |                   |                                       |
       +--failed/killed----+--worker exit, none left / killed------+--> DEAD (final)

Every change gives the record a new table version (from `next_version`, by default a
counter from 0); `changed_since(v)` is what the long poll returns.
Events for an older incarnation than the record's are ignored (a late exit report of a
replaced worker must not kill its successor). Pure logic: no I/O, unit-tested directly.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from actors.messages import ActorId, ActorInfo, ActorSpec, ActorState, JobId, NodeId

from .exceptions import NameTakenError

__all__ = ["ActorRecord", "ActorTable"]


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

    @property
    def actor_id(self) -> ActorId:
        return self.spec.actor_id

    @property
    def detached(self) -> bool:
        return self.spec.options.lifetime == "detached"

    def info(self) -> ActorInfo:
        return ActorInfo(
            actor_id=self.spec.actor_id, class_name=self.spec.class_name, state=self.state,
            incarnation=self.incarnation, address=self.address, node_id=self.node_id, pid=self.pid,
            name=self.spec.options.name, namespace=self.namespace, detached=self.detached,
            methods=self.spec.methods, async_methods=self.spec.async_methods,
            restarts_left=self.restarts_left, death_cause=self.death_cause, version=self.version,
        )


class ActorTable:
    def __init__(self, next_version: Callable[[], int] | None = None) -> None:
        """`next_version()` gives each change its version (increasing); default a counter."""
        self.records: dict[ActorId, ActorRecord] = {}
        self.names: dict[tuple[str, str], ActorId] = {}
        self._next_version = next_version
        self.version = next_version() if next_version is not None else 0
        self.restarts = 0  # actors moved to RESTARTING since this table was made (a metric)

    def _touch(self, rec: ActorRecord) -> None:
        self.version = self._next_version() if self._next_version is not None else self.version + 1
        rec.version = self.version

    # -- queries -----------------------------------------------------------------------
    def get(self, actor_id: ActorId) -> ActorRecord | None:
        return self.records.get(actor_id)

    def named(self, name: str, namespace: str) -> ActorRecord | None:
        actor_id = self.names.get((namespace, name))
        return self.records.get(actor_id) if actor_id is not None else None

    def changed_since(self, version: int) -> list[ActorInfo]:
        return [r.info() for r in self.records.values() if r.version > version]

    def of_job(self, job_id: JobId) -> list[ActorRecord]:
        return [r for r in self.records.values() if r.spec.job_id == job_id and r.state is not ActorState.DEAD]

    def on_node(self, node_id: NodeId) -> list[ActorRecord]:
        return [r for r in self.records.values() if r.node_id == node_id and r.state is not ActorState.DEAD]

    # -- transitions -------------------------------------------------------------------
    def add(self, spec: ActorSpec, namespace: str) -> ActorRecord:
        name = spec.options.name
        if name is not None:
            existing = self.named(name, namespace)
            if existing is not None and existing.state is not ActorState.DEAD:
                raise NameTakenError(
                    f"an actor named {name!r} already exists in namespace {namespace!r}; pick another name, "
                    "kill it first, or pass get_if_exists=True"
                )
            self.names[(namespace, name)] = spec.actor_id
        rec = ActorRecord(spec, namespace, restarts_left=spec.options.max_restarts)
        self.records[spec.actor_id] = rec
        self._touch(rec)
        return rec

    def placed(self, rec: ActorRecord, node_id: NodeId) -> None:
        rec.node_id = node_id
        self._touch(rec)

    def started(self, actor_id: ActorId, incarnation: int, address: str, pid: int, node_id: NodeId) -> bool:
        rec = self.records.get(actor_id)
        if rec is None or rec.incarnation != incarnation or rec.state not in (ActorState.PENDING, ActorState.RESTARTING):
            return False
        rec.state, rec.address, rec.pid, rec.node_id = ActorState.ALIVE, address, pid, node_id
        self._touch(rec)
        return True

    def exited(self, actor_id: ActorId, incarnation: int, cause: str, allow_restart: bool = True) -> ActorRecord | None:
        """The worker of this incarnation is gone. Returns the record if it changed."""
        rec = self.records.get(actor_id)
        if rec is None or rec.incarnation != incarnation or rec.state is ActorState.DEAD:
            return None
        can_restart = allow_restart and not rec.kill_requested and rec.restarts_left != 0
        if can_restart:
            if rec.restarts_left > 0:
                rec.restarts_left -= 1
            rec.state = ActorState.RESTARTING
            rec.incarnation += 1
            self.restarts += 1
        else:
            rec.state = ActorState.DEAD
            self._drop_name(rec)
        rec.death_cause = cause
        rec.address = rec.pid = None
        rec.node_id = None
        self._touch(rec)
        return rec

    def kill_requested(self, rec: ActorRecord, no_restart: bool) -> None:
        rec.kill_requested = no_restart

    def dead(self, rec: ActorRecord, cause: str) -> None:
        if rec.state is ActorState.DEAD:
            return
        rec.state = ActorState.DEAD
        rec.death_cause = cause
        rec.address = rec.pid = None
        rec.node_id = None
        self._drop_name(rec)
        self._touch(rec)

    def _drop_name(self, rec: ActorRecord) -> None:
        name = rec.spec.options.name
        if name is not None and self.names.get((rec.namespace, name)) == rec.actor_id:
            del self.names[(rec.namespace, name)]
