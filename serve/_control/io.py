"""The controller's one seam to the world: the head (nodes, KV, named actors) and the
replica and proxy actors it runs.

`ControllerIO` is what the controller, its recovery and its state machines use; nothing
in `serve._control` calls the runtime otherwise, so the whole controller runs against a
fake in unit tests. `ActorControllerIO` is the real one: replicas and proxies are named
actors (found again by a restarted controller), calls return ObjectRefs, kills go through
the head, and a starting replica's placement is the head's view of its actor. Its
`settings` (Serve's logging and tracing) go to every replica and proxy it starts.
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import actors
from actors.messages import ActorInfo, ActorState
from actors.system import Runtime, current_runtime, safe_log_name

from .._config import HTTPOptions
from .._data.http_proxy import HTTPProxyActor
from .._data.outcomes import ignore_outcome
from .._data.replica import ReplicaActor
from .._names import (
    CHECKPOINT_KEY,
    RECORDS_PREFIX,
    SERVE_NAMESPACE,
    STATUS_KEY,
    proxy_actor_name,
    proxy_node_of,
    proxy_serial,
    proxy_worker_of,
    replica_actor_name,
)
from ..messages import DeploymentTarget, ReplicaId, ServeSettings
from .proxy_state import NodeView, ProxyIO
from .replicas import Placement, ReplicaIO

__all__ = ["ActorControllerIO", "ControllerIO", "RunningProxy"]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class RunningProxy:
    """A proxy actor found alive (by a restarted controller), with the node its name names."""

    node_id: str
    handle: Any
    worker: int = 0  # which of its node's proxy workers (`http_options.num_workers`)


class ControllerIO(Protocol):
    """Everything the controller does outside itself."""

    @property
    def replicas(self) -> ReplicaIO: ...  # starts, calls and kills replicas (the deployment state machines' seam)

    @property
    def proxies(self) -> ProxyIO: ...  # the same for proxies

    settings: ServeSettings  # what every replica and proxy started is given

    async def nodes(self) -> list[NodeView]: ...

    # The head's KV store, where the checkpoint's records live (see `checkpoint`).
    async def kv_get(self, key: str) -> bytes | None: ...

    async def kv_put(self, key: str, blob: bytes) -> None: ...  # raises if the head refuses it (e.g. over its cap)

    async def kv_delete(self, key: str) -> None: ...

    async def kv_keys(self, prefix: str) -> list[str]: ...

    async def max_value_bytes(self) -> int: ...  # the head's cap on one KV value

    async def publish_summary(self, blob: bytes) -> None: ...

    async def drop_records(self, timeout_s: float) -> None: ...  # the checkpoint (every record) and the summary

    async def find_replica(self, replica_id: ReplicaId) -> Any | None: ...

    async def running_proxies(self) -> list[RunningProxy]: ...

    def on_actor_death(self, callback: Callable[[Any, str], None]) -> None: ...  # callback(actor_id, cause)


class _Actors:
    """Calls and kills of the actors the controller runs."""

    def __init__(self, rt: Runtime, detached: bool) -> None:
        self.rt = rt
        self.lifetime = "detached" if detached else None
        self.settings = ServeSettings()

    def call(self, handle: actors.ActorHandle, method: str, *args: Any) -> actors.ObjectRef:
        ref = getattr(handle, method).remote(*args)
        ref.future().add_done_callback(ignore_outcome)  # an actor dropped with a call pending: no noise
        return ref

    def kill(self, handle: actors.ActorHandle) -> asyncio.Task:
        return self.rt.background(self._kill(handle))

    async def _kill(self, handle: actors.ActorHandle) -> None:
        try:
            await self.rt.head.kill_actor(handle.actor_id, True)
        except Exception as e:
            log.warning("could not kill %s: %s", handle, e)


DEFAULT_MAX_VALUE_BYTES = 16 * 2**20  # the head's default cap on a KV value
PHASE_TIMEOUT_S = 2.0  # asking a starting replica what it is doing


class _ReplicaActors(_Actors):
    def __init__(self, rt: Runtime, detached: bool) -> None:
        super().__init__(rt, detached)
        self._node_ips: dict[str, str] = {}  # node id -> ip, for placements

    def start(self, target: DeploymentTarget, replica_id: ReplicaId) -> actors.ActorHandle:
        """A replica; a deployment's replicas go to different nodes first (`spread_group`);
        its log files are `replica_<app>_<deployment>_<tag>.out/.err`."""
        cls = actors.remote(
            name=replica_actor_name(replica_id), namespace=SERVE_NAMESPACE, lifetime=self.lifetime,
            max_concurrency=target.config.max_ongoing_requests + 16, **target.config.actor_options,
            spread_group=f"serve:{target.id}", log_name=replica_log_name(target.app, target.name, replica_id.tag),
        )(ReplicaActor)
        return cls.remote(target.name, replica_id.tag, target.app, target.code, target.config.user_config,
                          target.is_function, target.config.max_ongoing_requests,
                          target.config.logging_config or self.settings.logging_config, self.settings.tracing_config,
                          target.config.health_check_timeout_s)

    def placement(self, handle: actors.ActorHandle) -> _Asked:
        """Where the head has the replica's actor (None if it does not know it)."""
        return _Asked(self.rt.background(self._placement(handle)))

    async def _placement(self, handle: actors.ActorHandle) -> Placement | None:
        info = await self.rt.head.get_actor_info(handle.actor_id)
        if info is None:
            return None
        node = ""
        if info.node_id is not None:
            if info.node_id.hex not in self._node_ips:  # a node not seen yet: read the node table again
                self._node_ips.update({n.node_id.hex: n.ip for n in await self.rt.head.nodes()})
            node = self._node_ips.get(info.node_id.hex, info.node_id.hex)
        alive = info.state is ActorState.ALIVE
        phase = ""
        if alive:  # the replica's own start: its constructor, reconfigure, or its first health check
            try:
                phase = await asyncio.wait_for(handle.start_phase.remote(), PHASE_TIMEOUT_S)
            except Exception:  # busy or gone: the status just says less
                phase = ""
        return Placement(placed=info.node_id is not None, alive=alive, node=node, phase=phase)


