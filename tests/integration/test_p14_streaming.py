"""Streaming through handles (issue 14, item 6): `handle.options(stream=True).m.remote(...)`
returns a `DeploymentResponseGenerator` whose items arrive as the replica yields them, with
flow control, cancellation that closes the replica's generator, errors raised at the item
where they happened, and a generator an ingress can stream over HTTP. Ray 2.x's documented
example is ported by the renaming rule."""

from __future__ import annotations

import asyncio
import gc
import itertools
import os
from collections.abc import AsyncIterator, Generator

import httpx
import pytest
from starlette.requests import Request
from starlette.responses import StreamingResponse

import actors
import serve
from serve.handle import DeploymentHandle, DeploymentResponseGenerator

from ..conftest import free_port, wait_until
from ._signals import Signals

pytestmark = [pytest.mark.usefixtures("cluster"), pytest.mark.timeout(120)]
_keys = itertools.count()


@serve.deployment(max_ongoing_requests=1, max_queued_requests=0)
class Tokens:
    def __init__(self, signals: actors.ActorHandle) -> None:
        self.signals = signals

    async def gated(self, key: str):
        """Yields 'first', waits for the test's signal, yields 'last'; logs how it ended."""
        completed = False
        try:
            yield "first"
            await self.signals.wait.remote(key)
            yield "last"
            completed = True
        finally:
            await self.signals.record.remote(f"{'finished' if completed else 'closed'} {key}")

    def sync_gated(self, key: str):  # a sync generator: runs on threads, may block
        completed = False
        try:
            yield "first"
            actors.get(self.signals.wait.remote(key), timeout=60)
            yield "last"
            completed = True
        finally:
            actors.get(self.signals.record.remote(f"{'finished' if completed else 'closed'} {key}"), timeout=10)

    async def values(self):
        for v in (0, None, "", b"", [], {"a": 1}, 2.5):
            yield v

    async def failing(self, n: int):
        for i in range(n):
            yield i
        raise ValueError(f"broke after {n} items")

    def not_a_generator(self) -> int:
        return 1

    def quick(self) -> str:
        return "quick"

    def listed(self):
        yield from range(3)


@serve.deployment(max_ongoing_requests=4)
class Endless:
    def __init__(self) -> None:
        self.produced: dict[str, int] = {}

    async def endless(self, key: str):
        n = 0
        while True:
            self.produced[key] = n
            yield n
            n += 1

    async def how_many(self, key: str) -> int:
        return self.produced.get(key, -1)


@serve.deployment
class Crasher:
    def __init__(self, signals: actors.ActorHandle) -> None:
        self.signals = signals

    async def one_then_die(self, key: str):
        yield "one"
        await self.signals.wait.remote(key)
        os._exit(1)


@serve.deployment
class Relay:
    """Streams another deployment's items over HTTP (an ingress passing a handle's generator on)."""

    def __init__(self, tokens: DeploymentHandle) -> None:
        self.tokens = tokens.options(stream=True)

    async def __call__(self, request: Request) -> StreamingResponse:
        gen = self.tokens.gated.remote(request.query_params["key"])
        return StreamingResponse(gen, media_type="text/plain")


@pytest.fixture(scope="module")
def served():
    port = free_port()
    serve.start(http_options={"port": port})
    signals = Signals.remote()
    tokens = serve.run(Tokens.bind(signals), name="tokens", route_prefix=None)
    serve.run(Relay.bind(Tokens.bind(signals)), name="relay", route_prefix="/relay")
    serve.run(Endless.bind(), name="endless", route_prefix=None)
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=httpx.Timeout(30, read=20)) as client:
        wait_until(lambda: "/relay" in client.get("/-/routes").json(), timeout=30, what="the route at the proxy")
        yield tokens, signals, client
    serve.shutdown()


def _log(signals: actors.ActorHandle) -> list[str]:
    return actors.get(signals.recorded.remote(), timeout=10)


