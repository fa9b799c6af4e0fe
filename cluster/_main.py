"""Process entry points: `python -m cluster head ...` and `python -m cluster agent ...`.

Each runs one uvloop loop hosting one service (`head` or `agent`) on the runtime, and
reports readiness on `--ready-fd` with one JSON line. An agent stops gracefully on
SIGTERM/SIGINT (its workers drain within `--grace-period-s`, see `Agent.drain`), and at
once when its lifeline to the parent closes (the parent is gone). A head saves its state
and exits on either.

Their log records (time, level, logger, pid) go to `--log-file`, rotated by size, or to
stdout; with `--foreground` (`zeroserve start --block`) to stdout as well. The agent
serves the node's metrics on `--metrics-port` (0: none; taken: a free port unless
`--metrics-port-strict`).

Sockets bind `--node-ip`; others reach them at `--advertise-address` when given (an IP or
a DNS name: a pod binds 0.0.0.0 and is reached at its pod IP). The head keeps its state in
`--state-dir` (`head-state.db`, SQLite), which one head at a time may use (an advisory
lock on `head.lock` there).
"""

from __future__ import annotations

import argparse
import asyncio
import fcntl
import json
import logging
import os
import signal
import sys
from pathlib import Path

import psutil

from actors.messages import ActorId, ActorSpec, NodeId
from actors.system import (
    HEAD_NODE_RESOURCE,
    LogRotation,
    Runtime,
    ServiceTarget,
    configure_process_logging,
    install_endpoints,
    read_token,
    render,
    signal_ready,
    watch_parent,
)

from . import _head_metrics
from ._accelerators import node_gpus
from ._agent import Agent
from ._dashboard import Dashboard, HeadSource
from ._head import TICK_S, Head
from ._head_state import restore
from ._head_store import HeadStore
from ._node_metrics import DEFAULT_METRICS_PORT, MetricsServer, collect_node, metrics_timeout_s
from ._supervisor import HeadSupervisor

__all__ = ["main", "STATE_FILE_NAME", "DEFAULT_GRACE_S"]

log = logging.getLogger("cluster")
STATE_FILE_NAME = "head-state.db"  # the head's state (SQLite), under --state-dir
DEFAULT_GRACE_S = 30.0


class RuntimeHeadIO:
    """The head's seam to the agents, over the runtime."""

    def __init__(self, rt: Runtime) -> None:
        self.rt = rt

    async def start_actor(self, agent_address: str, spec: ActorSpec, incarnation: int, node_id: NodeId,
                          gpu_ids: tuple[str, ...] = ()) -> None:
        await self.rt.call_service(agent_address, "agent", "start_actor", spec, incarnation, node_id, gpu_ids,
                                   timeout=30.0)

    async def kill_worker(self, agent_address: str, actor_id: ActorId, incarnation: int) -> None:
        await self.rt.call_service(agent_address, "agent", "kill_worker", actor_id, incarnation, timeout=10.0)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m cluster")
    sub = p.add_subparsers(dest="role", required=True)
    for role in ("head", "agent"):
        s = sub.add_parser(role)
        s.add_argument("--node-ip", default="127.0.0.1")
        s.add_argument("--session-dir", required=True)
        s.add_argument("--token-file", required=True)
        s.add_argument("--parent-fd", type=int, default=-1)
        s.add_argument("--ready-fd", type=int, default=-1)
        s.add_argument("--advertise-address", default=None,
                       help="the address (IP or DNS name) others reach this node at (default: --node-ip)")
        s.add_argument("--log-file", help="write log records here, rotated by size (default: stdout)")
        s.add_argument("--foreground", action="store_true",
                       help="log records to stdout too (with --log-file); an agent with --run-head runs its "
                            "head the same way, writing to this process's stdout")
    head = sub.choices["head"]
    head.add_argument("--port", type=int, default=0)
    state = head.add_mutually_exclusive_group()
    state.add_argument("--state-dir", help="keep the head's state in this directory; restore it at start")
    state.add_argument("--state-file", help="persist the head's state in this SQLite file; restore it at start")
    for role in ("head", "agent"):  # the agent passes them on to the head it runs (--run-head)
        sub.choices[role].add_argument("--dashboard-port", type=int, default=0,
                                       help="serve the dashboard on this port (0: none; taken: a free one)")
        sub.choices[role].add_argument("--dashboard-port-strict", action="store_true",
                                       help="fail if --dashboard-port is taken")
    agent = sub.choices["agent"]
    where = agent.add_mutually_exclusive_group(required=True)
    where.add_argument("--head", help="head address tcp://H:P, or - to read it from stdin")
    where.add_argument("--run-head", action="store_true", help="run (and restart) the head as a child")
    agent.add_argument("--head-port", type=int, default=0, help="with --run-head: the head's port")
    agent.add_argument("--num-cpus", type=float, default=None)
    agent.add_argument("--num-gpus", type=int, default=None, help="GPU devices 0..N-1 (default: detected)")
    agent.add_argument("--resources", default="{}")
    agent.add_argument("--is-head-node", action="store_true")
    agent.add_argument("--metrics-port", type=int, default=DEFAULT_METRICS_PORT,
                       help="serve the node's metrics on this port (0: none; taken: a free one)")
    agent.add_argument("--metrics-port-strict", action="store_true", help="fail if --metrics-port is taken")
    agent.add_argument("--state-dir", default=None, help="with --run-head: where the head keeps its state "
                                                          "(default: the session directory)")
    agent.add_argument("--grace-period-s", type=float, default=DEFAULT_GRACE_S,
                       help="on SIGTERM, how long workers may take to finish their work (default 30)")
    return p


