"""The typed client of the head service: one async method per head RPC.

`Runtime.head` is one of these. Each method has the head method's name and parameters
(`tests/unit/test_head_client.py` checks them against `cluster._head.Head`, so the two
cannot drift) and a keyword-only `timeout`:
- omitted: `$ZEROSERVE_HEAD_TIMEOUT_S` (10 s), read at each call;
- a number: that many seconds; None: wait as long as it takes.
A head that does not answer in time raises `ClusterUnavailableError` (and its connection
is reset, so the next call reconnects).

`head.retrying(attempts)` is the same client for calls that must get through a head
restart: each attempt waits 5 s (or `timeout`), then the call is retried after a
growing pause (0.1 s doubling to 2 s), `attempts` times in all.
"""

from __future__ import annotations

import asyncio
import enum
import os
from collections.abc import Awaitable, Callable
from typing import Any, Final, Literal

from ._futures import cancelling
from .exceptions import ClusterUnavailableError
from .messages import (
    ActorId,
    ActorInfo,
    ActorSpec,
    JobId,
    NodeId,
    NodeInfo,
    NodeRegistration,
    WatchReply,
    WorkerExit,
)

__all__ = ["HeadClient", "HeadCall", "Timeout", "ENV_TIMEOUT", "head_timeout_s"]


class _Default(enum.Enum):
    ENV = "ZEROSERVE_HEAD_TIMEOUT_S"


ENV_TIMEOUT: Final = _Default.ENV
Timeout = float | None | Literal[_Default.ENV]
# (method, args, timeout in seconds or None) -> the head's answer
HeadCall = Callable[[str, tuple[Any, ...], "float | None"], Awaitable[Any]]
_RETRY_ATTEMPT_S = 5.0


def head_timeout_s() -> float:
    """The default time-out of a head call: `$ZEROSERVE_HEAD_TIMEOUT_S`, else 10 s."""
    return float(os.environ.get("ZEROSERVE_HEAD_TIMEOUT_S", "10"))