def _free(tokens: DeploymentHandle) -> bool:
    """The replica's one slot is free (max_ongoing_requests=1, max_queued_requests=0)."""
    try:
        return tokens.quick.remote().result(timeout_s=10) == "quick"
    except serve.BackPressureError:
        return False


@pytest.mark.parametrize("method", ["gated", "sync_gated"])
def test_items_arrive_as_the_replica_yields_them(served, method: str) -> None:
    tokens, signals, _ = served
    key = f"{method}-{next(_keys)}"
    gen = getattr(tokens.options(stream=True), method).remote(key)
    assert isinstance(gen, DeploymentResponseGenerator)
    assert next(gen) == "first"  # while the replica waits for the signal: streamed
    actors.get(signals.send.remote(key), timeout=10)
    assert list(gen) == ["last"]
    wait_until(lambda: f"finished {key}" in _log(signals), timeout=20, what="the generator to finish")
    wait_until(lambda: _free(tokens), timeout=20, what="the slot to be free")


def test_async_for_in_an_async_driver(served) -> None:
    tokens, signals, _ = served
    key = f"async-{next(_keys)}"

    async def consume() -> list[str]:
        got = []
        async for item in tokens.options(stream=True).gated.remote(key):
            got.append(item)
            if item == "first":
                await signals.send.remote(key)
        return got

    assert asyncio.run(consume()) == ["first", "last"]


def test_any_values_pass_falsy_ones_too(served) -> None:
    tokens, _, _ = served
    assert list(tokens.options(stream=True).values.remote()) == [0, None, "", b"", [], {"a": 1}, 2.5]


def test_an_error_is_raised_at_the_item_where_it_happened(served) -> None:
    tokens, _, _ = served
    for n in (0, 3, 40):  # before any item, after a few, after more than one batch
        gen = tokens.options(stream=True).failing.remote(n)
        got = []
        with pytest.raises(ValueError, match=f"broke after {n} items"):
            for item in gen:
                got.append(item)
        assert got == list(range(n))
        assert list(gen) == []  # the iteration ended there
    assert _free(tokens)


def test_cancel_closes_the_replicas_generator_and_frees_its_slot(served) -> None:
    tokens, signals, _ = served
    key = f"cancel-{next(_keys)}"
    gen = tokens.options(stream=True).gated.remote(key)
    assert next(gen) == "first"
    assert not _free(tokens)  # the stream holds the replica's one slot while it lasts
    gen.cancel()
    wait_until(lambda: f"closed {key}" in _log(signals), timeout=20, what="the replica's generator to be closed")
    wait_until(lambda: _free(tokens), timeout=20, what="the slot to be free")
    with pytest.raises(asyncio.CancelledError):
        next(gen)
    assert f"finished {key}" not in _log(signals)


def test_a_dropped_generator_is_closed(served) -> None:
    tokens, signals, _ = served
    key = f"drop-{next(_keys)}"
    gen = tokens.options(stream=True).gated.remote(key)
    assert next(gen) == "first"
    del gen
    gc.collect()
    wait_until(lambda: f"closed {key}" in _log(signals), timeout=20, what="the replica's generator to be closed")
    wait_until(lambda: _free(tokens), timeout=20, what="the slot to be free")


def test_a_cancelled_async_for_closes_the_replicas_generator(served) -> None:
    tokens, signals, _ = served
    key = f"task-{next(_keys)}"

    async def consume(first: asyncio.Event) -> None:
        async for _ in tokens.options(stream=True).gated.remote(key):
            first.set()

    async def main() -> None:
        first = asyncio.Event()
        task = asyncio.ensure_future(consume(first))
        await first.wait()  # it now waits for "last", which never comes
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(main())
    wait_until(lambda: f"closed {key}" in _log(signals), timeout=20, what="the replica's generator to be closed")
    wait_until(lambda: _free(tokens), timeout=20, what="the slot to be free")


