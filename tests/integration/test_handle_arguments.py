"""Handle and actor calls whose arguments cannot be serialized (issue 16, item 3): the
call fails at its call site with a TypeError naming the argument, and no other call,
issued before, with or after it, is affected."""

from __future__ import annotations

import asyncio
import threading

import pytest

import actors
import serve

pytestmark = [pytest.mark.usefixtures("cluster", "fresh_serve"), pytest.mark.timeout(120)]


@serve.deployment
class Echo:
    def __call__(self, value: object = None, **kwargs: object) -> object:
        return value

    async def slow(self, value: object) -> object:
        await asyncio.sleep(0.2)
        return value


def _deep(depth: int) -> list:
    nested: list = []
    for _ in range(depth):
        nested = [nested]
    return nested


def test_an_unpicklable_argument_raises_at_the_call_and_names_it() -> None:
    handle = serve.run(Echo.bind(), name="args", route_prefix=None)
    assert handle.remote(1).result() == 1
    before = handle.slow.remote("before")  # in flight while the bad calls fail
    with pytest.raises(TypeError, match=r"Echo.__call__: argument 1 \(a lock\) cannot be serialized"):
        handle.remote(1, threading.Lock())
    with pytest.raises(TypeError, match=r"keyword argument 'guard' \(a lock\)"):
        handle.remote(guard=threading.Lock())
    with pytest.raises(TypeError, match=r"argument 0 \(a list\) cannot be serialized: RecursionError"):
        handle.remote(_deep(100_000))
    after = [handle.remote(i) for i in range(20)]
    assert [r.result(timeout_s=30) for r in after] == list(range(20))
    assert before.result(timeout_s=30) == "before"


def test_an_async_driver_burst_with_one_bad_call_loses_no_other() -> None:
    handle = serve.run(Echo.bind(), name="burst", route_prefix=None)

    async def burst() -> list:
        good = [handle.remote(i) for i in range(50)]
        with pytest.raises(TypeError, match="cannot be serialized"):
            handle.remote(threading.Lock())
        good += [handle.remote(i) for i in range(50, 100)]
        return await asyncio.gather(*good)

    assert asyncio.run(burst()) == list(range(100))


def test_a_plain_actor_call_names_the_argument_too() -> None:
    @actors.remote
    class Box:
        def put(self, value: object) -> object:
            return value

    box = Box.remote()
    with pytest.raises(TypeError, match=r"Box.put: argument 0 \(a lock\) cannot be serialized"):
        box.put.remote(threading.Lock())
    assert actors.get(box.put.remote(7), timeout=30) == 7
    actors.kill(box)
