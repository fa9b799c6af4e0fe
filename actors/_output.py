"""Following the output of actors this process did not create (a `serve.run` driver
following the replicas the controller starts).

An actor's stdout and stderr are read by its node's agent, which echoes every line to the
actor's owner. `follow_output(namespace, name_prefix)` asks for the lines of other actors
too: this process's `OutputFollower` watches the actor table (the runtime's directory
long poll) and, for every incarnation of a matching named actor that comes ALIVE,
subscribes at the agent of its node (`agent/follow_output`). The agent first sends the
actor's recent lines (so a constructor's output is not missed), then every new one, to
this process's `rt/log` endpoint, which prints them with the actor's prefix when the
driver echoes output (`actors.init(log_to_driver=True)`, the default).

Subscriptions end with the actor's process; `close()` (at the driver's shutdown) also
tells the agents to stop sending.
"""

from __future__ import annotations

import logging

from ._context import current_or_init
from ._runtime import Runtime
from .messages import ActorId, ActorInfo, ActorState, NodeId

__all__ = ["OutputFollower", "follow_output"]

log = logging.getLogger(__name__)
_AGENT_TIMEOUT_S = 5.0


class OutputFollower:
    """This runtime's subscriptions to other actors' output (loop thread only)."""

    def __init__(self, rt: Runtime) -> None:
        self._rt = rt
        self._filters: set[tuple[str, str]] = set()
        self._followed: dict[ActorId, int] = {}  # the incarnation subscribed to
        self._agents: dict[NodeId, str] = {}
        self._used_agents: set[str] = set()
        self._observing = False

    def add(self, namespace: str, name_prefix: str) -> None:
        """Follow the named actors of `namespace` whose name starts with `name_prefix`."""
        if (namespace, name_prefix) in self._filters:
            return
        self._filters.add((namespace, name_prefix))
        if not self._observing:
            self._observing = True
            self._rt.directory.observe(self._seen)
        self._rt.directory.ensure_watching()
        self._rt.background(self._catch_up())

    def matches(self, info: ActorInfo) -> bool:
        return info.name is not None and any(
            info.namespace == ns and info.name.startswith(prefix) for ns, prefix in self._filters)

    async def _catch_up(self) -> None:
        """Actors already alive when the filter was added (the watch only says what changes)."""
        try:
            infos = await self._rt.head.list_actors()
        except Exception as e:
            log.warning("could not list the actors to follow their output: %s", e)
            return
        for info in infos:
            self._seen(info)

    def _seen(self, info: ActorInfo) -> None:
        if info.state is not ActorState.ALIVE or info.node_id is None or not self.matches(info):
            return
        if self._followed.get(info.actor_id) == info.incarnation:
            return
        self._followed[info.actor_id] = info.incarnation
        self._rt.background(self._subscribe(info))

    async def _subscribe(self, info: ActorInfo) -> None:
        assert info.node_id is not None
        try:
            agent = await self._agent_of(info.node_id)
            if agent is None:
                return
            self._used_agents.add(agent)
            await self._rt.call_service(agent, "agent", "follow_output", info.actor_id, info.incarnation,
                                        self._rt.address, timeout=_AGENT_TIMEOUT_S)
        except Exception as e:  # its node may be gone: its output with it
            log.debug("could not follow the output of %s: %s", info.actor_id, e)

    async def _agent_of(self, node_id: NodeId) -> str | None:
        agent = self._agents.get(node_id)
        if agent is None:
            for n in await self._rt.head.nodes():
                self._agents[n.node_id] = n.agent_address
            agent = self._agents.get(node_id)
        return agent

    async def close(self) -> None:
        """Tell the agents to stop sending (best effort: this process is going away)."""
        for agent in self._used_agents:
            try:
                await self._rt.call_service(agent, "agent", "unfollow_output", self._rt.address, timeout=1.0)
            except Exception:
                pass
        self._used_agents.clear()


def follow_output(namespace: str, name_prefix: str = "", rt: Runtime | None = None) -> None:
    """Echo to this process the output of the named actors of `namespace` whose names
    start with `name_prefix` (now and later), as it echoes its own actors' output."""
    runtime = rt if rt is not None else current_or_init()
    follower = runtime.attachment(OutputFollower, lambda: OutputFollower(runtime))
    if runtime.in_loop_thread():
        follower.add(namespace, name_prefix)
        return

    async def add() -> None:
        follower.add(namespace, name_prefix)

    runtime.run_threadsafe(add, timeout=10.0)