def test_flow_control_bounds_the_items_in_flight(served) -> None:
    endless = DeploymentHandle("Endless", "endless")
    key = f"endless-{next(_keys)}"
    gen = endless.options(stream=True).endless.remote(key)
    taken = [next(gen) for _ in range(5)]
    assert taken == list(range(5))
    # an endless generator runs only a bounded way ahead of a consumer that stopped taking:
    # at most one batch taken (16) and 16 more made ahead of the next pull
    wait_until(lambda: endless.how_many.remote(key).result(timeout_s=10) >= 16, timeout=20, what="production")
    for _ in range(20):
        assert endless.how_many.remote(key).result(timeout_s=10) <= 2 * 16
    taken += [next(gen) for _ in range(100)]  # taking more lets it go on
    assert taken == list(range(105))
    gen.cancel()


def test_stream_true_on_a_method_that_is_not_a_generator_is_a_type_error(served) -> None:
    tokens, _, _ = served
    with pytest.raises(TypeError, match="not a generator"):
        list(tokens.options(stream=True).not_a_generator.remote())
    assert tokens.listed.remote().result(timeout_s=10) == [0, 1, 2]  # without stream=True: one list
    assert _free(tokens)


def test_a_generator_cannot_be_passed_to_another_call(served) -> None:
    endless = DeploymentHandle("Endless", "endless")
    gen = endless.options(stream=True).endless.remote("passed")
    with pytest.raises(TypeError, match="cannot be pickled"):
        endless.how_many.remote(gen).result(timeout_s=10)
    assert next(gen) == 0
    gen.cancel()


def test_an_ingress_streams_a_handles_generator_over_http(served) -> None:
    _, signals, client = served
    key = f"relay-{next(_keys)}"
    with client.stream("GET", "/relay", params={"key": key}) as r:
        chunks = r.iter_raw()
        assert next(chunks) == b"first"  # before the replica has made "last"
        actors.get(signals.send.remote(key), timeout=10)
        assert b"".join(chunks) == b"last"
    wait_until(lambda: f"finished {key}" in _log(signals), timeout=20, what="the generator to finish")
    # a client leaving midway closes the whole chain, down to the Tokens replica's generator
    key = f"relay-leave-{next(_keys)}"
    with client.stream("GET", "/relay", params={"key": key}) as r:
        assert next(r.iter_raw()) == b"first"
    wait_until(lambda: f"closed {key}" in _log(signals), timeout=20, what="the inner generator to be closed")


def test_a_replica_dying_midstream_fails_the_iteration(served) -> None:
    _, signals, _ = served
    handle = serve.run(Crasher.bind(signals), name="crasher", route_prefix=None)
    key = f"crash-{next(_keys)}"
    gen = handle.options(stream=True).one_then_die.remote(key)
    assert next(gen) == "one"
    actors.get(signals.send.remote(key), timeout=10)
    with pytest.raises(actors.ActorDiedError):
        next(gen)
    serve.delete("crasher")


# -- Ray 2.x's documented example (ray.serve.handle.DeploymentResponseGenerator), renamed ----

@serve.deployment
class Streamer:
    def generate_numbers(self, limit: int) -> Generator[int, None, None]:
        for i in range(limit):  # noqa: UP028 (as in the Ray docs)
            yield i


@serve.deployment
class Caller:
    def __init__(self, handle: DeploymentHandle):
        # Set `stream=True` on the handle to enable streaming calls.
        self._streaming_handle = handle.options(stream=True)

    async def __call__(self, limit: int) -> AsyncIterator[int]:
        gen: DeploymentResponseGenerator = self._streaming_handle.generate_numbers.remote(limit)

        # Inside a deployment: use `async for` to enable concurrency.
        async for i in gen:
            yield i


def test_ray_documented_streaming_example(served) -> None:
    app = Caller.bind(Streamer.bind())
    handle: DeploymentHandle = serve.run(app, name="ray-doc", route_prefix=None)

    # Outside a deployment: use a standard `for` loop.
    gen: DeploymentResponseGenerator = handle.options(stream=True).remote(10)
    assert [i for i in gen] == list(range(10))
    serve.delete("ray-doc")
