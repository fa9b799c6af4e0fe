"""Streamed responses, at both ends.

In the replica: a streamed result (a `StreamingResponse`, a generator, an ingress app
sending its body in parts) becomes a `StreamBody`, and a `ChunkPump` drives its chunk
iterator ahead of the proxy (up to `MAX_AHEAD` chunks), handing over everything produced
since the last pull: a fast stream costs one round trip per batch, not per chunk, and a
slow one delivers each chunk as soon as it exists. `close()` stops the iterator (its
`finally` runs) whether it ended, failed, or the client left.

In the proxy: `write_stream` sends the status and headers, then pulls and writes batches
until the end. A client that disconnects stops it at once and closes the stream at its
source. A stream that fails midway cuts the response: the connection closes without the
final chunk, so the client sees an incomplete body rather than a short success.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import time
import traceback
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any, Protocol

from .messages import HTTPChunks

__all__ = ["ChunkPump", "ResponseStream", "StreamBody", "StreamCut", "iterate_in_thread", "write_stream", "MAX_AHEAD"]

log = logging.getLogger(__name__)
MAX_AHEAD = 16  # chunks a stream may produce ahead of the proxy's pulls
_END = object()
_threads: concurrent.futures.ThreadPoolExecutor | None = None


class StreamBody:
    """A response whose body is produced over time (replica side, not sent as is)."""

    __slots__ = ("chunks", "headers", "status")

    def __init__(self, status: int, headers: tuple[tuple[bytes, bytes], ...], chunks: AsyncIterator[bytes]) -> None:
        self.status = status
        self.headers = headers
        self.chunks = chunks


def _executor() -> concurrent.futures.ThreadPoolExecutor:
    global _threads
    if _threads is None:
        _threads = concurrent.futures.ThreadPoolExecutor(max_workers=32, thread_name_prefix="stream-iter")
    return _threads


async def iterate_in_thread(it: Iterator[Any]) -> AsyncIterator[Any]:
    """A sync iterator driven on threads (its `next()` may block) as an async iterator.
    Closing it closes the iterator; if a `next()` is still running then, right after it."""
    pending: concurrent.futures.Future | None = None
    try:
        while True:
            pending = _executor().submit(next, it, _END)
            item = await asyncio.wrap_future(pending)
            pending = None
            if item is _END:
                return
            yield item
    finally:
        close = getattr(it, "close", None)
        if close is not None:
            if pending is not None and not pending.done():
                pending.add_done_callback(lambda _: _quietly(close))
            else:
                _quietly(close)


def _quietly(fn: Callable[[], Any]) -> None:
    try:
        fn()
    except Exception as e:
        log.warning("closing a streamed response's iterator raised %r", e)


class ChunkPump:
    """Replica side: runs one stream's iterator ahead of the pulls, `MAX_AHEAD` at most.
    `keep_empty`: the iterator's items are values, not body bytes: falsy ones are kept too.
    `exception` holds what the iterator raised, if it failed."""

    def __init__(self, chunks: AsyncIterator[bytes], on_close: Callable[[], None], max_ahead: int = MAX_AHEAD,
                 keep_empty: bool = False) -> None:
        self._it = chunks
        self._on_close = on_close
        self._max = max_ahead
        self._keep_empty = keep_empty
        self.exception: BaseException | None = None
        self._buf: list[bytes] = []
        self._ready = asyncio.Event()
        self._room = asyncio.Event()
        self._room.set()
        self._done = False
        self._error: str | None = None
        self._closed = False
        self.pulling = False
        self.pulled = False  # pulled at least once (a proxy holds it)
        self.last_active = time.monotonic()
        self._task = asyncio.get_running_loop().create_task(self._produce())

    async def _produce(self) -> None:
        try:
            async for chunk in self._it:
                if chunk or self._keep_empty:
                    self._buf.append(chunk)
                    self._ready.set()
                while len(self._buf) >= self._max:
                    self._room.clear()
                    await self._room.wait()
        except BaseException as e:
            if self._own_cancellation(e):  # close() (or the loop) stopped this pump
                raise
            # Anything else cuts the response, a CancelledError out of the user's code too
            # (it must not read as a complete body); the traceback goes to this replica's log.
            traceback.print_exc()
            self._error = f"{type(e).__name__}: {e}"
            self.exception = e
        finally:
            self._done = True
            self._ready.set()
            aclose = getattr(self._it, "aclose", None)
            if aclose is not None:  # left suspended at a yield (closed early): run its `finally` now
                try:
                    await aclose()
                except Exception as e:
                    log.warning("closing a streamed response raised %r", e)

    def _own_cancellation(self, exc: BaseException) -> bool:
        if not isinstance(exc, asyncio.CancelledError):
            return False
        if self._closed:
            return True
        cancelling = getattr(self._task, "cancelling", None)  # Python 3.11+
        return cancelling is not None and cancelling() > 0

    async def pull(self) -> HTTPChunks:
        """Everything produced since the last pull, waiting for at least one chunk (or the end)."""
        self.pulling = self.pulled = True
        try:
            while not self._buf and not self._done:
                self._ready.clear()
                await self._ready.wait()
        finally:
            self.pulling = False
            self.last_active = time.monotonic()
        chunks = tuple(self._buf)
        self._buf.clear()
        self._room.set()
        if self._done:
            self.close()
            return HTTPChunks(chunks, True, self._error)
        return HTTPChunks(chunks)

    def close(self) -> None:
        """Stop the stream (idempotent): cancel its iterator where it waits; release its slot."""
        if self._closed:
            return
        self._closed = True
        if not self._task.done():
            self._task.cancel()
        self._on_close()

    @property
    def closed(self) -> bool:
        return self._closed


class ResponseStream(Protocol):
    """Proxy side: a streamed response as `forward` returns it."""

    status: int
    headers: tuple[tuple[bytes, bytes], ...]

    async def pull(self) -> HTTPChunks: ...

    def close(self) -> None: ...  # idempotent; stops the stream at its source


class StreamCut(Exception):
    """Raised out of the ASGI app to cut a response whose stream failed midway (uvicorn
    then closes the connection without the final chunk)."""


class _DropStreamCut(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        return not isinstance(exc, StreamCut)


logging.getLogger("uvicorn.error").addFilter(_DropStreamCut())  # a cut stream is logged once, below


async def _disconnected(receive: Any) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass


async def write_stream(stream: ResponseStream, send: Any, receive: Any,
                       header: tuple[bytes, bytes] | None = None) -> None:
    """Send a streamed response (with `header` added, unless it has one of that name):
    batches as they come, until its end or the client leaves. However it ends (sending the
    start failed, it was cancelled), the stream is closed: its place at the router and its
    slot on the replica are given back."""
    left: asyncio.Future | None = None
    pull: asyncio.Future | None = None
    try:
        headers = list(stream.headers)
        if header is not None and all(k != header[0] for k, _ in headers):
            headers.append(header)
        await send({"type": "http.response.start", "status": stream.status, "headers": headers})
        left = asyncio.ensure_future(_disconnected(receive))
        while True:
            pull = asyncio.ensure_future(stream.pull())
            await asyncio.wait((pull, left), return_when=asyncio.FIRST_COMPLETED)
            if not pull.done():  # the client left: stop pulling; `close` stops the source
                pull.cancel()
                return
            try:
                batch = pull.result()
            except Exception as e:  # the replica died or refused: cut the response
                batch = HTTPChunks((), True, f"{type(e).__name__}: {e}")
            for chunk in batch.chunks:
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
            if batch.done:
                if batch.error is not None:
                    log.warning("a streamed response failed midway and was cut: %s", batch.error)
                    raise StreamCut(batch.error)
                await send({"type": "http.response.body", "body": b"", "more_body": False})
                return
    finally:
        for task in (pull, left):
            if task is not None:
                task.cancel()
        stream.close()
