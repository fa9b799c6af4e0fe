"""A worker process: hosts one actor on a uvloop loop until killed or orphaned.

Start-up: bind the runtime, ask the agent for an assignment (`agent/worker_ready`), set
`CUDA_VISIBLE_DEVICES` to the GPU devices it holds (if it asked for GPUs), build
the instance (a constructor error marks the actor DEAD with the traceback, no restart),
then tell the head it is ALIVE at this address. The worker exits when its agent dies
(lifeline EOF), when it is killed, or when the head answers that it does not count on
it (a restarted head that never knew the actor). Its process title names the actor
(`zeroserve::Class name (actor id)` in `ps`). On SIGTERM (its node stops gracefully) it
drains first: the work in flight finishes (`ActorHost.drain`) within
`$ZEROSERVE_GRACE_PERIOD_S` (set by the agent), then it exits 0.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
import traceback
from collections.abc import Awaitable
from typing import TypeVar

from . import _context, _endpoints, _log_ship
from ._host import ActorHost
from ._log_ship import LOG_FD_FLAG
from ._process import watch_parent
from ._runtime import Runtime
from ._serialization import loads_code
from ._session import read_token
from .messages import ActorSpec, Assignment

__all__ = ["main", "GRACE_ENV", "DEFAULT_GRACE_S"]

T = TypeVar("T")

log = logging.getLogger(__name__)
GRACE_ENV = "ZEROSERVE_GRACE_PERIOD_S"
DEFAULT_GRACE_S = 30.0


def _parse(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m actors worker")
    p.add_argument("--agent", required=True)
    p.add_argument("--node-ip", required=True)
    p.add_argument("--advertise", default=None, help="the address others reach this node at (default: --node-ip)")
    p.add_argument("--worker-id", required=True)
    p.add_argument("--token-file", required=True)
    p.add_argument("--parent-fd", type=int, required=True)
    p.add_argument("--ready-fd", type=int, default=-1)
    p.add_argument(LOG_FD_FLAG, type=int, default=-1, help="a pipe to its agent, which writes the log batches it ships")
    return p.parse_args(argv)


async def _serve(args: argparse.Namespace) -> int:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    watch_parent(loop, args.parent_fd, stop.set)
    if args.ready_fd >= 0:
        os.close(args.ready_fd)
    if args.log_fd >= 0:
        _log_ship.install(args.log_fd)
    rt = Runtime(token=read_token(args.token_file), node_ip=args.node_ip, head_address=None, role="worker",
                 advertise=args.advertise)
    _endpoints.install(rt)
    _context.set_current(rt)
    assignment: Assignment | None = await _unless_stopped(stop, rt.call_service(
        args.agent, "agent", "worker_ready", args.worker_id, rt.address, os.getpid(), timeout=None
    ))
    if assignment is None:  # the agent died before it told us what to host: nothing to do
        rt.close()
        return 0
    spec = assignment.spec
    rt.head_address = assignment.head_address
    rt.job_id = spec.job_id
    rt.namespace = spec.options.namespace
    rt.actor_id = spec.actor_id
    rt.node_id = assignment.node_id
    rt.gpu_ids = assignment.gpu_ids
    if spec.options.num_gpus > 0:
        # Before the actor's class is unpickled: what it imports (torch, onnxruntime)
        # sees only its own devices from the start.
        os.environ["CUDA_VISIBLE_DEVICES"] = ",".join(assignment.gpu_ids)
    _set_title(spec)
    for entry in spec.sys_path:
        if entry not in sys.path:
            sys.path.append(entry)
    try:
        cls, cargs, ckwargs = loads_code(spec.payload)
        instance = cls(*cargs, **ckwargs)
    except BaseException as e:
        text = "".join(traceback.format_exception(type(e), e, e.__traceback__))
        print(text, file=sys.stderr, flush=True)
        await rt.head.retrying().actor_failed(spec.actor_id, assignment.incarnation,
                                              f"the constructor of {spec.class_name} raised:\n{text}")
        rt.close()
        return 1
    host = ActorHost(instance, spec.options.max_concurrency, spec.async_methods)
    rt.register("a", host)
    loop.add_signal_handler(signal.SIGTERM, lambda: rt.background(_drain_then_stop(host, stop)))
    counted = await _unless_stopped(stop, rt.head.retrying().actor_started(
        spec.actor_id, assignment.incarnation, rt.address, os.getpid(), assignment.node_id))
    if counted is None:  # the agent died while the head was told: stop as below
        host.close()
        rt.close()
        return 0
    if not counted:
        # The head does not count on this worker (it restarted without knowing the actor,
        # or placed this incarnation again elsewhere): running on would be an orphan.
        print(f"the head does not know {spec.class_name} actor {spec.actor_id} (incarnation "
              f"{assignment.incarnation}) any more: exiting", file=sys.stderr, flush=True)
        host.close()
        rt.close()
        return 0
    await stop.wait()
    host.close()
    rt.close(linger_s=1.0 if host.drained else 0.0)
    return 0


async def _unless_stopped(stop: asyncio.Event, call: Awaitable[T]) -> T | None:
    """`call`'s result, or None if the lifeline closed first. A start-up call may never be
    answered once the agent is gone (a connection that never came up does not fail), and a
    worker waiting on it would outlive its node."""
    task = asyncio.ensure_future(call)
    stopped = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait({task, stopped}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        stopped.cancel()
    if task.done():
        return task.result()
    task.cancel()
    return None


def _set_title(spec: ActorSpec) -> None:
    """Name the actor in `ps` (the forked worker would show the fork server's command)."""
    try:
        from setproctitle import setproctitle
    except ImportError:  # pragma: no cover - a dependency; keep working without it
        return
    name = spec.options.name
    who = f"{spec.class_name} {name}" if name else spec.class_name
    setproctitle(f"zeroserve::{who} (actor {spec.actor_id})")


def _grace_s() -> float:
    try:
        return max(0.0, float(os.environ.get(GRACE_ENV, DEFAULT_GRACE_S)))
    except ValueError:
        return DEFAULT_GRACE_S


async def _drain_then_stop(host: ActorHost, stop: asyncio.Event) -> None:
    # A little under the agent's grace period, so the replies leave before its SIGKILL.
    grace = _grace_s()
    try:
        await host.drain(max(0.0, grace - min(1.0, grace / 10)))
    finally:
        stop.set()


def main(argv: list[str]) -> int:
    args = _parse(argv)
    try:
        import uvloop

        return uvloop.run(_serve(args))
    except KeyboardInterrupt:
        return 130