class HeadClient:
    def __init__(self, call: HeadCall, *, attempts: int = 1) -> None:
        if attempts < 1:
            raise ValueError(f"attempts must be >= 1, got {attempts}")
        self._send = call
        self._attempts = attempts

    def retrying(self, attempts: int = 60) -> HeadClient:
        """This client, with calls retried through a head that is down or restarting."""
        return HeadClient(self._send, attempts=attempts)

    async def call(self, method: str, args: tuple[Any, ...] = (), timeout: Timeout = ENV_TIMEOUT) -> Any:
        """Call a head RPC by name (the typed methods below are the way; this is their core)."""
        if self._attempts == 1:
            return await self._send(method, args, head_timeout_s() if timeout is ENV_TIMEOUT else timeout)
        per_attempt = _RETRY_ATTEMPT_S if timeout is ENV_TIMEOUT else timeout
        for attempt in range(self._attempts):
            try:
                return await self._send(method, args, per_attempt)
            except ClusterUnavailableError:
                if attempt == self._attempts - 1 or cancelling():
                    raise
                await asyncio.sleep(min(0.1 * 2**attempt, 2.0))
        raise AssertionError("unreachable")

    # -- the head itself -----------------------------------------------------------------
    async def info(self, *, timeout: Timeout = ENV_TIMEOUT) -> dict[str, Any]:
        """The head's address, pid, epoch and actor count."""
        return await self.call("info", (), timeout)

    # -- nodes ---------------------------------------------------------------------------
    async def register_node(self, reg: NodeRegistration, *, timeout: Timeout = ENV_TIMEOUT) -> dict[str, Any]:
        """An agent joins (or re-joins): {"node_id", "epoch", "stale": workers to kill}."""
        return await self.call("register_node", (reg,), timeout)

    async def node_heartbeat(self, node_id: NodeId, *, timeout: Timeout = ENV_TIMEOUT) -> bool:
        """False: the head does not know the node (it restarted); register again."""
        return await self.call("node_heartbeat", (node_id,), timeout)

    async def node_leaving(self, node_id: NodeId, *, timeout: Timeout = ENV_TIMEOUT) -> None:
        await self.call("node_leaving", (node_id,), timeout)

    async def node_draining(self, node_id: NodeId, *, timeout: Timeout = ENV_TIMEOUT) -> None:
        """The node is stopping gracefully: place nothing more on it."""
        await self.call("node_draining", (node_id,), timeout)

    async def nodes(self, *, timeout: Timeout = ENV_TIMEOUT) -> list[NodeInfo]:
        return await self.call("nodes", (), timeout)

    async def cluster_resources(self, *, timeout: Timeout = ENV_TIMEOUT) -> dict[str, float]:
        return await self.call("cluster_resources", (), timeout)

    async def available_resources(self, *, timeout: Timeout = ENV_TIMEOUT) -> dict[str, float]:
        return await self.call("available_resources", (), timeout)

    # -- jobs ----------------------------------------------------------------------------
    async def register_job(self, address: str, namespace: str | None, pid: int, *,
                           timeout: Timeout = ENV_TIMEOUT) -> dict[str, str]:
        """A driver connects: {"job_id": hex, "namespace": its namespace}."""
        return await self.call("register_job", (address, namespace, pid), timeout)

    async def job_heartbeat(self, job_id: JobId, *, timeout: Timeout = ENV_TIMEOUT) -> bool:
        return await self.call("job_heartbeat", (job_id,), timeout)

    async def job_finished(self, job_id: JobId, *, timeout: Timeout = ENV_TIMEOUT) -> int:
        """The driver is done; returns how many of its actors were killed."""
        return await self.call("job_finished", (job_id,), timeout)

    # -- actors --------------------------------------------------------------------------
    async def create_actor(self, spec: ActorSpec, *, timeout: Timeout = ENV_TIMEOUT) -> ActorInfo:
        return await self.call("create_actor", (spec,), timeout)

    async def actor_started(self, actor_id: ActorId, incarnation: int, address: str, pid: int, node_id: NodeId, *,
                            timeout: Timeout = ENV_TIMEOUT) -> bool:
        return await self.call("actor_started", (actor_id, incarnation, address, pid, node_id), timeout)

    async def actor_failed(self, actor_id: ActorId, incarnation: int, cause: str, *,
                           timeout: Timeout = ENV_TIMEOUT) -> None:
        await self.call("actor_failed", (actor_id, incarnation, cause), timeout)

    async def worker_exited(self, exit: WorkerExit, *, timeout: Timeout = ENV_TIMEOUT) -> None:
        await self.call("worker_exited", (exit,), timeout)

    async def kill_actor(self, actor_id: ActorId, no_restart: bool = True, cause: str = "killed by actors.kill", *,
                         timeout: Timeout = ENV_TIMEOUT) -> bool:
        """False if the actor is unknown or already dead."""
        return await self.call("kill_actor", (actor_id, no_restart, cause), timeout)

    async def get_actor_info(self, actor_id: ActorId, *, timeout: Timeout = ENV_TIMEOUT) -> ActorInfo | None:
        return await self.call("get_actor_info", (actor_id,), timeout)

    async def get_named_actor(self, name: str, namespace: str | None, *,
                              timeout: Timeout = ENV_TIMEOUT) -> ActorInfo | None:
        return await self.call("get_named_actor", (name, namespace), timeout)

    async def list_actors(self, *, timeout: Timeout = ENV_TIMEOUT) -> list[ActorInfo]:
        return await self.call("list_actors", (), timeout)

    async def watch(self, version: int, epoch: str | None, hold_s: float, *,
                    timeout: Timeout = ENV_TIMEOUT) -> WatchReply:
        """Long poll: actors changed since `version` (all of them after a head restart)."""
        return await self.call("watch", (version, epoch, hold_s), timeout)

    # -- key-value store -------------------------------------------------------------------
    async def kv_put(self, key: str, value: bytes, overwrite: bool = True, *,
                     timeout: Timeout = ENV_TIMEOUT) -> bool:
        """False if the key exists and `overwrite` is False. Durable once acknowledged."""
        return await self.call("kv_put", (key, value, overwrite), timeout)

    async def kv_get(self, key: str, *, timeout: Timeout = ENV_TIMEOUT) -> bytes | None:
        return await self.call("kv_get", (key,), timeout)

    async def kv_delete(self, key: str, *, timeout: Timeout = ENV_TIMEOUT) -> bool:
        return await self.call("kv_delete", (key,), timeout)

    async def kv_keys(self, prefix: str = "", *, timeout: Timeout = ENV_TIMEOUT) -> list[str]:
        return await self.call("kv_keys", (prefix,), timeout)
