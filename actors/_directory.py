"""The process's view of actors: where each answers, and calls waiting for it.

Kept fresh by one long poll on the head (`head.watch`, followed by a `LongPollClient`)
that returns every actor whose record changed. Calls to an actor that is not ALIVE yet
(pending, restarting, unknown here) queue in submission order and are sent when it
becomes ALIVE.

How a call fails tells whether it ran:
- `ActorUnavailableError`: it never left this process (the actor was known DEAD when the
  call was made, or it was queued and the actor turned out DEAD or unknown, or this
  runtime shut down while it was queued, or the connection to the actor's address never
  came up before it died);
- plain `ActorDiedError`: it was sent, and the incarnation it was sent to died (the
  runtime fails every call pending on that address at once); it may have run. (Calls
  "sent" on a connection that never completed its handshake were still queued in this
  process: they fail with `ActorUnavailableError`.)
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine
from typing import Any, Protocol

from ._futures import CallFuture
from ._head_client import HeadClient
from ._longpoll import LongPollClient, Update
from ._metrics_runtime import COUNTERS
from .exceptions import ActorDiedError, ActorUnavailableError, ClusterUnavailableError
from .messages import ActorId, ActorInfo, ActorState

__all__ = ["ActorDirectory", "DirectoryRuntime"]

log = logging.getLogger(__name__)
_WATCH_HOLD_S = 20.0
_SUSPECT_RECHECK_S = 2.0

_Queued = tuple[bytes, Any, Any, CallFuture]


class DirectoryRuntime(Protocol):
    """What the directory needs of its runtime (`Runtime` is one; the directory is part
    of it, so it names this instead of importing it)."""

    loop: asyncio.AbstractEventLoop
    head: HeadClient

    def send_request(self, address: str, route: bytes, payload: bytes, buffers: Any, fut: CallFuture) -> int: ...

    def fail_peer(self, address: str, make_exc: Callable[[], BaseException], close: bool = True, *,
                  make_unsent: Callable[[], BaseException] | None = None) -> int: ...

    def background(self, coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]: ...


class ActorDirectory:
    def __init__(self, rt: DirectoryRuntime) -> None:
        self._rt = rt
        self._infos: dict[ActorId, ActorInfo] = {}
        self._queued: dict[ActorId, list[_Queued]] = {}
        self._epoch: str | None = None
        self._watch: LongPollClient[tuple[ActorInfo, ...]] | None = None
        self._closed = False
        self._resolving: set[ActorId] = set()
        self._suspect: set[ActorId] = set()  # connection lost; waiting for the head's verdict
        self._observers: list[Callable[[ActorInfo], None]] = []

    # -- calls -------------------------------------------------------------------------
    def submit(self, actor_id: ActorId, hint: ActorInfo | None, route: bytes, payload: Any, buffers: Any,
               fut: CallFuture) -> None:
        """Send a call to the actor now if it is ALIVE, else queue it. Loop thread only."""
        COUNTERS.actor_calls_sent += 1
        info = self._infos.get(actor_id)
        if info is None and hint is not None:
            self.update(hint)
            info = self._infos.get(actor_id)
        if info is not None and info.state is ActorState.ALIVE and info.address is not None \
                and actor_id not in self._queued and actor_id not in self._suspect:
            self._rt.send_request(info.address, route, payload, buffers, fut)
            return
        if info is not None and info.state is ActorState.DEAD:
            fut.set_exception(ActorUnavailableError(_death_text(info)))
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

    def observe(self, fn: Callable[[ActorInfo], None]) -> None:
        """Call `fn(info)` with every newer record of any actor this directory learns."""
        self._observers.append(fn)

    # -- updates -----------------------------------------------------------------------
    def update(self, info: ActorInfo) -> None:
        old = self._infos.get(info.actor_id)
        if old is not None and info.version < old.version:
            return
        self._infos[info.actor_id] = info
        self._suspect.discard(info.actor_id)  # the head has spoken
        for fn in self._observers:
            try:
                fn(info)
            except Exception:  # an observer's bug must not stop the directory
                log.exception("an observer of the actor directory failed")
        if old is not None and old.address and old.state is ActorState.ALIVE and (
            info.state is not ActorState.ALIVE or info.address != old.address
        ):
            text = _death_text(info, old)
            # Sent: they may have run; unless the connection never came up (still queued here).
            self._rt.fail_peer(old.address, lambda: ActorDiedError(text), make_unsent=lambda: ActorUnavailableError(text))
        if info.state is ActorState.ALIVE and info.address is not None:
            address = info.address
            for route, payload, buffers, fut in self._queued.pop(info.actor_id, ()):
                if not fut.done():
                    self._rt.send_request(address, route, payload, buffers, fut)
        elif info.state is ActorState.DEAD:
            self.fail_queued(info.actor_id, ActorUnavailableError(_death_text(info)))

    def fail_queued(self, actor_id: ActorId, exc: BaseException) -> None:
        """Fail the calls queued for the actor (none of them was sent) with `exc`."""
        for *_, fut in self._queued.pop(actor_id, ()):
            if not fut.done():
                fut.set_exception(exc)

    def _resolve(self, actor_id: ActorId) -> None:
        if actor_id in self._resolving:
            return
        self._resolving.add(actor_id)

        async def ask() -> None:
            try:
                info = await self._rt.head.get_actor_info(actor_id)
            except Exception as e:
                self.fail_queued(actor_id, ClusterUnavailableError(f"cannot look up actor {actor_id}: {e}"))
                return
            finally:
                self._resolving.discard(actor_id)
            if info is None:
                self.fail_queued(actor_id, ActorUnavailableError(f"actor {actor_id} is unknown to the cluster"))
            else:
                self.update(info)

        self._rt.background(ask())

    # -- the long poll -----------------------------------------------------------------
    def ensure_watching(self) -> None:
        if self._closed:
            return
        if self._watch is None:
            self._watch = LongPollClient(self._fetch_changes, self._apply_changes, name="actor directory <- head",
                                         spawn=self._rt.background)
        self._watch.start()

    async def _fetch_changes(self, known_version: int) -> Update[tuple[ActorInfo, ...]]:
        """One long poll on the head. A head of another epoch (restarted) answers with all
        its actors, at a version above any of the old head's."""
        reply = await self._rt.head.watch(known_version, self._epoch, _WATCH_HOLD_S, timeout=_WATCH_HOLD_S + 10)
        self._epoch = reply.head_epoch
        return Update(reply.version, reply.actors)

    def _apply_changes(self, update: Update[tuple[ActorInfo, ...]]) -> None:
        for info in update.value or ():
            self.update(info)

    def close(self) -> None:
        self._closed = True
        if self._watch is not None:
            self._watch.close()
        for actor_id in list(self._queued):
            self.fail_queued(actor_id, ActorUnavailableError("the runtime of this process is shut down"))


def _death_text(info: ActorInfo, old: ActorInfo | None = None) -> str:
    who = f"{info.class_name} actor {info.actor_id}"
    if info.state is ActorState.RESTARTING:
        return (f"{who} died (incarnation {old.incarnation if old else '?'}) and is restarting: "
                f"{info.death_cause or 'worker process exited'}")
    return f"{who} is dead: {info.death_cause or 'worker process exited'}"
