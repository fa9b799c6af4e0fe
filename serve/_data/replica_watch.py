"""Frozen replicas, noticed from a router's data path.

A frozen replica (a stopped process, a loop that never yields) is noticed from the data
path: requests in flight there and none finished for STALL_S get it a ping (unqueued);
unanswered within PING_TIMEOUT_S, it gets no new requests until a ping answers again.
`StallWatch` is a mixin of `router.Router`, which owns the state it reads (`_progress`, the
time each replica last finished a request, and the `_frozen` set its choice leaves out);
`_watch` runs as the router's watchdog task.
"""

from __future__ import annotations

import asyncio
import collections
import logging
from typing import TYPE_CHECKING

from actors import ActorDiedError

from ..messages import ReplicaId, ReplicaInfo

__all__ = ["PING_TIMEOUT_S", "STALL_S", "StallWatch"]

STALL_S = 3.0  # a replica busy with no request finished for this long is pinged
PING_TIMEOUT_S = 2.0  # one whose ping is not answered within this is set aside until it answers
log = logging.getLogger("serve._data.router")  # the router's logger: its lines name it as they did


class StallWatch:
    """The watchdog side of `Router`."""

    if TYPE_CHECKING:  # set by Router
        _loop: asyncio.AbstractEventLoop
        _stall_s: float
        _ping_timeout_s: float
        _replicas: tuple[ReplicaInfo, ...]
        _in_flight: dict[ReplicaId, int]
        _waiting: collections.deque[asyncio.Future]
        _progress: dict[ReplicaId, float]
        _frozen: set[ReplicaId]
        _pinging: set[ReplicaId]

        def _drop(self, replica: ReplicaInfo) -> None: ...

        def _wake(self, n: int = 1) -> None: ...

    async def _watch(self) -> None:
        """Every tick: a replica with requests in flight and none finished for `stall_s`
        is pinged (an unqueued no-op its loop answers at once); one that does not answer
        within `ping_timeout_s` is set aside (no new requests) until a ping answers again.
        The controller's health checks replace it if it stays that way."""
        while True:
            await asyncio.sleep(min(1.0, self._stall_s))
            now = self._loop.time()
            for r in self._replicas:
                rid = r.replica_id
                if rid in self._pinging:
                    continue
                if rid in self._frozen:
                    self._ping(r)
                elif self._in_flight.get(rid, 0) > 0:
                    since = self._progress.setdefault(rid, now)  # busy, first seen: measure from now
                    if now - since > self._stall_s:
                        self._ping(r)
            for rid in [k for k in self._progress if k not in self._in_flight]:
                del self._progress[rid]  # a replica gone from the set

    def _ping(self, replica: ReplicaInfo) -> None:
        self._pinging.add(replica.replica_id)
        self._loop.create_task(self._probe(replica))

    async def _probe(self, replica: ReplicaInfo) -> None:
        rid = replica.replica_id
        try:
            await asyncio.wait_for(replica.handle.ping.remote(), self._ping_timeout_s)
        except asyncio.TimeoutError:
            if rid not in self._frozen:
                log.warning("replica %s answers nothing (%d requests in flight, none finished for %.0f s): "
                            "no new requests go to it until it does", rid, self._in_flight.get(rid, 0),
                            self._loop.time() - self._progress.get(rid, self._loop.time()))
                self._frozen.add(rid)
        except ActorDiedError:
            self._drop(replica)
            self._frozen.discard(rid)
        except Exception:  # any other answer (an error) still means its loop runs
            self._thawed(rid)
        else:
            self._thawed(rid)
        finally:
            self._pinging.discard(rid)

    def _thawed(self, rid: ReplicaId) -> None:
        self._progress[rid] = self._loop.time()
        if rid in self._frozen:
            self._frozen.discard(rid)
            log.warning("replica %s answers again: routing to it", rid)
            if self._waiting:
                self._wake(len(self._waiting))
