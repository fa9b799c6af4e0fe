"""Item streams in a replica's StreamRegistry (handle calls with `stream=True`): any values
pass (falsy ones too), a generator's error comes after the items made before it and ends
the stream, a close runs the generator's `finally` and frees the slot once, and the
registry's HTTP streams keep dropping empty chunks. No processes: the registry on a plain loop."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from proxy import StreamBody
from serve._data.streams import StreamRegistry

pytestmark = pytest.mark.timeout(30)


async def _pull_all(reg: StreamRegistry, stream_id: int) -> list:
    items: list = []
    while True:
        batch = await reg.pull(stream_id)
        items.extend(batch.chunks)
        if batch.done:
            return items


def test_falsy_items_pass_and_http_streams_still_drop_empty_chunks() -> None:
    async def main() -> None:
        closed: list[int] = []
        reg = StreamRegistry("D", lambda: closed.append(1))

        async def values() -> AsyncIterator:
            for v in (0, None, "", b"", False, "x"):
                yield v

        items = reg.open(StreamBody(200, (), values()), items=True)
        assert await _pull_all(reg, items.stream_id) == [0, None, "", b"", False, "x"]
        http = reg.open(StreamBody(200, (), values()))
        assert await _pull_all(reg, http.stream_id) == ["x"]
        assert closed == [1, 1] and len(reg) == 0

    asyncio.run(main())


@pytest.mark.parametrize("before", [0, 2])
def test_an_error_follows_the_items_made_before_it(before: int) -> None:
    async def main() -> None:
        closed: list[int] = []
        reg = StreamRegistry("D", lambda: closed.append(1))

        async def failing() -> AsyncIterator:
            for i in range(before):
                yield i
            raise KeyError("broken")

        start = reg.open(StreamBody(200, (), failing()), items=True)
        got: list = []
        with pytest.raises(KeyError, match="broken"):
            while True:
                batch = await reg.pull(start.stream_id)
                got.extend(batch.chunks)
                assert not batch.done
        assert got == list(range(before))
        assert closed == [1]
        # pulled again after that: closed, the error is not raised twice
        assert (await reg.pull(start.stream_id)).done

    asyncio.run(main())


def test_close_runs_the_generators_finally_and_frees_the_slot_once() -> None:
    async def main() -> None:
        closed: list[int] = []
        ran: list[str] = []
        reg = StreamRegistry("D", lambda: closed.append(1))

        async def endless() -> AsyncIterator:
            try:
                while True:
                    yield 1
            finally:
                ran.append("finally")

        start = reg.open(StreamBody(200, (), endless()), items=True)
        assert (await reg.pull(start.stream_id)).chunks
        reg.close(start.stream_id, "cancelled by its caller")
        reg.close(start.stream_id)
        for _ in range(100):
            if ran:
                break
            await asyncio.sleep(0.01)
        assert ran == ["finally"] and closed == [1]
        batch = await reg.pull(start.stream_id)
        assert batch.done and "cancelled by its caller" in (batch.error or "")

    asyncio.run(main())
