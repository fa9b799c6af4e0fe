"""TEMPORARY stand-in for actors' long-poll primitive (being built in the runtime); same interface."""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable, Hashable
from dataclasses import dataclass
from typing import Any

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Update:
    version: int
    value: Any
    exists: bool = True


class LongPollHost:
    def __init__(self, version_base: int | None = None) -> None:
        self._base = time.time_ns() // 1000 if version_base is None else version_base
        self._values: dict[Hashable, Update] = {}
        self._events: dict[Hashable, asyncio.Event] = {}

    def _bump(self, key: Hashable, update: Update) -> int:
        self._values[key] = update
        ev = self._events.pop(key, None)
        if ev is not None:
            ev.set()
        return update.version

    def _next(self, key: Hashable) -> int:
        cur = self._values.get(key)
        self._base += 1
        return max(self._base, (cur.version + 1) if cur else 0)

    def publish(self, key: Hashable, value: Any) -> int:
        return self._bump(key, Update(self._next(key), value, True))

    def remove(self, key: Hashable) -> None:
        if key in self._values and self._values[key].exists:
            self._bump(key, Update(self._next(key), None, False))

    def snapshot(self, key: Hashable) -> Update:
        return self._values.get(key) or Update(-1, None, False)

    async def listen(self, key: Hashable, known_version: int, hold_s: float) -> Update:
        deadline = time.monotonic() + hold_s
        while True:
            cur = self.snapshot(key)
            if cur.version != known_version:
                return cur
            left = deadline - time.monotonic()
            if left <= 0:
                return cur
            ev = self._events.setdefault(key, asyncio.Event())
            try:
                await asyncio.wait_for(ev.wait(), left)
            except asyncio.TimeoutError:
                return self.snapshot(key)


class LongPollClient:
    def __init__(self, fetch: Callable[[int], Awaitable[Update]], on_update: Callable[[Update], None], *,
                 name: str = "", rng: random.Random | None = None) -> None:
        self._fetch = fetch
        self._on_update = on_update
        self._name = name
        self._rng = rng or random.Random()
        self.version = -1
        self._task: asyncio.Task | None = None
        self._first = asyncio.get_running_loop().create_future()

    def start(self) -> LongPollClient:
        self._task = asyncio.get_running_loop().create_task(self._run())
        return self

    async def first(self) -> None:
        await asyncio.shield(self._first)

    async def _run(self) -> None:
        backoff = 0.05
        while True:
            try:
                update = await self._fetch(self.version)
            except asyncio.CancelledError:
                raise
            except Exception as e:
                log.debug("long poll %s failed (%s)", self._name, e)
                await asyncio.sleep(backoff * self._rng.uniform(0.5, 1.5))
                backoff = min(backoff * 2, 2.0)
                continue
            backoff = 0.05
            if update.version != self.version:
                self.version = update.version
                self._on_update(update)
                if not self._first.done():
                    self._first.set_result(None)

    def close(self) -> None:
        if self._task is not None:
            self._task.cancel()


def is_unavailable(exc: BaseException | None) -> bool:
    """TEMPORARY: whether a call failed without reaching its actor (never ran)."""
    try:
        from actors import ActorUnavailableError  # type: ignore[attr-defined]
    except ImportError:
        from actors import ActorDiedError

        return isinstance(exc, ActorDiedError) and "is dead" in str(exc)
    return isinstance(exc, ActorUnavailableError)
