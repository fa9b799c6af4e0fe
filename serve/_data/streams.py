"""A replica's streams, open until their caller has pulled them to the end: streamed HTTP
responses, and the items of handle calls made with `stream=True`.

A streamed response (a StreamingResponse, a generator, an ingress app sending its body in
parts) is opened here with an id; its proxy pulls chunks by that id (`pull`) or closes it
when its client leaves (`close`). `on_closed()` is called once per stream however it ends,
so the replica frees the request slot the stream held.

An item stream (`open(..., items=True)`: a generator method called through a handle with
`stream=True`) is pulled the same way, by the handle's `DeploymentResponseGenerator`; its
items are any values (falsy ones too). If its generator raises, the pull that reaches the
failure returns the items made before it, and the next pull raises the generator's
exception itself (the caller gets it at the item where it happened).

Invariants:
- a stream nobody pulls for STREAM_IDLE_S (or never pulled within STREAM_FIRST_PULL_S of
  its start: its proxy gave up on it) is closed by a sweeper that runs only while streams
  are open;
- a pull of a stream that is gone says why it was closed (the latest CLOSED_KEPT reasons
  are kept).
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections.abc import Callable

from proxy import ChunkPump, HTTPChunks, HTTPStreamStart, StreamBody

__all__ = ["STREAM_FIRST_PULL_S", "STREAM_IDLE_S", "StreamRegistry"]

log = logging.getLogger(__name__)
STREAM_IDLE_S = 300.0  # a stream not pulled for this long has lost its proxy: closed
STREAM_FIRST_PULL_S = 30.0  # a stream never pulled this long after it opened: its caller gave up
SWEEP_EVERY_S = 10.0
CLOSED_KEPT = 1024  # why the latest streams were closed, for a late pull's error message


class StreamRegistry:
    def __init__(self, owner: str, on_closed: Callable[[], None]) -> None:
        self._owner = owner  # named in messages (the deployment)
        self._on_closed = on_closed
        self._streams: dict[int, ChunkPump] = {}
        self._closed_why: dict[int, str] = {}  # stream id -> why it was closed (oldest first out)
        self._item_streams: set[int] = set()
        self._failures: dict[int, BaseException] = {}  # item streams: the error the next pull raises
        self._ids = itertools.count(1)
        self._sweeper: asyncio.Task | None = None

    def __len__(self) -> int:
        return len(self._streams)

    def __contains__(self, stream_id: int) -> bool:
        return stream_id in self._streams

    def open(self, body: StreamBody, items: bool = False) -> HTTPStreamStart:
        """Start pumping `body`'s chunks (its iterator runs in the caller's context); the start
        to send back. `items`: a handle's item stream (see the module docstring)."""
        stream_id = next(self._ids)
        self._streams[stream_id] = ChunkPump(body.chunks, lambda: self._ended(stream_id), keep_empty=items)
        if items:
            self._item_streams.add(stream_id)
        if self._sweeper is None or self._sweeper.done():
            self._sweeper = asyncio.get_running_loop().create_task(self._sweep())
        return HTTPStreamStart(body.status, body.headers, stream_id)

    async def pull(self, stream_id: int) -> HTTPChunks:
        """The chunks produced since the last pull (done=True with the reason once closed)."""
        pump = self._streams.get(stream_id)
        if pump is None:
            failure = self._failures.pop(stream_id, None)
            if failure is not None:
                raise failure
            why = self._closed_why.get(stream_id, "unknown to this replica (restarted since?)")
            return HTTPChunks((), True, f"stream {stream_id} of {self._owner} is closed: {why}")
        if stream_id not in self._item_streams:
            return await pump.pull()
        batch = await pump.pull()
        if batch.error is None or pump.exception is None:
            return batch
        if not batch.chunks:
            raise pump.exception
        self._failures[stream_id] = pump.exception  # raised by the next pull, after these items
        while len(self._failures) > CLOSED_KEPT:
            del self._failures[next(iter(self._failures))]
        return HTTPChunks(batch.chunks)

    def close(self, stream_id: int, why: str = "closed by the proxy (its client left)") -> None:
        """Stop the stream's iterator (its `finally` runs)."""
        pump = self._streams.get(stream_id)
        if pump is not None and not pump.closed:
            self._closed_why.setdefault(stream_id, why)
            pump.close()

    def _ended(self, stream_id: int) -> None:
        self._item_streams.discard(stream_id)
        if self._streams.pop(stream_id, None) is not None:
            self._closed_why.setdefault(stream_id, "it ended (its last chunks were already pulled)")
            while len(self._closed_why) > CLOSED_KEPT:
                del self._closed_why[next(iter(self._closed_why))]
            self._on_closed()

    async def _sweep(self) -> None:
        """Close streams nobody pulls any more (their proxy died), so they cannot leak."""
        while self._streams:
            await asyncio.sleep(SWEEP_EVERY_S)
            self.sweep(time.monotonic())

    def sweep(self, now: float) -> None:
        for stream_id, pump in list(self._streams.items()):
            # (never pulled: the proxy gave up on it as it started, e.g. its 504 crossed the start)
            idle_s = STREAM_IDLE_S if pump.pulled else STREAM_FIRST_PULL_S
            if not pump.pulling and now - pump.last_active > idle_s:
                why = (f"not pulled for {idle_s}s (its proxy is gone?)" if pump.pulled else
                       f"never pulled within {idle_s}s of its start (its proxy gave up on it?)")
                log.warning("closing a streamed response of %s: %s", self._owner, why)
                self.close(stream_id, why)