class _Asked:
    """A background task as a `Pending` (what the state machines look at)."""

    def __init__(self, task: asyncio.Task) -> None:
        self._task = task
        task.add_done_callback(ignore_outcome)

    def done(self) -> bool:
        return self._task.done()

    def result(self, timeout: float | None = None) -> Any:
        return self._task.result()


class _ProxyActors(_Actors):
    def start(self, node: NodeView, http_options: HTTPOptions, worker: int = 0,
              reuse_port: bool = False) -> actors.ActorHandle:
        """A proxy pinned to its node; the controller restarts it (while its node lives).
        Its log files are `proxy_<node ip>.out/.err` (`proxy_<node ip>_<worker>` for a
        node's workers after the first); `reuse_port`: it shares its port with its node's
        other proxy workers."""
        cls = actors.remote(
            name=proxy_actor_name(node.node_id, proxy_serial(worker, secrets.token_hex(3))), namespace=SERVE_NAMESPACE,
            lifetime=self.lifetime, node_id=node.node_id, max_concurrency=100_000, max_restarts=0,
            log_name=safe_log_name("proxy", node.ip, *((str(worker),) if worker else ())),
        )(HTTPProxyActor)
        return cls.remote(http_options, self.settings.logging_config, self.settings.tracing_config, worker=worker,
                          reuse_port=reuse_port)


class ActorControllerIO:
    """The real IO: replicas and proxies are actors; records live in the head."""

    def __init__(self, detached: bool, rt: Runtime | None = None) -> None:
        runtime = rt or current_runtime()
        assert runtime is not None, "the controller runs in an actor"
        self.rt = runtime
        self.replicas = _ReplicaActors(runtime, detached)
        self.proxies = _ProxyActors(runtime, detached)

    @property
    def settings(self) -> ServeSettings:
        return self.replicas.settings

    @settings.setter
    def settings(self, value: ServeSettings) -> None:
        self.replicas.settings = self.proxies.settings = value

    async def nodes(self) -> list[NodeView]:
        infos = await self.rt.head.nodes()
        return [NodeView(n.node_id.hex, n.ip, n.alive, n.is_head, n.resources_total.get("CPU", 0.0)) for n in infos]

    async def kv_get(self, key: str) -> bytes | None:
        return await self.rt.head.kv_get(key)

    async def kv_put(self, key: str, blob: bytes) -> None:
        await self.rt.head.kv_put(key, blob)

    async def kv_delete(self, key: str) -> None:
        await self.rt.head.kv_delete(key)

    async def kv_keys(self, prefix: str) -> list[str]:
        return list(await self.rt.head.kv_keys(prefix))

    async def max_value_bytes(self) -> int:
        """The head's cap on a KV value (a head of an older version does not say: the
        default, or $ZEROSERVE_HEAD_MAX_BLOB_BYTES as this process sees it)."""
        cap = (await self.rt.head.info()).get("max_blob_bytes")
        if isinstance(cap, int) and cap > 0:
            return cap
        return int(float(os.environ.get("ZEROSERVE_HEAD_MAX_BLOB_BYTES") or DEFAULT_MAX_VALUE_BYTES))

    async def publish_summary(self, blob: bytes) -> None:
        await self.rt.head.kv_put(STATUS_KEY, blob)

    async def drop_records(self, timeout_s: float) -> None:
        keys = [CHECKPOINT_KEY, STATUS_KEY, *await self.rt.head.kv_keys(RECORDS_PREFIX, timeout=timeout_s)]
        for key in keys:
            await self.rt.head.kv_delete(key, timeout=timeout_s)

    def on_actor_death(self, callback: Callable[[Any, str], None]) -> None:
        """Hear of every actor death the head reports (the directory's watch), within about
        a second of it, instead of at the replica's next health check."""

        def seen(info: ActorInfo) -> None:
            if info.state is ActorState.DEAD:
                callback(info.actor_id, info.death_cause or "it died")

        self.rt.directory.observe(seen)
        self.rt.directory.ensure_watching()

    async def find_replica(self, replica_id: ReplicaId) -> actors.ActorHandle | None:
        info = await self.rt.head.get_named_actor(replica_actor_name(replica_id), SERVE_NAMESPACE)
        return None if info is None or info.state is ActorState.DEAD else _handle(info)

    async def running_proxies(self) -> list[RunningProxy]:
        found = []
        for info in await self.rt.head.list_actors():
            node_id = proxy_node_of(info.name or "")
            if info.namespace == SERVE_NAMESPACE and node_id is not None and info.state is not ActorState.DEAD:
                found.append(RunningProxy(node_id, _handle(info), proxy_worker_of(info.name or "")))
        return found


def replica_log_name(app: str, deployment: str, tag: str) -> str:
    """The log name of a replica: `replica_<app>_<deployment>_<tag>` (other characters as `-`)."""
    return safe_log_name("replica", app, deployment, tag)


def _handle(info: ActorInfo) -> actors.ActorHandle:
    return actors.ActorHandle(info.actor_id, info.class_name, info.methods, info.async_methods, info)
