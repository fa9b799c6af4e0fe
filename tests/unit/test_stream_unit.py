"""proxy/_stream.py on a plain event loop: a `ChunkPump` reports a stream that dies of a
CancelledError as failed (not complete), and `write_stream` closes its stream however it
ends (the start could not be sent, it was cancelled) and stops its pending pull."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from proxy import ChunkPump, HTTPChunks
from proxy._stream import write_stream

pytestmark = pytest.mark.timeout(30)


async def _pull_until_done(pump: ChunkPump) -> tuple[list[bytes], HTTPChunks]:
    chunks: list[bytes] = []
    while True:
        batch = await asyncio.wait_for(pump.pull(), 10)
        chunks += batch.chunks
        if batch.done:
            return chunks, batch


async def _until(cond: Any, timeout: float = 10.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not cond():
        assert asyncio.get_running_loop().time() < deadline, "condition not met in time"
        await asyncio.sleep(0.005)


def test_a_cancelled_error_out_of_the_generator_ends_the_stream_as_failed() -> None:
    async def main() -> None:
        async def gen():
            yield b"part;"
            raise asyncio.CancelledError("the model's own task was cancelled")

        closed: list[bool] = []
        pump = ChunkPump(gen(), lambda: closed.append(True))
        chunks, last = await _pull_until_done(pump)
        assert chunks == [b"part;"]
        assert last.error is not None and "CancelledError" in last.error  # cut, not a short success
        assert closed == [True] and pump.closed

    asyncio.run(main())


def test_an_ordinary_end_and_a_failure_are_still_told_apart() -> None:
    async def main() -> None:
        async def fine():
            yield b"a"
            yield b"b"

        async def broken():
            yield b"a"
            raise ValueError("broke")

        chunks, last = await _pull_until_done(ChunkPump(fine(), lambda: None))
        assert (b"".join(chunks), last.error) == (b"ab", None)
        _, last = await _pull_until_done(ChunkPump(broken(), lambda: None))
        assert last.error == "ValueError: broke"

    asyncio.run(main())


def test_closing_the_pump_stops_the_generator_without_calling_it_a_failure() -> None:
    async def main() -> None:
        stopped = asyncio.Event()
        waiting = asyncio.Event()

        async def gen():
            try:
                yield b"first"
                waiting.set()
                await asyncio.Event().wait()  # forever
                yield b"never"
            finally:
                stopped.set()

        closed: list[bool] = []
        pump = ChunkPump(gen(), lambda: closed.append(True))
        assert (await asyncio.wait_for(pump.pull(), 10)).chunks == (b"first",)
        await asyncio.wait_for(waiting.wait(), 10)
        pump.close()
        await asyncio.wait_for(stopped.wait(), 10)  # its `finally` ran
        assert closed == [True]
        assert pump._error is None  # the pump's own cancellation is not recorded as the stream's failure

    asyncio.run(main())


class _FakeStream:
    """A ResponseStream whose pulls block until the test says so; it records close()."""

    status = 200
    headers = ((b"content-type", b"text/plain"),)

    def __init__(self) -> None:
        self.closes = 0
        self.pulls_started = 0
        self.pulls_cancelled = 0
        self.pulling = asyncio.Event()

    async def pull(self) -> HTTPChunks:
        self.pulls_started += 1
        self.pulling.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            self.pulls_cancelled += 1
            raise
        return HTTPChunks((), True)

    def close(self) -> None:
        self.closes += 1


async def _never_disconnects() -> dict[str, Any]:
    await asyncio.Event().wait()
    return {"type": "http.disconnect"}


def test_a_failing_start_send_still_closes_the_stream() -> None:
    async def main() -> None:
        stream = _FakeStream()

        async def send(message: dict) -> None:
            raise OSError("the client is gone")

        with pytest.raises(OSError):
            await write_stream(stream, send, _never_disconnects)
        assert stream.closes == 1  # its router place and replica slot are given back
        assert stream.pulls_started == 0

    asyncio.run(main())


def test_cancelled_while_sending_the_start_still_closes_the_stream() -> None:
    async def main() -> None:
        stream = _FakeStream()
        sending = asyncio.Event()

        async def send(message: dict) -> None:
            sending.set()
            await asyncio.Event().wait()  # a client that does not read

        task = asyncio.ensure_future(write_stream(stream, send, _never_disconnects))
        await asyncio.wait_for(sending.wait(), 10)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert stream.closes == 1

    asyncio.run(main())


def test_cancelled_while_pulling_cancels_the_pull_and_closes_the_stream() -> None:
    async def main() -> None:
        stream = _FakeStream()
        sent: list[dict] = []

        async def send(message: dict) -> None:
            sent.append(message)

        task = asyncio.ensure_future(write_stream(stream, send, _never_disconnects))
        await asyncio.wait_for(stream.pulling.wait(), 10)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert stream.closes == 1
        await _until(lambda: stream.pulls_cancelled == 1)  # no pull left running against the replica
        assert [m["type"] for m in sent] == ["http.response.start"]

    asyncio.run(main())
