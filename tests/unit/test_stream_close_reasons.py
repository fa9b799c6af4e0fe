"""A replica tells why a stream is closed when it is pulled after that (the proxy closed
it, it was never pulled within STREAM_FIRST_PULL_S, nobody pulled it for STREAM_IDLE_S,
it ended, or it is unknown), not one guess for all. The replica class runs in-process on a
plain event loop, with its sweep's intervals shortened."""

from __future__ import annotations

import asyncio
import pickle
from collections.abc import AsyncIterator, Callable

import pytest

import serve._data.context as context_module
import serve._data.streams as streams_module
from proxy import StreamBody
from serve._data.replica import ReplicaActor

pytestmark = pytest.mark.timeout(30)


class Streams:
    async def endless(self) -> StreamBody:
        async def chunks() -> AsyncIterator[bytes]:
            yield b"a"
            await asyncio.Event().wait()
        return StreamBody(200, (), chunks())

    async def short(self) -> StreamBody:
        async def chunks() -> AsyncIterator[bytes]:
            yield b"a"
        return StreamBody(200, (), chunks())


@pytest.fixture
def replica(monkeypatch) -> Callable[[], ReplicaActor]:
    monkeypatch.setattr(context_module, "_process_context", None)  # restored after the test
    monkeypatch.setattr(streams_module, "SWEEP_EVERY_S", 0.05)
    monkeypatch.setattr(streams_module, "STREAM_FIRST_PULL_S", 0.3)
    monkeypatch.setattr(streams_module, "STREAM_IDLE_S", 0.6)
    code = pickle.dumps((Streams, (), {}))
    return lambda: ReplicaActor("Streams", "t1", "app", code, None, False, 4)


async def _open(r: ReplicaActor, method: str) -> int:
    return (await r.handle_request(method, (), {})).stream_id


async def _until_closed(r: ReplicaActor, stream_id: int, timeout: float = 10.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while stream_id in r._streams:
        assert asyncio.get_running_loop().time() < deadline, f"stream {stream_id} was not closed in time"
        await asyncio.sleep(0.01)


def test_a_closed_streams_error_says_why_it_was_closed(replica) -> None:
    async def main() -> None:
        r = replica()
        by_proxy = await _open(r, "endless")
        never_pulled = await _open(r, "endless")
        went_idle = await _open(r, "endless")
        ended = await _open(r, "short")
        assert (await r.stream_next(went_idle)).chunks == (b"a",)
        await r.stream_close(by_proxy)
        last = await r.stream_next(ended)
        assert (last.chunks, last.done, last.error) == ((b"a",), True, None)
        await _until_closed(r, never_pulled)
        await _until_closed(r, went_idle)
        assert r._ongoing == 0  # every slot given back

        async def error(stream_id: int) -> str:
            batch = await r.stream_next(stream_id)
            assert batch.done and batch.chunks == ()
            return batch.error

        assert "closed by the proxy" in await error(by_proxy)
        assert "never pulled within 0.3s" in await error(never_pulled)
        assert "not pulled for 0.6s" in await error(went_idle)
        assert "it ended" in await error(ended)
        assert "unknown to this replica" in await error(999)

    asyncio.run(main())