class _Stop:
    """Why this process stops: `graceful` after SIGTERM/SIGINT, not when the parent died.
    `parent_gone` is set when the lifeline closes, even during a graceful stop (a drain
    then ends at once: whoever waited for it is gone, or is stopping us for good)."""

    def __init__(self, args: argparse.Namespace) -> None:
        loop = asyncio.get_running_loop()
        self.event = asyncio.Event()
        self.parent_gone = asyncio.Event()
        self.graceful = False
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._signalled)
        if args.parent_fd >= 0:
            watch_parent(loop, args.parent_fd, self._orphaned)

    def _orphaned(self) -> None:
        self.parent_gone.set()
        self.event.set()

    def _signalled(self) -> None:
        if not self.event.is_set():
            self.graceful = True
        self.event.set()

    async def wait(self) -> None:
        await self.event.wait()


def _lock_state_dir(path: Path) -> int:
    """Hold `head.lock` in the state directory for this process's life: two heads writing
    one state would corrupt it. Raises SystemExit naming the directory if it is taken."""
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd = os.open(path / "head.lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise SystemExit(f"another head keeps its state in {path} (it holds {path / 'head.lock'})") from None
    return fd


async def _run_head(args: argparse.Namespace) -> int:
    stop = _Stop(args)
    state_path = args.state_file
    if args.state_dir:
        _lock_state_dir(Path(args.state_dir))
        state_path = str(Path(args.state_dir) / STATE_FILE_NAME)
    rt = Runtime(token=read_token(args.token_file), node_ip=args.node_ip, head_address=None, role="head",
                 port=args.port, advertise=args.advertise_address)
    rt.head_address = rt.address
    store = HeadStore(state_path) if state_path else None
    head = Head(RuntimeHeadIO(rt), rt.address, store)
    if store is not None and restore(head, store):
        log.info("head restored from %s (new epoch %s)", state_path, head.epoch)
    rt.register("head", ServiceTarget(head))
    install_endpoints(rt)
    _head_metrics.install(head)

    async def tick_forever() -> None:
        while True:
            await asyncio.sleep(TICK_S)
            await head.tick()

    checker = asyncio.get_running_loop().create_task(tick_forever())
    dashboard = await _serve_dashboard(args, rt, head)
    log.info("head listening at %s", rt.address)
    signal_ready(args.ready_fd, {"address": rt.address, "pid": os.getpid(), "dashboard_url": head.dashboard_url})
    await stop.wait()
    checker.cancel()
    if dashboard is not None:
        dashboard.close()
    if store is not None:
        head.commit()
        store.close()
    rt.close()
    return 0


async def _serve_dashboard(args: argparse.Namespace, rt: Runtime, head: Head) -> Dashboard | None:
    if args.dashboard_port == 0:
        return None
    dashboard = Dashboard(HeadSource(rt, head), args.node_ip, read_token(args.token_file))
    try:
        head.dashboard_url = await dashboard.start(args.dashboard_port, fallback=not args.dashboard_port_strict)
    except OSError as e:
        raise SystemExit(f"cannot serve the dashboard on {args.node_ip}:{args.dashboard_port}: {e.strerror}; "
                         "pick another --dashboard-port (0: none)") from None
    return dashboard


def _resources(args: argparse.Namespace) -> tuple[dict[str, float], tuple[str, ...]]:
    """The node's resources and its GPU devices (`--resources '{"GPU": n}'` is read as
    `--num-gpus n`: GPUs are devices)."""
    try:
        custom = json.loads(args.resources or "{}")
    except ValueError as e:
        raise SystemExit(f"--resources must be a JSON object such as '{{\"GPU\": 1}}': {e}") from None
    if not isinstance(custom, dict) or not all(isinstance(v, (int, float)) for v in custom.values()):
        raise SystemExit("--resources must be a JSON object of name -> number")
    cpus = args.num_cpus if args.num_cpus is not None else float(psutil.cpu_count() or 1)
    num_gpus = args.num_gpus
    if "GPU" in custom:
        if num_gpus is not None:
            raise SystemExit("give GPUs once: --num-gpus, or --resources '{\"GPU\": n}', not both")
        num_gpus = int(custom.pop("GPU"))
    try:
        gpus = node_gpus(num_gpus)
    except ValueError as e:
        raise SystemExit(str(e)) from None
    resources = {"CPU": float(cpus), "memory": float(psutil.virtual_memory().total), **gpus.resources(),
                 **{k: float(v) for k, v in custom.items()}}
    if args.is_head_node:
        resources[HEAD_NODE_RESOURCE] = 1.0
    return resources, gpus.ids


async def _run_agent(args: argparse.Namespace, head_address: str | None) -> int:
    stop = _Stop(args)
    supervisor = None
    if head_address is None:
        supervisor = HeadSupervisor(node_ip=args.node_ip, port=args.head_port, session_dir=args.session_dir,
                                    token_file=args.token_file, state_dir=args.state_dir,
                                    advertise=args.advertise_address, foreground=args.foreground,
                                    log_file=None if args.log_file is None else _head_log_file(args.log_file),
                                    dashboard_port=args.dashboard_port, dashboard_strict=args.dashboard_port_strict)
        head_address = await supervisor.start()
    rt = Runtime(token=read_token(args.token_file), node_ip=args.node_ip, head_address=head_address, role="agent",
                 advertise=args.advertise_address)
    install_endpoints(rt)
    resources, gpu_ids = _resources(args)
    agent = Agent(rt, head_address=head_address, node_ip=args.node_ip, resources=resources, gpu_ids=gpu_ids,
                  session_dir=args.session_dir, token_file=args.token_file, is_head=args.is_head_node,
                  advertise=args.advertise_address, grace_period_s=args.grace_period_s,
                  rotation=LogRotation.from_env())
    if args.log_file is None:  # in the foreground without --log-files: it (and its head) log to stdout only
        agent.stdout_only = ("head", "agent") if supervisor is not None else ("agent",)
    rt.register("agent", ServiceTarget(agent))
    metrics = await _serve_metrics(args, rt, agent)
    agent.prepare()
    await agent.register()
    loop = asyncio.get_running_loop()
    beats = loop.create_task(agent.heartbeat_forever())
    watcher = loop.create_task(supervisor.supervise()) if supervisor is not None else None
    signal_ready(args.ready_fd, {"node_id": agent.node_id.hex, "address": rt.address, "resources": agent.resources,
                                 "head_address": head_address, "head_pid": supervisor.pid if supervisor else None,
                                 "dashboard_url": supervisor.dashboard_url if supervisor else None,
                                 "metrics_url": agent.metrics_url})
    await stop.wait()
    if stop.graceful:
        log.info("stopping: the workers of this node have %.0fs to finish their work", args.grace_period_s)
        drain = asyncio.ensure_future(agent.drain(args.grace_period_s))
        gone = asyncio.ensure_future(stop.parent_gone.wait())
        await asyncio.wait((drain, gone), return_when=asyncio.FIRST_COMPLETED)
        for task in (drain, gone):
            task.cancel()
        if stop.parent_gone.is_set():
            log.info("the parent of this agent is gone: the drain ends here")
    beats.cancel()
    if metrics is not None:
        metrics.close()
    agent.shutdown()
    try:
        await rt.head.node_leaving(agent.node_id, timeout=1.0)
    except Exception:
        pass
    if watcher is not None:
        watcher.cancel()
    if supervisor is not None:
        supervisor.stop()
    rt.close()
    return 0


async def _serve_metrics(args: argparse.Namespace, rt: Runtime, agent: Agent) -> MetricsServer | None:
    """The node's metrics endpoint (before the node registers: its URL is in the registration)."""
    if args.metrics_port == 0:
        return None
    timeout_s = metrics_timeout_s()

    async def scrape() -> bytes:
        return render(await collect_node(rt, agent.metrics_processes(), timeout_s))

    server = MetricsServer(args.node_ip, scrape, advertise=args.advertise_address)
    try:
        agent.metrics_url = await server.start(args.metrics_port, fallback=not args.metrics_port_strict)
    except OSError as e:
        raise SystemExit(f"cannot serve the node's metrics on {args.node_ip}:{args.metrics_port}: {e.strerror}; "
                         "pick another --metrics-port (0: none)") from None
    return server


def _head_log_file(agent_log: str) -> str:
    """The head's log file beside the agent's (`agent-IP.log` -> `head.log`)."""
    return str(Path(agent_log).with_name("head.log"))


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        configure_process_logging(args.log_file, also_stdout=args.foreground)
    except ValueError as e:  # a malformed $ZEROSERVE_LOG_MAX_BYTES / _BACKUPS
        raise SystemExit(f"zeroserve {args.role}: {e}") from None
    import uvloop

    if args.role == "head":
        return uvloop.run(_run_head(args))
    head = args.head
    if args.run_head:
        return uvloop.run(_run_agent(args, None))
    if head == "-":
        head = sys.stdin.readline().strip()
        if not head:
            return 1  # the parent gave up before the head was ready
    return uvloop.run(_run_agent(args, head))
