"""The one long-poll primitive: a host of versioned values and a client that follows one.

`LongPollHost` keeps a value per key with a version. `publish` replaces the value and
gives the key a new version; `listen(key, known_version, hold_s)` answers at once when
the key's version differs from the caller's, else when it changes, else after `hold_s`
(with the unchanged current state). Waiters wait on a per-key event: nothing polls.

`LongPollClient` runs `fetch(known_version)` (typically an RPC ending in a host's
`listen`) in a background task, calls `on_update` once per new version, and retries a
failed fetch after a jittered exponential back-off, reset by the next success. `fetch`
must hold while nothing changes (as `listen` does): the client fetches again at once.
A client sees the latest state, not every intermediate one.

Invariants:
- versions come from one counter per host, starting above `version_base` (default: the
  wall clock in µs), so every publish gets a version no earlier one had, and a restarted
  host starts above any version its clients hold: they see a new version at once;
- a key that does not exist (never published, or removed) answers
  `Update(MISSING_VERSION, None, exists=False)`; a client that knew the key sees the
  removal as a new version; one that knows it is missing waits for a publish;
- a client delivers versions in the order fetched, never the same version twice in a
  row, and never after `close()`.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable, Coroutine, Hashable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from ._futures import cancelling
from .exceptions import LongPollClosedError

__all__ = ["Backoff", "LongPollClient", "LongPollHost", "MISSING_VERSION", "UNKNOWN_VERSION", "Update"]

log = logging.getLogger(__name__)

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")

MISSING_VERSION = 0  # the version of a key that does not exist
UNKNOWN_VERSION = -1  # what a client knows before its first update: differs from every version


@dataclass(frozen=True, slots=True)
class Update(Generic[V]):
    """One state of a key: its version, its value, and whether it exists at all."""

    version: int
    value: V | None
    exists: bool = True


class _Waiters:
    __slots__ = ("count", "event")

    def __init__(self) -> None:
        self.event = asyncio.Event()
        self.count = 0


class LongPollHost(Generic[K, V]):
    """Versioned values by key, with listeners woken on change. Loop thread only."""

    def __init__(self, version_base: int | None = None) -> None:
        base = time.time_ns() // 1000 if version_base is None else version_base
        if base < MISSING_VERSION:
            raise ValueError(f"version_base must be >= {MISSING_VERSION}, got {base}")
        self._version = base
        self._values: dict[K, tuple[int, V]] = {}
        self._waiters: dict[K, _Waiters] = {}

    @property
    def version(self) -> int:
        """The newest version this host gave out (its base before the first publish)."""
        return self._version

    def skip_to(self, version: int) -> None:
        """Give later publishes versions above `version` (e.g. a restored snapshot's)."""
        self._version = max(self._version, version)

    def publish(self, key: K, value: V) -> int:
        """Set the key's value; returns its new version. Wakes the key's listeners."""
        self._version += 1
        self._values[key] = (self._version, value)
        self._wake(key)
        return self._version

    def remove(self, key: K) -> bool:
        """Delete the key (listeners learn it with `exists=False`); False if it was missing."""
        if self._values.pop(key, None) is None:
            return False
        self._wake(key)
        return True

    def snapshot(self, key: K) -> Update[V]:
        entry = self._values.get(key)
        if entry is None:
            return Update(MISSING_VERSION, None, exists=False)
        return Update(entry[0], entry[1])

    def keys(self) -> list[K]:
        return list(self._values)

    async def listen(self, key: K, known_version: int, hold_s: float) -> Update[V]:
        """The key's state once its version differs from `known_version`, or after `hold_s`."""
        current = self.snapshot(key)
        if current.version != known_version or hold_s <= 0:
            return current
        waiters = self._waiters.get(key)
        if waiters is None:
            waiters = self._waiters[key] = _Waiters()
        waiters.count += 1
        try:
            await asyncio.wait_for(waiters.event.wait(), hold_s)
        except asyncio.TimeoutError:
            pass
        finally:
            waiters.count -= 1
            if waiters.count == 0 and self._waiters.get(key) is waiters:
                del self._waiters[key]  # nobody left waiting: no event kept for the key
        return self.snapshot(key)

    def _wake(self, key: K) -> None:
        waiters = self._waiters.pop(key, None)
        if waiters is not None:
            waiters.event.set()


class Backoff:
    """Delays between retries: `initial` doubling up to `maximum`, each multiplied by a
    random factor in [1 - jitter, 1 + jitter] so that many clients do not retry in step."""

    def __init__(self, initial: float = 0.05, maximum: float = 2.0, factor: float = 2.0, jitter: float = 0.5,
                 rng: random.Random | None = None) -> None:
        if not 0 < initial <= maximum or factor < 1 or not 0 <= jitter < 1:
            raise ValueError("Backoff needs 0 < initial <= maximum, factor >= 1 and 0 <= jitter < 1")
        self.initial = initial
        self.maximum = maximum
        self.factor = factor
        self.jitter = jitter
        self._rng = rng if rng is not None else random.Random()
        self._base = initial

    def next(self) -> float:
        """The delay before the next retry; later ones grow."""
        delay = self._base * self._rng.uniform(1 - self.jitter, 1 + self.jitter)
        self._base = min(self._base * self.factor, self.maximum)
        return delay

    def reset(self) -> None:
        self._base = self.initial


Spawn = Callable[[Coroutine[Any, Any, None]], "asyncio.Task[None]"]


class LongPollClient(Generic[V]):
    """Follows one long-polled value: `fetch(known_version)` in a loop, `on_update` per
    new version. Create, `start()` and `close()` on the loop that runs it."""

    def __init__(self, fetch: Callable[[int], Awaitable[Update[V]]], on_update: Callable[[Update[V]], None], *,
                 name: str = "long poll", backoff: Backoff | None = None, rng: random.Random | None = None,
                 spawn: Spawn | None = None, initial_version: int = UNKNOWN_VERSION) -> None:
        """`backoff`: the retry delays (default `Backoff(rng=rng)`); `spawn`: how to run the
        background task (default: a task on the running loop; a runtime passes `background`)."""
        self._fetch = fetch
        self._on_update = on_update
        self.name = name
        self._backoff = backoff if backoff is not None else Backoff(rng=rng)
        self._spawn = spawn
        self._version = initial_version
        self._latest: Update[V] | None = None
        self._first: asyncio.Future[Update[V]] | None = None
        self._task: asyncio.Task[None] | None = None
        self._closed = False
        self.failures = 0  # consecutive failed fetches (0 after a success)

    @property
    def version(self) -> int:
        """The version last delivered (`UNKNOWN_VERSION` before the first)."""
        return self._version

    @property
    def latest(self) -> Update[V] | None:
        return self._latest

    @property
    def closed(self) -> bool:
        return self._closed

    def start(self) -> LongPollClient[V]:
        """Start following (again, if the task ended). Idempotent; returns the client."""
        if self._closed:
            raise LongPollClosedError(f"{self.name} is closed")
        if self._task is None or self._task.done():
            coro = self._run()
            self._task = self._spawn(coro) if self._spawn is not None else asyncio.get_running_loop().create_task(coro)
        return self

    async def first(self) -> Update[V]:
        """The first update delivered (at once if there was one). Raises
        `LongPollClosedError` if the client is closed before one arrives."""
        if self._latest is not None:
            return self._latest
        if self._closed:
            raise LongPollClosedError(f"{self.name} was closed before its first update")
        if self._first is None:
            self._first = asyncio.get_running_loop().create_future()
        return await asyncio.shield(self._first)

    def close(self) -> None:
        """Stop following: cancels the fetch in flight; no update is delivered after."""
        if self._closed:
            return
        self._closed = True
        if self._task is not None:
            self._task.cancel()
        if self._first is not None and not self._first.done():
            self._first.set_exception(LongPollClosedError(f"{self.name} was closed before its first update"))
            self._first.exception()  # retrieved: nobody may be waiting for it

    async def aclose(self) -> None:
        """`close()`, then wait until the background task has ended."""
        self.close()
        if self._task is not None:
            await asyncio.gather(self._task, return_exceptions=True)

    async def _run(self) -> None:
        while not self._closed:
            try:
                update = await self._fetch(self._version)
            except asyncio.CancelledError:
                raise
            except Exception as e:
                if cancelling():
                    # Cancelled as the fetch failed: Python 3.11's asyncio.wait_for (the
                    # runtime's calls) then raises the failure and drops the cancellation;
                    # retrying would keep this task, and the process that waits for it, alive.
                    raise asyncio.CancelledError from e
                self.failures += 1
                delay = self._backoff.next()
                log.debug("%s: fetch failed (%r, %d in a row); retrying in %.2fs", self.name, e, self.failures, delay)
                await asyncio.sleep(delay)
                continue
            self.failures = 0
            self._backoff.reset()
            if update.version != self._version and not self._closed:
                self._deliver(update)

    def _deliver(self, update: Update[V]) -> None:
        self._version = update.version
        self._latest = update
        if self._first is not None and not self._first.done():
            self._first.set_result(update)
        try:
            self._on_update(update)
        except Exception:
            log.exception("%s: on_update failed for version %d", self.name, update.version)
