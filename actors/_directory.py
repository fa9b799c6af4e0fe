"""The process's view of actors: where each answers, and calls waiting for it.

Kept fresh by one long poll on the head (`head/watch`) that returns every actor whose
record changed. Calls to an actor that is not ALIVE yet (pending, restarting, unknown
here) queue in submission order and are sent when it becomes ALIVE; when the incarnation
a call was sent to dies, the call fails with `ActorDiedError` (the runtime fails every
call pending on that address at once).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from .exceptions import ActorDiedError, ClusterUnavailableError
from .messages import ActorId, ActorInfo, ActorState, WatchReply

__all__ = ["ActorDirectory"]

log = logging.getLogger(__name__)
_WATCH_HOLD_S = 20.0
_SUSPECT_RECHECK_S = 2.0


class ActorDirectory:
    def __init__(self, rt: Any) -> None:
        self._rt = rt
        self._infos: dict[ActorId, ActorInfo] = {}
        self._queued: dict[ActorId, list[tuple[bytes, Any, Any, asyncio.Future]]] = {}
        self._version = 0
        self._epoch: str | None = None
        self._watch_task: asyncio.Task | None = None
        self._resolving: set[ActorId] = set()
        self._suspect: set[ActorId] = set()  # connection lost; waiting for the head's verdict

    # -- calls -------------------------------------------------------------------------
    def submit(self, actor_id: ActorId, hint: ActorInfo | None, route: bytes, payload: Any, buffers: Any,
               fut: asyncio.Future) -> None:
        """Send a call to the actor now if it is ALIVE, else queue it. Loop thread only."""
        info = self._infos.get(actor_id)
        if info is None and hint is not None:
            self.update(hint)
            info = self._infos.get(actor_id)
        if info is not None and info.state is ActorState.ALIVE and actor_id not in self._queued \
                and actor_id not in self._suspect:
            self._rt.send_request(info.address, route, payload, buffers, fut)
            return
        if info is not None and info.state is ActorState.DEAD:
            fut.set_exception(_died(info))
            return
        self._queued.setdefault(actor_id, []).append((route, payload, buffers, fut))
        self.ensure_watching()
        if info is None:
            self._resolve(actor_id)

    def is_actor_address(self, address: str) -> bool:
        return any(i.address == address for i in self._infos.values())

    def peer_lost(self, address: str) -> None:
        """The connection to `address` dropped. Its actor is probably dead, but only the
        head knows: later calls wait for its record (which carries the real cause, or a
        restart) instead of racing it; a re-check after SUSPECT_RECHECK_S covers a
        connection that dropped while the actor lives."""
        for info in self._infos.values():
            if info.address == address and info.state is ActorState.ALIVE:
                self._suspect.add(info.actor_id)
                self.ensure_watching()
                self._rt.loop.call_later(_SUSPECT_RECHECK_S, self._recheck, info.actor_id)

    def _recheck(self, actor_id: ActorId) -> None:
        if actor_id in self._suspect:
            self._resolve(actor_id)

    def info(self, actor_id: ActorId) -> ActorInfo | None:
        return self._infos.get(actor_id)

    # -- updates -----------------------------------------------------------------------
    def update(self, info: ActorInfo) -> None:
        old = self._infos.get(info.actor_id)
        if old is not None and info.version < old.version:
            return
        self._infos[info.actor_id] = info
        self._suspect.discard(info.actor_id)  # the head has spoken
        if old is not None and old.address and old.state is ActorState.ALIVE and (
            info.state is not ActorState.ALIVE or info.address != old.address
        ):
            cause = _died(info, old)
            self._rt.fail_peer(old.address, lambda: ActorDiedError(str(cause)))
        if info.state is ActorState.ALIVE:
            for route, payload, buffers, fut in self._queued.pop(info.actor_id, ()):
                if not fut.done():
                    self._rt.send_request(info.address, route, payload, buffers, fut)
        elif info.state is ActorState.DEAD:
            for *_, fut in self._queued.pop(info.actor_id, ()):
                if not fut.done():
                    fut.set_exception(_died(info))

    def fail_queued(self, actor_id: ActorId, exc: BaseException) -> None:
        for *_, fut in self._queued.pop(actor_id, ()):
            if not fut.done():
                fut.set_exception(exc)

    def _resolve(self, actor_id: ActorId) -> None:
        if actor_id in self._resolving:
            return
        self._resolving.add(actor_id)

        async def ask() -> None:
            try:
                info = await self._rt.call_head("get_actor_info", actor_id)
            except Exception as e:
                self.fail_queued(actor_id, ClusterUnavailableError(f"cannot look up actor {actor_id}: {e}"))
                return
            finally:
                self._resolving.discard(actor_id)
            if info is None:
                self.fail_queued(actor_id, ActorDiedError(f"actor {actor_id} is unknown to the cluster"))
            else:
                self.update(info)

        self._rt.background(ask())

    # -- the long poll -----------------------------------------------------------------
    def ensure_watching(self) -> None:
        if self._watch_task is None or self._watch_task.done():
            self._watch_task = self._rt.background(self._watch())

    async def _watch(self) -> None:
        backoff = 0.05
        while True:
            try:
                reply: WatchReply = await self._rt.call_head(
                    "watch", self._version, self._epoch, _WATCH_HOLD_S, timeout=_WATCH_HOLD_S + 10
                )
            except asyncio.CancelledError:
                raise
            except Exception as e:
                log.debug("watch on the head failed (%s); retrying", e)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 2.0)
                continue
            backoff = 0.05
            if reply.head_epoch != self._epoch:
                self._epoch = reply.head_epoch
            self._version = reply.version
            for info in reply.actors:
                self.update(info)

    def close(self) -> None:
        if self._watch_task is not None:
            self._watch_task.cancel()
        for actor_id in list(self._queued):
            self.fail_queued(actor_id, ActorDiedError("the runtime of this process is shut down"))


def _died(info: ActorInfo, old: ActorInfo | None = None) -> ActorDiedError:
    who = f"{info.class_name} actor {info.actor_id}"
    if info.state is ActorState.RESTARTING:
        return ActorDiedError(f"{who} died (incarnation {old.incarnation if old else '?'}) and is restarting: "
                              f"{info.death_cause or 'worker process exited'}")
    return ActorDiedError(f"{who} is dead: {info.death_cause or 'worker process exited'}")
