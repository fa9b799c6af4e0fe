"""The head service: node table, jobs, actor table, placement, long poll, KV store.

All network I/O goes through the `HeadIO` seam (start/kill workers on agents), so the
whole service runs against a fake in unit tests. `Head` is the service: it builds on
`_head_core.HeadCore` (state, persistence), `_head_placement.Placement` and
`_head_nodes.NodeMembership`, and adds jobs, the actor RPCs and the KV store here. Methods
marked `@rpc` (on any of them) are called by the runtime (`head/<method>`, through
`actors.system.HeadClient`, which mirrors them); they are async only where they wait.

Invariants:
- every change an RPC makes is in the store before its reply leaves (`@durable`); so is
  every background change, at the end of the step that made it (`commit`);
- waiting actors sit in a `PendingQueue` (O(1) per change); a scheduling pass costs the
  number of shapes waiting plus the placements it makes, never the queue's length;
- the head's loop never blocks on anything but a store write of what just changed.

The actor table's versions come from a `LongPollHost` (one key, `ACTORS_KEY`), so `watch`
waits on it, and a restarted head's versions are above any its watchers hold.
"""

from __future__ import annotations

import logging
import os
import time
from typing import Any

from actors.messages import ActorId, ActorInfo, ActorSpec, JobId, NodeId, WatchReply
from actors.system import rpc

from ._head_core import ACTORS_KEY, HeadIO, durable
from ._head_nodes import NODE_TIMEOUT_S, NodeMembership
from ._records import JobEntry
from ._scheduler import pick_node
from .exceptions import BlobTooLargeError, TooManyPendingActorsError
from .messages import WorkerExit

__all__ = ["Head", "HeadIO", "NODE_TIMEOUT_S", "ACTORS_KEY"]

log = logging.getLogger(__name__)
JOB_TIMEOUT_S = 5.0
TICK_S = 0.25
STALL_S = 1.0  # a tick this late means the head itself was not running


