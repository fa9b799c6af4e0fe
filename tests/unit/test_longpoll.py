"""Unit tests of the long-poll primitive (`actors.system.LongPollHost`, `LongPollClient`,
`Backoff`) on a plain event loop: no processes, no sockets.

Waiting is on events and futures; the only timed waits are the hold time-outs under test
(tens of milliseconds), measured against the clock.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from actors.exceptions import LongPollClosedError
from actors.system import MISSING_VERSION, UNKNOWN_VERSION, Backoff, LongPollClient, LongPollHost, Update


def run(main: Callable[[], Awaitable[Any]]) -> Any:
    return asyncio.run(main())  # type: ignore[arg-type]


# -- host -------------------------------------------------------------------------------------------


def test_publish_gives_increasing_versions_from_the_base() -> None:
    host: LongPollHost[str, int] = LongPollHost(version_base=100)
    assert host.publish("a", 1) == 101
    assert host.publish("b", 2) == 102
    assert host.publish("a", 3) == 103
    assert host.snapshot("a") == Update(103, 3, True)
    assert host.snapshot("b") == Update(102, 2, True)
    assert sorted(host.keys()) == ["a", "b"]


def test_default_base_is_the_wall_clock_so_a_restarted_host_starts_above() -> None:
    before_us = time.time_ns() // 1000
    old: LongPollHost[str, int] = LongPollHost()
    held = [old.publish("k", i) for i in range(10)][-1]
    assert held > before_us
    while time.time_ns() // 1000 <= held:  # the old host lived longer (in µs) than it gave versions
        pass
    restarted: LongPollHost[str, int] = LongPollHost()
    assert restarted.publish("k", 0) > held


def test_skip_to_puts_later_versions_above() -> None:
    host: LongPollHost[str, int] = LongPollHost(version_base=10)
    host.skip_to(500)
    assert host.publish("k", 1) == 501
    host.skip_to(3)  # never backwards
    assert host.publish("k", 2) == 502


def test_negative_base_is_refused() -> None:
    with pytest.raises(ValueError, match="version_base"):
        LongPollHost(version_base=-5)


def test_listen_answers_at_once_when_the_version_differs() -> None:
    async def main() -> None:
        host: LongPollHost[str, str] = LongPollHost(version_base=0)
        v = host.publish("k", "x")
        start = time.monotonic()
        assert await host.listen("k", UNKNOWN_VERSION, hold_s=30) == Update(v, "x", True)
        assert await host.listen("k", v - 1, hold_s=30) == Update(v, "x", True)
        assert time.monotonic() - start < 5

    run(main)


def test_listen_holds_then_answers_the_unchanged_state() -> None:
    async def main() -> None:
        host: LongPollHost[str, str] = LongPollHost(version_base=0)
        v = host.publish("k", "x")
        start = time.monotonic()
        update = await host.listen("k", v, hold_s=0.05)
        assert time.monotonic() - start >= 0.045
        assert update == Update(v, "x", True)
        assert not host._waiters  # nobody waits any more: no event is kept for the key

    run(main)


def test_listen_with_no_hold_answers_at_once() -> None:
    async def main() -> None:
        host: LongPollHost[str, str] = LongPollHost(version_base=0)
        v = host.publish("k", "x")
        assert await host.listen("k", v, hold_s=0) == Update(v, "x", True)

    run(main)


def test_publish_wakes_every_listener_of_the_key_only() -> None:
    async def main() -> None:
        host: LongPollHost[str, str] = LongPollHost(version_base=0)
        v = host.publish("k", "x")
        other = host.publish("other", "o")
        waiters = [asyncio.ensure_future(host.listen("k", v, hold_s=30)) for _ in range(3)]
        bystander = asyncio.ensure_future(host.listen("other", other, hold_s=30))
        await asyncio.sleep(0)  # let them start waiting
        assert not any(w.done() for w in waiters)
        start = time.monotonic()
        v2 = host.publish("k", "y")
        results = await asyncio.gather(*waiters)
        assert time.monotonic() - start < 5
        assert results == [Update(v2, "y", True)] * 3
        assert not bystander.done()
        bystander.cancel()
        await asyncio.gather(bystander, return_exceptions=True)
        assert not host._waiters

    run(main)


def test_removed_and_unknown_keys_answer_exists_false() -> None:
    async def main() -> None:
        host: LongPollHost[str, str] = LongPollHost(version_base=0)
        assert host.snapshot("never") == Update(MISSING_VERSION, None, False)
        assert await host.listen("never", UNKNOWN_VERSION, hold_s=30) == Update(MISSING_VERSION, None, False)
        v = host.publish("k", "x")
        assert host.remove("k") is True
        assert host.remove("k") is False
        # A client that knew the key learns at once that it is gone...
        assert await host.listen("k", v, hold_s=30) == Update(MISSING_VERSION, None, False)
        # ... and one that knows it is gone waits for it to come back.
        start = time.monotonic()
        assert await host.listen("k", MISSING_VERSION, hold_s=0.05) == Update(MISSING_VERSION, None, False)
        assert time.monotonic() - start >= 0.045

    run(main)


def test_remove_and_republish_wake_listeners() -> None:
    async def main() -> None:
        host: LongPollHost[str, str] = LongPollHost(version_base=0)
        v = host.publish("k", "x")
        gone = asyncio.ensure_future(host.listen("k", v, hold_s=30))
        await asyncio.sleep(0)
        host.remove("k")
        assert (await gone).exists is False
        back = asyncio.ensure_future(host.listen("k", MISSING_VERSION, hold_s=30))
        await asyncio.sleep(0)
        v2 = host.publish("k", "again")
        assert await back == Update(v2, "again", True)
        assert v2 > v

    run(main)


# -- back-off ---------------------------------------------------------------------------------------


class _Extreme(random.Random):
    """An rng whose `uniform` always answers one end of the range."""

    def __init__(self, high: bool) -> None:
        super().__init__(0)
        self.high = high

    def uniform(self, a: float, b: float) -> float:
        return b if self.high else a


def test_backoff_doubles_to_the_maximum_within_jitter_bounds() -> None:
    bases = [0.05, 0.1, 0.2, 0.4, 0.8, 1.6, 2.0, 2.0]
    low = Backoff(rng=_Extreme(high=False))
    high = Backoff(rng=_Extreme(high=True))
    assert [round(low.next(), 6) for _ in bases] == [round(b * 0.5, 6) for b in bases]
    assert [round(high.next(), 6) for _ in bases] == [round(b * 1.5, 6) for b in bases]
    seeded = Backoff(rng=random.Random(7))
    delays = [seeded.next() for _ in bases]
    assert all(0.5 * b <= d <= 1.5 * b for d, b in zip(delays, bases, strict=True))
    assert len({round(d / b, 9) for d, b in zip(delays, bases, strict=True)}) > 1  # really jittered


def test_backoff_reset_starts_over() -> None:
    b = Backoff(initial=0.05, maximum=2.0, rng=_Extreme(high=True))
    for _ in range(6):
        b.next()
    b.reset()
    assert b.next() == pytest.approx(0.075)


def test_backoff_refuses_nonsense() -> None:
    with pytest.raises(ValueError):
        Backoff(initial=0)
    with pytest.raises(ValueError):
        Backoff(initial=3, maximum=2)
    with pytest.raises(ValueError):
        Backoff(jitter=1.5)


# -- client -----------------------------------------------------------------------------------------


class Recorder:
    def __init__(self) -> None:
        self.updates: list[Update[Any]] = []
        self.changed = asyncio.Event()

    def __call__(self, update: Update[Any]) -> None:
        self.updates.append(update)
        self.changed.set()

    async def until(self, n: int) -> list[Update[Any]]:
        while len(self.updates) < n:
            self.changed.clear()
            await asyncio.wait_for(self.changed.wait(), 5)
        return self.updates


def test_client_follows_a_host_once_per_version() -> None:
    async def main() -> None:
        host: LongPollHost[str, str] = LongPollHost(version_base=0)
        v1 = host.publish("k", "one")
        fetches: list[int] = []

        async def fetch(known: int) -> Update[str]:
            fetches.append(known)
            return await host.listen("k", known, hold_s=0.02)  # short holds: several time out unchanged

        seen = Recorder()
        client = LongPollClient(fetch, seen, name="test")
        client.start()
        client.start()  # idempotent
        assert await client.first() == Update(v1, "one", True)
        v2 = host.publish("k", "two")
        await seen.until(2)
        host.remove("k")
        await seen.until(3)
        v4 = host.publish("k", "four")
        await seen.until(4)
        assert seen.updates == [Update(v1, "one"), Update(v2, "two"), Update(MISSING_VERSION, None, False),
                                Update(v4, "four")]
        assert fetches[0] == UNKNOWN_VERSION
        assert client.version == v4 and client.latest == Update(v4, "four")
        await client.aclose()

    run(main)


def test_first_answers_exists_false_for_a_missing_key() -> None:
    async def main() -> None:
        host: LongPollHost[str, str] = LongPollHost(version_base=0)
        client = LongPollClient(lambda known: host.listen("nope", known, 30), lambda u: None)
        client.start()
        assert await client.first() == Update(MISSING_VERSION, None, False)
        await client.aclose()

    run(main)


class SpyBackoff(Backoff):
    def __init__(self) -> None:
        super().__init__(initial=0.001, maximum=0.004, rng=random.Random(1))
        self.delays: list[float] = []
        self.resets = 0

    def next(self) -> float:
        delay = super().next()
        self.delays.append(delay)
        return delay

    def reset(self) -> None:
        self.resets += 1
        super().reset()


def test_client_retries_with_backoff_and_resets_after_a_success() -> None:
    async def main() -> None:
        outcomes: list[Any] = [ConnectionError("down")] * 4 + [Update(1, "a")] + [OSError("again")] * 2 + \
            [Update(2, "b")]
        done = asyncio.Event()

        async def fetch(known: int) -> Update[str]:
            if not outcomes:
                await done.wait()  # hold forever: nothing more to say
            outcome = outcomes.pop(0)
            if isinstance(outcome, Exception):
                raise outcome
            return outcome

        backoff = SpyBackoff()
        seen = Recorder()
        client = LongPollClient(fetch, seen, backoff=backoff)
        client.start()
        await seen.until(2)
        assert [u.value for u in seen.updates] == ["a", "b"]
        # 4 failures: 0.001, 0.002, 0.004, 0.004 (capped), each jittered within [0.5, 1.5];
        # the success resets, so the next 2 failures start from 0.001 again.
        bases = [0.001, 0.002, 0.004, 0.004, 0.001, 0.002]
        assert len(backoff.delays) == len(bases)
        assert all(0.5 * b - 1e-12 <= d <= 1.5 * b + 1e-12
                   for d, b in zip(backoff.delays, bases, strict=True)), backoff.delays
        assert backoff.resets >= 2
        assert client.failures == 0
        await client.aclose()

    run(main)


def test_client_logs_failures_at_debug(caplog: pytest.LogCaptureFixture) -> None:
    async def main() -> None:
        calls = 0

        async def fetch(known: int) -> Update[str]:
            nonlocal calls
            calls += 1
            if calls == 1:
                raise ConnectionError("head away")
            if calls > 2:
                await asyncio.Event().wait()  # nothing changes any more: hold
            return Update(5, "v")

        client = LongPollClient(fetch, lambda u: None, name="chan", backoff=SpyBackoff())
        client.start()
        await client.first()
        await client.aclose()

    with caplog.at_level("DEBUG", logger="actors._longpoll"):
        run(main)
    failures = [r for r in caplog.records if "head away" in r.getMessage()]
    assert failures and all(r.levelname == "DEBUG" for r in failures)


def test_close_cancels_the_fetch_in_flight_and_stops_updates() -> None:
    async def main() -> None:
        started = asyncio.Event()
        cancelled = asyncio.Event()

        async def fetch(known: int) -> Update[str]:
            started.set()
            try:
                await asyncio.Event().wait()
            except asyncio.CancelledError:
                cancelled.set()
                raise
            raise AssertionError("unreachable")

        seen = Recorder()
        client = LongPollClient(fetch, seen)
        client.start()
        await asyncio.wait_for(started.wait(), 5)
        waiting = asyncio.ensure_future(client.first())
        await asyncio.sleep(0)
        client.close()
        assert client.closed
        await asyncio.wait_for(cancelled.wait(), 5)
        with pytest.raises(LongPollClosedError):
            await waiting
        with pytest.raises(LongPollClosedError):
            await client.first()
        with pytest.raises(LongPollClosedError):
            client.start()
        await client.aclose()  # idempotent
        assert seen.updates == []

    run(main)


def test_a_cancellation_that_the_fetch_turns_into_an_error_still_ends_the_task() -> None:
    """What a process's shutdown does (asyncio.run cancels every task) as its runtime fails
    the fetch in flight: Python 3.11's wait_for raises the failure and drops the cancel. The
    task must end, not retry: a worker waited on it forever after its agent died."""
    async def main() -> None:
        started = asyncio.Event()
        fetches = 0

        async def fetch(known: int) -> Update[str]:
            nonlocal fetches
            fetches += 1
            started.set()
            try:
                await asyncio.Event().wait()
            except asyncio.CancelledError:
                raise ConnectionError("the runtime is shut down") from None
            raise AssertionError("unreachable")

        client = LongPollClient(fetch, Recorder(), backoff=Backoff(initial=0.001, maximum=0.001))
        client.start()
        await asyncio.wait_for(started.wait(), 5)
        task = client._task
        assert task is not None
        task.cancel()  # not client.close(): the task alone is cancelled, as asyncio.run does
        with pytest.raises(asyncio.CancelledError):
            await asyncio.wait_for(task, 5)
        assert fetches == 1

    run(main)


def test_a_failing_on_update_does_not_stop_the_client() -> None:
    async def main() -> None:
        host: LongPollHost[str, int] = LongPollHost(version_base=0)
        host.publish("k", 1)
        seen: list[int | None] = []
        second = asyncio.Event()

        def on_update(update: Update[int]) -> None:
            seen.append(update.value)
            if len(seen) == 1:
                raise RuntimeError("a bug in the callback")
            second.set()

        client = LongPollClient(lambda known: host.listen("k", known, 30), on_update)
        client.start()
        await client.first()
        host.publish("k", 2)
        await asyncio.wait_for(second.wait(), 5)
        assert seen == [1, 2]
        await client.aclose()

    run(main)


def test_client_runs_on_a_given_spawner() -> None:
    async def main() -> None:
        tasks: list[asyncio.Task[None]] = []

        def spawn(coro: Any) -> asyncio.Task[None]:
            task = asyncio.get_running_loop().create_task(coro)
            tasks.append(task)
            return task

        host: LongPollHost[str, str] = LongPollHost(version_base=0)
        host.publish("k", "x")
        client = LongPollClient(lambda known: host.listen("k", known, 30), lambda u: None, spawn=spawn)
        client.start()
        assert (await client.first()).value == "x"
        assert len(tasks) == 1
        await client.aclose()
        assert tasks[0].done()

    run(main)


def test_updates_travel_between_processes() -> None:
    from actors.system import dumps, loads

    for update in (Update(7, {"routes": ["/a"]}), Update(MISSING_VERSION, None, False)):
        payload, buffers = dumps(update)
        assert loads(payload, buffers) == update


def test_start_returns_the_client_and_rng_drives_the_jitter() -> None:
    async def main() -> None:
        calls = 0
        gate = asyncio.Event()

        async def fetch(known: int) -> Update[str]:
            nonlocal calls
            calls += 1
            if calls <= 2:
                raise ConnectionError("not yet")
            if calls > 3:
                await gate.wait()
            return Update(1, "x")

        client = LongPollClient(fetch, lambda u: None, rng=_Extreme(high=False)).start()
        assert isinstance(client, LongPollClient)
        start = time.monotonic()
        await client.first()
        # two retries at the low end of the jitter: 0.025 s then 0.05 s
        assert time.monotonic() - start >= 0.07
        await client.aclose()

    run(main)
