"""The head's core: its state (tables, journal, the actor table's long-poll versions), its
persistence, and its I/O seam.

`HeadCore` holds what every part of the head reads and changes; the parts are layered on it
as subclasses, one concern each: `_head_placement.Placement` (waiting actors placed on
nodes, actors leaving them), `_head_nodes.NodeMembership` (nodes joining, heartbeating,
draining, lost), and `_head.Head` (jobs, actor RPCs, KV: the service itself).

All network I/O goes through the `HeadIO` seam (start/kill workers on agents), so the whole
service runs against a fake in unit tests. `@durable` marks an RPC whose change is in the
store before its reply leaves.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import logging
import secrets
import time
from collections.abc import Callable
from typing import Any, Protocol, TypeVar

from actors.messages import ActorId, ActorSpec, JobId, NodeId
from actors.system import LongPollHost

from ._actor_table import ActorTable
from ._head_state import HeadLimits, Journal
from ._head_store import HeadStore
from ._pending import PendingQueue
from ._records import JobEntry, NodeEntry

__all__ = ["ACTORS_KEY", "HeadCore", "HeadIO", "durable"]

log = logging.getLogger("cluster._head")  # the head's one logger, whichever part logs
ACTORS_KEY = "actors"  # the key of the actor table's version in `Head.actor_versions`
F = TypeVar("F", bound=Callable[..., Any])


def durable(fn: F) -> F:
    """The change the call made is in the store before its reply leaves."""
    if inspect.iscoroutinefunction(fn):
        @functools.wraps(fn)
        async def run_async(self: HeadCore, *args: Any, **kwargs: Any) -> Any:
            try:
                return await fn(self, *args, **kwargs)
            finally:
                self.commit()

        return run_async  # type: ignore[return-value]

    @functools.wraps(fn)
    def run(self: HeadCore, *args: Any, **kwargs: Any) -> Any:
        try:
            return fn(self, *args, **kwargs)
        finally:
            self.commit()

    return run  # type: ignore[return-value]


class HeadIO(Protocol):
    async def start_actor(self, agent_address: str, spec: ActorSpec, incarnation: int, node_id: NodeId,
                          gpu_ids: tuple[str, ...] = ()) -> None: ...

    async def kill_worker(self, agent_address: str, actor_id: ActorId, incarnation: int) -> None: ...


class HeadCore:
    """The head's state and its persistence (see the module docstring)."""

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

    # -- persistence -----------------------------------------------------------------
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
