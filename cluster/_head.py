"""The head service: node table, jobs, actor table, placement, long poll, KV store.

All network I/O goes through the `HeadIO` seam (start/kill workers on agents), so the
whole service runs against a fake in unit tests. Methods marked `@rpc` are called by the
runtime (`head/<method>`, through `actors.system.HeadClient`, which mirrors them); they
are async only where they wait.

The actor table's versions come from a `LongPollHost` (one key, `ACTORS_KEY`), so `watch`
waits on it, and a restarted head's versions are above any its watchers hold.
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import time
from typing import Any, Protocol

from actors import ActorUnschedulableError
from actors.messages import ActorId, ActorInfo, ActorSpec, ActorState, JobId, NodeId, NodeInfo, WatchReply
from actors.system import LongPollHost, rpc

from ._actor_table import ActorRecord, ActorTable
from ._head_state import StateFile
from ._records import JobEntry, NodeEntry
from ._scheduler import NodeLoad, pick_node
from .messages import NodeRegistration, WorkerExit

__all__ = ["Head", "HeadIO", "NODE_TIMEOUT_S", "ACTORS_KEY"]

log = logging.getLogger(__name__)
NODE_TIMEOUT_S = 3.0
JOB_TIMEOUT_S = 5.0
TICK_S = 0.25
STALL_S = 1.0  # a tick this late means the head itself was not running
ACTORS_KEY = "actors"  # the key of the actor table's version in `Head.actor_versions`


class HeadIO(Protocol):
    async def start_actor(self, agent_address: str, spec: ActorSpec, incarnation: int, node_id: NodeId) -> None: ...

    async def kill_worker(self, agent_address: str, actor_id: ActorId, incarnation: int) -> None: ...


class Head:
    def __init__(self, io: HeadIO, address: str = "", state: StateFile | None = None) -> None:
        self.io = io
        self.state = state
        self.address = address
        self.epoch = secrets.token_hex(4)
        self.actor_versions: LongPollHost[str, None] = LongPollHost()
        self.actors = ActorTable(next_version=lambda: self.actor_versions.publish(ACTORS_KEY, None))
        self.node_table: dict[NodeId, NodeEntry] = {}
        self.jobs: dict[JobId, JobEntry] = {}
        self.kv: dict[str, bytes] = {}
        self.queue: list[ActorId] = []  # waiting for resources, FIFO
        self.draining: set[NodeId] = set()  # nodes stopping gracefully: nothing more is placed there
        self._changed = asyncio.Event()
        self._tasks: set[asyncio.Task] = set()
        self._last_tick = time.monotonic()

    def _background(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _notify(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    def changed_event(self) -> asyncio.Event:
        """Set at the next change of the head's state (for watchers and the state file)."""
        return self._changed

    def _save_now(self) -> None:
        if self.state is not None:
            self.state.save(self)

    def restore_actor_version(self, saved: int) -> None:
        """After a restore: versions given from now on are above `saved` (the snapshot's)."""
        self.actor_versions.skip_to(saved)
        self.actors.version = self.actor_versions.publish(ACTORS_KEY, None)

    @rpc
    def info(self) -> dict[str, Any]:
        return {"address": self.address, "pid": os.getpid(), "epoch": self.epoch, "actors": len(self.actors.records)}

    # -- nodes -------------------------------------------------------------------------
    @rpc
    def register_node(self, reg: NodeRegistration) -> dict[str, Any]:
        old = self.node_table.get(reg.node_id)
        used: dict[str, float] = {}
        for actor_id, incarnation in reg.running:
            rec = self.actors.get(actor_id)
            if rec is not None and self._hosts(reg.node_id, actor_id, incarnation):
                for k, v in rec.spec.options.demand().items():
                    used[k] = used.get(k, 0.0) + v
        available = {k: v - used.get(k, 0.0) for k, v in reg.resources.items()}
        if old is not None and old.alive:
            available = old.available
        self.node_table[reg.node_id] = NodeEntry(reg, available)
        log.info("node %s registered at %s with %s", reg.node_id, reg.ip, reg.resources)
        # Workers the head no longer counts on this node (it was declared lost and its
        # actors moved on) must go, or the same actor would run twice.
        stale = [(actor_id, inc) for actor_id, inc in reg.running if not self._hosts(reg.node_id, actor_id, inc)]
        self._schedule()  # notifies
        return {"node_id": reg.node_id.hex, "epoch": self.epoch, "stale": stale}

    def _hosts(self, node_id: NodeId, actor_id: ActorId, incarnation: int) -> bool:
        rec = self.actors.get(actor_id)
        return (rec is not None and rec.node_id == node_id and rec.incarnation == incarnation
                and rec.state in (ActorState.PENDING, ActorState.ALIVE))

    async def tick(self, now: float | None = None) -> None:
        """Periodic liveness checks. If the head itself stalled (paused, swapped out), the
        silence it saw is its own: everyone gets a fresh deadline instead of being lost."""
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
        self.check_nodes(now)
        await self.check_jobs(now)

    @rpc
    def node_heartbeat(self, node_id: NodeId) -> bool:
        """False tells the agent the head does not know it (restarted): register again."""
        node = self.node_table.get(node_id)
        if node is None or not node.alive:
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
    def node_leaving(self, node_id: NodeId) -> None:
        node = self.node_table.get(node_id)
        if node is not None and node.alive:
            self._node_lost(node, f"node {node_id} ({node.reg.ip}) was stopped")

    def _node_lost(self, node: NodeEntry, cause: str) -> None:
        node.alive = False
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
    def register_job(self, address: str, namespace: str | None, pid: int) -> dict[str, str]:
        job_id = JobId.new()
        ns = namespace if namespace is not None else f"anonymous-{job_id.hex}"
        self.jobs[job_id] = JobEntry(job_id, address, ns, pid)
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
    async def job_finished(self, job_id: JobId) -> int:
        """The driver is done: kill the actors it owns that are not detached."""
        self.jobs.pop(job_id, None)
        self._notify()
        owned = [r for r in self.actors.of_job(job_id) if not r.detached]
        for rec in owned:
            await self.kill_actor(rec.actor_id, True, cause=f"its owner (job {job_id}) finished")
        return len(owned)

    # -- actors ------------------------------------------------------------------------
    @rpc
    async def create_actor(self, spec: ActorSpec) -> ActorInfo:
        opts = spec.options
        job = self.jobs.get(spec.job_id) if spec.job_id is not None else None
        namespace = opts.namespace if opts.namespace is not None else (job.namespace if job else "default")
        if opts.name is not None and opts.get_if_exists:
            existing = self.actors.named(opts.name, namespace)
            if existing is not None and existing.state is not ActorState.DEAD:
                return existing.info()
        pick_node(self._loads(None), opts.demand(), opts.node_id)  # raises if never feasible
        rec = self.actors.add(spec, namespace)
        self.queue.append(spec.actor_id)
        self._schedule()
        self._notify()
        return rec.info()

    def _loads(self, group: str | None) -> list[NodeLoad]:
        loads = []
        for n in self.node_table.values():
            here = self.actors.on_node(n.reg.node_id)
            in_group = sum(1 for r in here if r.spec.options.spread_group == group) if group is not None else 0
            alive = n.alive and n.reg.node_id not in self.draining
            loads.append(NodeLoad(n.reg.node_id, alive, n.reg.resources, n.available, len(here), in_group))
        return loads

    def _schedule(self) -> None:
        """Place every queued actor that fits now, in FIFO order."""
        still: list[ActorId] = []
        for actor_id in self.queue:
            rec = self.actors.get(actor_id)
            if rec is None or rec.state not in (ActorState.PENDING, ActorState.RESTARTING) or rec.node_id is not None:
                continue
            demand = rec.spec.options.demand()
            try:
                node_id = pick_node(self._loads(rec.spec.options.spread_group), demand, rec.spec.options.node_id)
            except ActorUnschedulableError as e:
                if rec.state is ActorState.RESTARTING and rec.spec.options.node_id is None:
                    still.append(actor_id)  # its node is gone; wait for one that fits to (re)join
                else:
                    self.actors.dead(rec, str(e))
                continue
            if node_id is None:
                still.append(actor_id)
                continue
            node = self.node_table[node_id]
            for k, v in demand.items():
                node.available[k] = node.available.get(k, 0.0) - v
            self.actors.placed(rec, node_id)
            self._background(self._start_on(node, rec, rec.incarnation))
        self.queue = still
        self._notify()

    async def _start_on(self, node: NodeEntry, rec: ActorRecord, incarnation: int) -> None:
        try:
            await self.io.start_actor(node.reg.agent_address, rec.spec, incarnation, node.reg.node_id)
        except Exception as e:
            log.warning("could not start %s on node %s: %s", rec.actor_id, node.reg.node_id, e)
            self._exited(rec.actor_id, incarnation, f"its worker could not be started on node "
                                                    f"{node.reg.node_id}: {e}")

    @rpc
    def actor_started(self, actor_id: ActorId, incarnation: int, address: str, pid: int, node_id: NodeId) -> bool:
        ok = self.actors.started(actor_id, incarnation, address, pid, node_id)
        if ok:
            self._notify()
        return ok

    @rpc
    def actor_failed(self, actor_id: ActorId, incarnation: int, cause: str) -> None:
        """The constructor raised: the actor is dead for good (no restart)."""
        rec = self.actors.get(actor_id)
        if rec is not None and rec.incarnation == incarnation:
            self._release(rec)
            self.actors.dead(rec, cause)
            self._schedule()

    @rpc
    def worker_exited(self, exit: WorkerExit) -> None:
        self._exited(exit.actor_id, exit.incarnation, exit.reason)

    def _exited(self, actor_id: ActorId, incarnation: int, cause: str, release: bool = True) -> None:
        rec = self.actors.get(actor_id)
        if rec is None or rec.incarnation != incarnation or rec.state is ActorState.DEAD:
            return
        if release:
            self._release(rec)
        rec = self.actors.exited(actor_id, incarnation, cause)
        if rec is not None and rec.state is ActorState.RESTARTING:
            self.queue.append(actor_id)
        self._schedule()

    def _release(self, rec: ActorRecord) -> None:
        node = self.node_table.get(rec.node_id) if rec.node_id is not None else None
        if node is not None:
            for k, v in rec.spec.options.demand().items():
                node.available[k] = node.available.get(k, 0.0) + v

    @rpc
    async def kill_actor(self, actor_id: ActorId, no_restart: bool = True, cause: str = "killed by actors.kill") -> bool:
        rec = self.actors.get(actor_id)
        if rec is None or rec.state is ActorState.DEAD:
            return False
        self.actors.kill_requested(rec, no_restart)
        node = self.node_table.get(rec.node_id) if rec.node_id is not None else None
        incarnation = rec.incarnation
        if no_restart:
            # Final at once: the name is free and callers fail from now on; the
            # process is reaped below and its exit report is then ignored.
            self._release(rec)
            self.actors.dead(rec, cause)
            self._schedule()
        if node is None or not node.alive:
            return True
        try:
            await self.io.kill_worker(node.reg.agent_address, actor_id, incarnation)
        except Exception as e:
            log.warning("kill of %s on node %s failed: %s", actor_id, node.reg.node_id, e)
        return True

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
    def kv_put(self, key: str, value: bytes, overwrite: bool = True) -> bool:
        if not overwrite and key in self.kv:
            return False
        self.kv[key] = value
        self._save_now()  # durable before it is acknowledged
        return True

    @rpc
    def kv_get(self, key: str) -> bytes | None:
        return self.kv.get(key)

    @rpc
    def kv_delete(self, key: str) -> bool:
        found = self.kv.pop(key, None) is not None
        if found:
            self._save_now()
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
