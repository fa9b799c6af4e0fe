"""The agent: one per machine. Registers its node, heartbeats, and runs worker processes.

Workers are forked by a fork server (`actors.system.ForkServer`), which has the runtime
imported already, so a worker starts in milliseconds. Each holds a lifeline pipe to the
agent (it exits when the agent dies); the fork server reaps it and reports its exit
status, which the agent reports to the head at once. Its stdout and stderr are read by
the agent (`WorkerOutput`): written to the actor's log files (`<log name>.out/.err`,
rotated) and echoed to the actor's owner and subscribers, each line prefixed with
`(<log name or Class> pid=N)`.

The agent also serves its node's observability: the metrics endpoint pulls every local
process's metrics (`metrics_processes()`: itself, the head on the head node, its
workers, attached drivers), and `zeroserve logs` lists, tails and follows the node's log
files through its `list_logs`/`tail_log`/`follow_log` methods.

Stopping gracefully (`drain`, on SIGTERM): the head is told first, so it places nothing
more here; every worker gets SIGTERM and finishes its work in flight (the runtime's
`ActorHost.drain`) within the grace period, reporting its exit as usual, so restartable
actors come back on other nodes; those still running at the deadline are killed.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from actors.messages import ActorId, ActorSpec, Assignment, NodeId
from actors.system import GRACE_ENV, PRELOAD_ENV, ForkServer, LogRotation, Runtime, pid_alive, rpc

from ._log_access import LogDirectory
from ._node_metrics import ProcessRef
from ._worker_output import WorkerOutput
from .messages import NodeRegistration, WorkerExit

__all__ = ["Agent", "HEARTBEAT_S"]

log = logging.getLogger(__name__)
HEARTBEAT_S = 0.5


_MAX_LOG_OWNERS = 10_000  # log files whose actor the agent remembers (for `zeroserve logs`)


@dataclass
class _Worker:
    worker_id: str
    spec: ActorSpec
    incarnation: int
    lifeline_w: int
    gpu_ids: tuple[str, ...] = ()
    pid: int = 0
    address: str | None = None  # its runtime's, once it asked for its assignment
    started_at: float = field(default_factory=time.monotonic)
    output: WorkerOutput | None = None
    exited: bool = False

    @property
    def log_name(self) -> str:
        return self.spec.options.log_name or f"{self.spec.class_name}-{self.spec.actor_id}"

    @property
    def component(self) -> str:
        """Its `component` metrics label: what its log name starts with (replica, proxy,
        controller), "actor" for a plain actor."""
        given = self.spec.options.log_name
        return given.split("_", 1)[0] if given else "actor"


#: What the node's fork server imports ahead of time for its workers (`$ZEROSERVE_PRELOAD`
#: overrides it, e.g. "serve,numpy"; "" for nothing): the serving layer, which the
#: controller, the proxies and every replica run.
DEFAULT_PRELOAD = "serve"


class Agent:
    def __init__(self, rt: Runtime, *, head_address: str, node_ip: str, resources: dict[str, float],
                 session_dir: str, token_file: str, is_head: bool = False, advertise: str | None = None,
                 grace_period_s: float = 30.0, rotation: LogRotation | None = None,
                 gpu_ids: tuple[str, ...] = ()) -> None:
        self.rt = rt
        self.gpu_ids = tuple(gpu_ids)  # this node's GPU devices; the head hands them out
        self.head_address = head_address
        self.node_ip = node_ip  # what this node's sockets bind
        self.advertise = advertise  # what others reach them at, when not node_ip
        self.grace_period_s = grace_period_s
        self.resources = resources
        self.session_dir = Path(session_dir)
        self.token_file = token_file
        self.is_head = is_head
        self.node_id = NodeId.new()
        self._workers: dict[str, _Worker] = {}
        self._by_actor: dict[ActorId, _Worker] = {}
        self._by_pid: dict[int, _Worker] = {}
        self._forks: ForkServer | None = None
        self._seq = 0
        self._closing = False
        self.rotation = rotation or LogRotation()
        self.logs = LogDirectory(self.session_dir / "logs")
        self._log_owners: dict[str, dict[str, Any]] = {}  # log file -> the actor writing it
        self._attached: dict[str, tuple[int, str]] = {}  # address -> (pid, component) of attached processes
        self.metrics_url = ""
        self.stdout_only: tuple[str, ...] = ()  # this node's "head"/"agent" when they log to stdout, not files
        self._draining = False
        self._none_left: asyncio.Event | None = None  # set when the last worker exits, during a drain

    def prepare(self) -> None:
        """Start the fork server now, so the first actor does not wait for its imports."""
        self._fork_server()

    # -- the head ----------------------------------------------------------------------
    def registration(self) -> NodeRegistration:
        running = tuple((w.spec.actor_id, w.incarnation) for w in self._workers.values() if not w.exited)
        return NodeRegistration(self.node_id, self.advertise or self.node_ip, self.rt.address, dict(self.resources),
                                self.is_head, socket.gethostname(), running, self.metrics_url, self.gpu_ids,
                                self._draining)

    async def register(self, timeout: float = 15.0) -> dict[str, Any]:
        reply = await self.rt.head.register_node(self.registration(), timeout=timeout)
        for actor_id, incarnation in reply.get("stale", ()):
            log.warning("killing the worker of %s: the head moved it off this node", actor_id)
            self.kill_worker(actor_id, incarnation)
        return reply

    async def heartbeat_forever(self) -> None:
        while not self._closing:
            await asyncio.sleep(HEARTBEAT_S)
            try:
                known = await self.rt.head.node_heartbeat(self.node_id, timeout=max(2.0, HEARTBEAT_S * 4))
                if not known:
                    log.warning("the head does not know this node (it restarted?): registering again")
                    await self.register()
            except Exception as e:
                log.warning("heartbeat to the head failed: %s", e)

    # -- workers -----------------------------------------------------------------------
    def _fork_server(self) -> ForkServer:
        if self._forks is None or not self._forks.alive():
            # ZEROSERVE_LOGS_DIR: where this node keeps logs (actors.system.node_logs_dir() in workers)
            env = dict(os.environ, PYTHONUNBUFFERED="1", ZEROSERVE_LOGS_DIR=str(self.session_dir / "logs"),
                       **{GRACE_ENV: str(self.grace_period_s), PRELOAD_ENV: os.environ.get(PRELOAD_ENV, DEFAULT_PRELOAD)})
            log = str(self.session_dir / "logs" / f"zygote-{self.node_ip}.log")
            self._forks = ForkServer(self._on_exit, env=env, log_path=log)
        return self._forks

    @rpc
    async def start_actor(self, spec: ActorSpec, incarnation: int, node_id: NodeId,
                          gpu_ids: tuple[str, ...] = ()) -> int:
        """Start a worker process for this actor incarnation, holding the GPU devices the
        head gave it; returns its pid."""
        if self._draining or self._closing:
            raise RuntimeError(f"node {self.node_id} ({self.advertise or self.node_ip}) is shutting down")
        self._seq += 1
        worker_id = f"{os.getpid()}-{self._seq}"
        life_r, life_w = os.pipe()
        out_r, out_w = os.pipe()
        err_r, err_w = os.pipe()
        logs_r, logs_w = os.pipe()
        w = _Worker(worker_id, spec, incarnation, life_w, tuple(gpu_ids))
        try:
            argv = ["--agent", self.rt.address, "--node-ip", self.node_ip, "--worker-id", worker_id,
                    "--token-file", self.token_file]
            if self.advertise:
                argv += ["--advertise", self.advertise]
            w.pid = await self._fork_server().launch(argv, life_r, out_w, err_w, logs_w)
        except BaseException:
            for fd in (life_w, out_r, err_r, logs_r):
                os.close(fd)
            raise
        finally:
            for fd in (life_r, out_w, err_w, logs_w):
                os.close(fd)
        self._workers[worker_id] = w
        self._by_pid[w.pid] = w
        old = self._by_actor.get(spec.actor_id)
        if old is not None and not old.exited:
            self._kill(old)
        self._by_actor[spec.actor_id] = w
        prefix = f"({spec.options.log_name or spec.class_name} pid={w.pid})"
        w.output = WorkerOutput(logs_dir=self.logs.path, log_name=w.log_name, prefix=prefix, owner=spec.owner_address,
                                rotation=self.rotation, send=self.rt.send_oneway, on_write=self.logs.touched)
        w.output.read_pipes(out_r, err_r, logs_r)
        owner = {"actor_id": spec.actor_id.hex, "class_name": spec.class_name, "actor_name": spec.options.name,
                 "namespace": spec.options.namespace}
        for name in w.output.file_names():
            self._log_owners.pop(name, None)
            self._log_owners[name] = owner
        while len(self._log_owners) > _MAX_LOG_OWNERS:
            del self._log_owners[next(iter(self._log_owners))]
        return w.pid

    @rpc
    async def worker_ready(self, worker_id: str, address: str, pid: int) -> Assignment:
        w = self._workers.get(worker_id)
        if w is None or w.exited:
            raise KeyError(f"unknown worker {worker_id}")
        w.address = address
        return Assignment(w.spec, w.incarnation, self.node_id, self.head_address, w.gpu_ids)

    @rpc
    def kill_worker(self, actor_id: ActorId, incarnation: int) -> bool:
        w = self._by_actor.get(actor_id)
        if w is None or w.exited or w.incarnation != incarnation:
            return False
        self._kill(w)
        return True

    def _kill(self, w: _Worker) -> None:
        try:
            os.kill(w.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass

    @rpc
    def workers(self) -> list[dict[str, Any]]:
        return [{"actor_id": w.spec.actor_id.hex, "class_name": w.spec.class_name, "pid": w.pid,
                 "incarnation": w.incarnation, "gpu_ids": list(w.gpu_ids)}
                for w in self._workers.values() if not w.exited]

    def _on_exit(self, pid: int, code: int) -> None:
        w = self._by_pid.pop(pid, None)
        if w is None:
            return
        w.exited = True
        self._workers.pop(w.worker_id, None)
        if self._by_actor.get(w.spec.actor_id) is w:
            del self._by_actor[w.spec.actor_id]
        os.close(w.lifeline_w)
        if self._none_left is not None and not self._workers:
            self._none_left.set()
        if self._closing:
            return
        reason = _describe_exit(w, code, f"node {self.advertise or self.node_ip}" if self._draining else None)
        log.info("%s", reason)
        self.rt.background(self._report_exit(WorkerExit(w.spec.actor_id, w.incarnation, code, reason)))

    async def _report_exit(self, exit: WorkerExit) -> None:
        try:
            await self.rt.head.retrying().worker_exited(exit)
        except Exception as e:
            log.error("could not report %s to the head: %s", exit, e)

    async def drain(self, timeout_s: float) -> None:
        """Stop gracefully: no new workers, the running ones finish their work in flight
        within `timeout_s` (SIGTERM; see the module docstring), the rest are killed."""
        self._draining = True
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        try:
            await self.rt.head.node_draining(self.node_id, timeout=min(2.0, timeout_s))
        except Exception as e:  # the head may be down: drain all the same
            log.warning("could not tell the head this node is draining: %s", e)
        workers = [w for w in self._workers.values() if not w.exited]
        if not workers:
            return
        self._none_left = asyncio.Event()
        for w in workers:
            try:
                os.kill(w.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        try:
            await asyncio.wait_for(self._none_left.wait(), max(0.0, deadline - loop.time()))
            log.info("the %d workers of this node finished their work", len(workers))
        except asyncio.TimeoutError:
            left = [w for w in self._workers.values() if not w.exited]
            log.warning("%d workers were still running after %.0fs: killing them", len(left), timeout_s)

    def shutdown(self) -> None:
        self._closing = True
        for w in list(self._workers.values()):
            self._kill(w)
            if w.output is not None:
                w.output.close()
        if self._forks is not None:
            self._forks.close()

    # -- output to subscribers -------------------------------------------------------------
    @rpc
    def follow_output(self, actor_id: ActorId, incarnation: int, subscriber: str) -> bool:
        """Echo this actor incarnation's output to `subscriber` too (its recent lines first).
        False if that incarnation does not run here (any more)."""
        w = self._by_actor.get(actor_id)
        if w is None or w.exited or w.incarnation != incarnation or w.output is None:
            return False
        w.output.subscribe(subscriber)
        return True

    @rpc
    def unfollow_output(self, subscriber: str) -> None:
        for w in self._workers.values():
            if w.output is not None:
                w.output.unsubscribe(subscriber)

    # -- metrics -----------------------------------------------------------------------
    @rpc
    def attach_process(self, address: str, pid: int, component: str) -> None:
        """Scrape this process (a driver on this node) with the node's own, while it lives."""
        self._attached[address] = (pid, component)

    def metrics_processes(self) -> list[ProcessRef]:
        """The processes of this node to scrape now."""
        procs = [ProcessRef(None, "agent")]
        if self.is_head:
            procs.append(ProcessRef(self.head_address, "head"))
        procs += [ProcessRef(w.address, w.component, w.pid) for w in self._workers.values()
                  if not w.exited and w.address is not None]
        for address, (pid, component) in list(self._attached.items()):
            if pid_alive(pid):
                procs.append(ProcessRef(address, component, pid))
            else:
                del self._attached[address]
        return procs

    # -- log files -----------------------------------------------------------------------
    @rpc
    def list_logs(self) -> dict[str, Any]:
        """This node's log files: {"node_ip", "node_id", "files": [{name, size, mtime, and the
        actor writing it if known: actor_id, class_name, actor_name, namespace}], "stdout_only":
        ["head", "agent"] of those that write no file (`zeroserve start --block` without
        `--log-files`)}."""
        files = self.logs.list()
        for f in files:
            owner = self._log_owners.get(f["name"])
            if owner is not None:
                f.update(owner)
        return {"node_ip": self.advertise or self.node_ip, "node_id": self.node_id.hex, "files": files,
                "stdout_only": list(self.stdout_only)}

    @rpc
    def tail_log(self, name: str, lines: int) -> dict[str, Any]:
        """The last `lines` lines of a log file: {data, offset, inode} (to follow from)."""
        return self.logs.tail(name, lines)

    @rpc
    async def follow_log(self, name: str, offset: int, inode: int | None, hold_s: float) -> dict[str, Any]:
        """Bytes of a log file after `offset`, waiting up to `hold_s` for some."""
        return await self.logs.follow(name, offset, inode, hold_s)


def _describe_exit(w: _Worker, code: int | None, stopping: str | None = None) -> str:
    who = f"the worker of {w.spec.class_name} actor {w.spec.actor_id} (pid {w.pid})"
    if stopping is not None:
        return f"{who} stopped (exit code {code}): its {stopping} is shutting down"
    if code is not None and code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        return f"{who} was killed by {name}"
    return f"{who} exited with code {code}"
