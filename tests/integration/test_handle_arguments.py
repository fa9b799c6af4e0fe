"""Handle and actor calls whose arguments cannot be serialized (issue 16, item 3): the
call fails at its call site with a TypeError naming the argument, and no other call,
issued before, with or after it, is affected. So for every kind of handle call: plain,
streaming (`.options(stream=True)`), and one that also passes a `DeploymentResponse`
(resolved before it is sent, so serialized later than the others)."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator

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

    def items(self, value: object, n: object = 2) -> Iterator[object]:
        for _ in range(n if isinstance(n, int) else 1):
            yield value


class Unreducible:
    """Its `__reduce__` raises (as objects holding OS resources do)."""

    def __reduce__(self):
        raise ValueError("this object cannot travel")


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


def test_a_streaming_call_raises_at_the_call_and_names_the_argument() -> None:
    handle = serve.run(Echo.bind(), name="streams", route_prefix=None)
    items = handle.options(stream=True).items
    before = items.remote("before", 3)  # opened before the bad calls, iterated after them
    with pytest.raises(TypeError, match=r"Echo.items: argument 0 \(a lock\) cannot be serialized"):
        items.remote(threading.Lock())
    with pytest.raises(TypeError, match=r"Echo.items: keyword argument 'n' \(a list\) cannot be serialized: "
                                        r"RecursionError"):
        items.remote(1, n=_deep(100_000))
    with pytest.raises(TypeError, match=r"argument 0 \(a Unreducible\) cannot be serialized: ValueError: this "
                                        r"object cannot travel"):
        items.remote(Unreducible())
    assert list(before) == ["before"] * 3
    assert [list(items.remote(i)) for i in range(5)] == [[i, i] for i in range(5)]


def test_a_call_with_a_response_argument_raises_at_the_call_and_names_the_other_argument() -> None:
    handle = serve.run(Echo.bind(), name="composed", route_prefix=None)
    first = handle.slow.remote(5)  # still in flight while the bad calls fail
    with pytest.raises(TypeError, match=r"Echo.__call__: argument 1 \(a lock\) cannot be serialized"):
        handle.remote(first, threading.Lock())
    with pytest.raises(TypeError, match=r"Echo.__call__: keyword argument 'guard' \(a Unreducible\)"):
        handle.remote(first, guard=Unreducible())
    with pytest.raises(TypeError, match=r"Echo.items: argument 1 \(a lock\) cannot be serialized"):
        handle.options(stream=True).items.remote(first, threading.Lock())  # streaming and composed
    assert handle.remote(first, extra=[1, 2]).result(timeout_s=30) == 5  # the response still resolves
    assert list(handle.options(stream=True).items.remote(first, 3)) == [5, 5, 5]
    assert first.result(timeout_s=30) == 5
    assert [handle.remote(i).result(timeout_s=30) for i in range(5)] == list(range(5))


def test_an_async_driver_gets_the_error_at_the_call_for_every_kind_of_call() -> None:
    handle = serve.run(Echo.bind(), name="async-kinds", route_prefix=None)

    async def calls() -> list:
        first = handle.remote(7)
        with pytest.raises(TypeError, match=r"argument 1 \(a lock\) cannot be serialized"):
            handle.remote(first, threading.Lock())
        with pytest.raises(TypeError, match=r"argument 0 \(a lock\) cannot be serialized"):
            handle.options(stream=True).items.remote(threading.Lock())
        streamed = [item async for item in handle.options(stream=True).items.remote(first)]
        return [await handle.remote(first), streamed]

    assert asyncio.run(calls()) == [7, [7, 7]]
