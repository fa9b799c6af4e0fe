"""The head service: node table, jobs, actor table, placement, long poll, KV store.

All network I/O goes through the `HeadIO` seam (start/kill workers on agents), so the
whole service runs against a fake in unit tests. Methods marked `@rpc` are called by the
runtime (`head/<method>`, through `actors.system.HeadClient`, which mirrors them); they
are async only where they wait.

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

import asyncio
import functools
import inspect
import logging
import os
import secrets
import time
from collections.abc import Callable
from typing import Any, Protocol, TypeVar

from actors import ActorUnschedulableError
from actors.messages import ActorId, ActorInfo, ActorSpec, ActorState, JobId, NodeId, NodeInfo, WatchReply
from actors.system import LongPollHost, rpc

from ._actor_table import ActorRecord, ActorTable
from ._gpus import allocate, free_shares, release
from ._head_state import HeadLimits, Journal
from ._head_store import HeadStore
from ._pending import PendingQueue, shape_of
from ._records import JobEntry, NodeEntry
from ._scheduler import NodeLoad, pick_node
from .exceptions import BlobTooLargeError, TooManyPendingActorsError
from .messages import NodeRegistration, WorkerExit

__all__ = ["Head", "HeadIO", "NODE_TIMEOUT_S", "ACTORS_KEY"]

log = logging.getLogger(__name__)
NODE_TIMEOUT_S = 3.0
JOB_TIMEOUT_S = 5.0
TICK_S = 0.25
STALL_S = 1.0  # a tick this late means the head itself was not running
ACTORS_KEY = "actors"  # the key of the actor table's version in `Head.actor_versions`
_WAITING = (ActorState.PENDING, ActorState.RESTARTING)
F = TypeVar("F", bound=Callable[..., Any])


def durable(fn: F) -> F:
    """The change the call made is in the store before its reply leaves."""
    if inspect.iscoroutinefunction(fn):
        @functools.wraps(fn)
        async def run_async(self: Head, *args: Any, **kwargs: Any) -> Any:
            try:
                return await fn(self, *args, **kwargs)
            finally:
                self.commit()

        return run_async  # type: ignore[return-value]

    @functools.wraps(fn)
    def run(self: Head, *args: Any, **kwargs: Any) -> Any:
        try:
            return fn(self, *args, **kwargs)
        finally:
            self.commit()

    return run  # type: ignore[return-value]


class HeadIO(Protocol):
    async def start_actor(self, agent_address: str, spec: ActorSpec, incarnation: int, node_id: NodeId,
                          gpu_ids: tuple[str, ...] = ()) -> None: ...

    async def kill_worker(self, agent_address: str, actor_id: ActorId, incarnation: int) -> None: ...


class Head:
    def __init__(self, io: HeadIO, address: str = "", store: HeadStore | None = None,
                 limits: HeadLimits | None = None) -> None:
        self.io = io
        self.address = address
        self.limits = limits or HeadLimits.from_env()
        self.epoch = secrets.token_hex(4)
        self.journal = Journal(store, on_dirty=self._commit_soon)
        self.actor_versions: LongPollHost[str, None] = LongPollHost()
        self.actors = ActorTable(next_version=lambda: self.actor_versions.publish(ACTORS_KEY, None),
                                 on_change=self.journal.actor)
        self.node_table: dict[NodeId, NodeEntry] = {}
        self.jobs: dict[JobId, JobEntry] = {}
        self.kv: dict[str, bytes] = {}
        self.pending = PendingQueue()  # waiting for resources
        self.draining: set[NodeId] = set()  # nodes stopping gracefully: nothing more is placed there
        self._changed = asyncio.Event()
        self._tasks: set[asyncio.Task] = set()
        self._last_tick = time.monotonic()
        self.dashboard_url = ""  # set by the head process when it serves the dashboard

    def _background(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _notify(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    def changed_event(self) -> asyncio.Event:
        """Set at the next change of the head's state."""
        return self._changed

    # -- persistence -------------------------------------------------------------------
    def commit(self) -> None:
        """Write every change made since the last commit to the store (one transaction)."""
        try:
            self.journal.commit(self)
        except Exception as e:
            log.error("could not write the head state to %s: %s", self.journal.store and self.journal.store.path, e)
            raise

    def _commit_soon(self) -> None:
        """A safety net: a change no RPC or step committed is committed once the loop is free."""
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        loop.call_soon(self._commit_quietly)

    def _commit_quietly(self) -> None:
        try:
            self.commit()
        except Exception:
            pass  # logged; the next commit retries

    def restore_actor_version(self, saved: int) -> None:
        """After a restore: versions given from now on are above `saved` (the snapshot's)."""
        self.actor_versions.skip_to(saved)
        self.actors.version = self.actor_versions.publish(ACTORS_KEY, None)

    @rpc
    def info(self) -> dict[str, Any]:
        now = time.monotonic()
        return {"address": self.address, "pid": os.getpid(), "epoch": self.epoch, "actors": len(self.actors.records),
                "pending": len(self.pending), "dashboard_url": self.dashboard_url,
                "heartbeat_age_s": {n.reg.node_id.hex: now - n.last_seen for n in self.node_table.values() if n.alive}}

    # -- nodes -------------------------------------------------------------------------
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

    def _hosts(self, node_id: NodeId, actor_id: ActorId, incarnation: int) -> bool:
        rec = self.actors.get(actor_id)
        return rec is not None and rec.node_id == node_id and rec.incarnation == incarnation and rec.live

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

    # -- jobs --------------------------------------------------------------------------
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

    # -- actors ------------------------------------------------------------------------
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

    # -- key-value store ---------------------------------------------------------------
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


def _sum(dicts: Any) -> dict[str, float]:
    out: dict[str, float] = {}
    for d in dicts:
        for k, v in d.items():
            out[k] = out.get(k, 0.0) + v
    return out