class Head(NodeMembership):
    """The head service (see the module docstring)."""

    # -- the head itself -------------------------------------------------------------
    @rpc
    def info(self) -> dict[str, Any]:
        now = time.monotonic()
        return {"address": self.address, "pid": os.getpid(), "epoch": self.epoch, "actors": len(self.actors.records),
                "pending": len(self.pending), "dashboard_url": self.dashboard_url,
                "max_blob_bytes": self.limits.max_blob_bytes,  # per KV value and per actor's payload
                "heartbeat_age_s": {n.reg.node_id.hex: now - n.last_seen for n in self.node_table.values() if n.alive}}

    async def tick(self, now: float | None = None) -> None:
        """Periodic liveness checks and purges. If the head itself stalled (paused, swapped
        out), the silence it saw is its own: everyone gets a fresh deadline instead."""
        now = time.monotonic() if now is None else now
        gap = now - self._last_tick
        self._last_tick = now
        if gap > STALL_S:
            log.warning("the head stalled for %.1fs; giving nodes and jobs a fresh deadline", gap)
            for node in self.node_table.values():
                node.last_seen = now
            for job in self.jobs.values():
                job.last_seen = now
            return
        try:
            self.check_nodes(now)
            await self.check_jobs(now)
            self.purge()
        finally:
            self.commit()

    # -- jobs ------------------------------------------------------------------------
    @rpc
    @durable
    def register_job(self, address: str, namespace: str | None, pid: int) -> dict[str, str]:
        job_id = JobId.new()
        ns = namespace if namespace is not None else f"anonymous-{job_id.hex}"
        self.jobs[job_id] = JobEntry(job_id, address, ns, pid)
        self.journal.job(job_id)
        self._notify()
        return {"job_id": job_id.hex, "namespace": ns}

    @rpc
    def job_heartbeat(self, job_id: JobId) -> bool:
        job = self.jobs.get(job_id)
        if job is None:
            return False
        job.last_seen = time.monotonic()
        return True

    async def check_jobs(self, now: float | None = None) -> list[JobId]:
        """Finish jobs whose driver stopped heartbeating (it died without a goodbye)."""
        now = time.monotonic() if now is None else now
        lost = [j.job_id for j in self.jobs.values() if now - j.last_seen > JOB_TIMEOUT_S]
        for job_id in lost:
            log.warning("job %s stopped heartbeating: its driver is gone", job_id)
            await self.job_finished(job_id)
        return lost

    @rpc
    @durable
    async def job_finished(self, job_id: JobId) -> int:
        """The driver is done: kill the actors it owns that are not detached."""
        if self.jobs.pop(job_id, None) is not None:
            self.journal.job(job_id)
        self._notify()
        owned = [r for r in self.actors.of_job(job_id) if not r.detached]
        for rec in owned:
            await self.kill_actor(rec.actor_id, True, cause=f"its owner (job {job_id}) finished")
        return len(owned)

    # -- actors ----------------------------------------------------------------------
    @rpc
    @durable
    async def create_actor(self, spec: ActorSpec) -> ActorInfo:
        opts = spec.options
        job = self.jobs.get(spec.job_id) if spec.job_id is not None else None
        namespace = opts.namespace if opts.namespace is not None else (job.namespace if job else "default")
        if opts.name is not None and opts.get_if_exists:
            existing = self.actors.named(opts.name, namespace)
            if existing is not None and existing.live:
                return existing.info()
        if len(spec.payload) > self.limits.max_blob_bytes:
            raise BlobTooLargeError(
                f"{spec.class_name}'s class and constructor arguments take {len(spec.payload):,} bytes pickled; "
                f"the head stores at most {self.limits.max_blob_bytes:,} per actor "
                "($ZEROSERVE_HEAD_MAX_BLOB_BYTES). Pass large data another way: load it in the constructor, "
                "or pass a path or an object store key")
        pick_node(self._loads(None), opts.demand(), opts.node_id)  # raises if never feasible
        waiting = self.pending.of_job(spec.job_id)
        if waiting >= self.limits.max_pending_per_job:
            raise TooManyPendingActorsError(
                f"job {spec.job_id} already has {waiting:,} actors waiting for resources, the limit "
                "($ZEROSERVE_MAX_PENDING_ACTORS_PER_JOB); wait for some to start, add nodes, or ask for fewer")
        rec = self.actors.add(spec, namespace)
        self.journal.new_actor(spec.actor_id)
        self.enqueue(rec)
        self._schedule()
        return rec.info()

    @rpc
    @durable
    def actor_started(self, actor_id: ActorId, incarnation: int, address: str, pid: int, node_id: NodeId) -> bool:
        """False: the head does not count on this worker (unknown actor, or another
        incarnation): the worker must exit."""
        ok = self.actors.started(actor_id, incarnation, address, pid, node_id)
        if ok:
            self._notify()
        return ok

    @rpc
    @durable
    def actor_failed(self, actor_id: ActorId, incarnation: int, cause: str) -> None:
        """The constructor raised: the actor is dead for good (no restart)."""
        rec = self.actors.get(actor_id)
        if rec is not None and rec.incarnation == incarnation:
            self._release(rec)
            self.actors.dead(rec, cause)
            self._schedule()

    @rpc
    @durable
    def worker_exited(self, exit: WorkerExit) -> None:
        self._exited(exit.actor_id, exit.incarnation, exit.reason)

    @rpc
    @durable
    async def kill_actor(self, actor_id: ActorId, no_restart: bool = True, cause: str = "killed by actors.kill") -> bool:
        rec = self.actors.get(actor_id)
        if rec is None or not rec.live:
            return False
        self.actors.kill_requested(rec, no_restart)
        node = self.node_table.get(rec.node_id) if rec.node_id is not None else None
        incarnation = rec.incarnation
        if no_restart:
            # Final at once: the name is free and callers fail from now on; the
            # process is reaped below and its exit report is then ignored.
            self._release(rec)
            self.pending.remove(actor_id)
            self.actors.dead(rec, cause)
            self._schedule()
        self.commit()  # durable before the worker is touched
        if node is None or not node.alive:
            return True
        try:
            await self.io.kill_worker(node.reg.agent_address, actor_id, incarnation)
        except Exception as e:
            log.warning("kill of %s on node %s failed: %s", actor_id, node.reg.node_id, e)
        return True

    def purge(self, now: float | None = None) -> int:
        """Forget dead actors and dead nodes older than their time-to-live, or beyond their
        count (oldest first). Returns how many records went."""
        now = time.time() if now is None else now
        lim = self.limits
        dead = list(self.actors.dead_oldest_first())
        excess = len(dead) - lim.max_dead_actors
        gone = 0
        for i, rec in enumerate(dead):
            if i >= excess and (rec.died_at is None or now - rec.died_at < lim.dead_actor_ttl_s):
                break
            self.actors.purge(rec.actor_id)
            self.journal.actor(rec.actor_id)
            gone += 1
        dead_nodes = sorted((n for n in self.node_table.values() if not n.alive), key=lambda n: n.dead_at or 0.0)
        excess = len(dead_nodes) - lim.max_dead_nodes
        for i, n in enumerate(dead_nodes):
            if i >= excess and (n.dead_at is None or now - n.dead_at < lim.dead_node_ttl_s):
                break
            if self.actors.count_on_node(n.reg.node_id):
                continue
            del self.node_table[n.reg.node_id]
            self.journal.node(n.reg.node_id)
            gone += 1
        return gone

    @rpc
    def get_actor_info(self, actor_id: ActorId) -> ActorInfo | None:
        rec = self.actors.get(actor_id)
        return rec.info() if rec is not None else None

    @rpc
    def get_named_actor(self, name: str, namespace: str | None) -> ActorInfo | None:
        rec = self.actors.named(name, namespace if namespace is not None else "default")
        return rec.info() if rec is not None else None

    @rpc
    def list_actors(self) -> list[ActorInfo]:
        return [r.info() for r in self.actors.records.values()]

    @rpc
    async def watch(self, version: int, epoch: str | None, hold_s: float) -> WatchReply:
        """Long poll: actors changed since `version` (all of them after a head restart)."""
        if epoch != self.epoch:
            version = 0
        changed = self.actors.changed_since(version)
        if not changed:
            await self.actor_versions.listen(ACTORS_KEY, version, hold_s)
            changed = self.actors.changed_since(version)
        return WatchReply(self.actors.version, tuple(changed), self.epoch)

    # -- key-value store -------------------------------------------------------------
    @rpc
    @durable
    def kv_put(self, key: str, value: bytes, overwrite: bool = True) -> bool:
        if len(value) > self.limits.max_blob_bytes:
            raise BlobTooLargeError(
                f"the value for key {key!r} takes {len(value):,} bytes; the head's KV store holds at most "
                f"{self.limits.max_blob_bytes:,} per value ($ZEROSERVE_HEAD_MAX_BLOB_BYTES)")
        if not overwrite and key in self.kv:
            return False
        self.kv[key] = value
        self.journal.key(key)
        return True

    @rpc
    def kv_get(self, key: str) -> bytes | None:
        return self.kv.get(key)

    @rpc
    @durable
    def kv_delete(self, key: str) -> bool:
        found = self.kv.pop(key, None) is not None
        if found:
            self.journal.key(key)
        return found

    @rpc
    def kv_keys(self, prefix: str = "") -> list[str]:
        return sorted(k for k in self.kv if k.startswith(prefix))
