"""A replica's long-lived responses: streamed bodies and websockets, pulled by their caller.

`StreamEndpoints` is a mixin of `ReplicaActor` (which owns `_streams`, `_sockets` and the
replica's context): a streamed HTTP response (or a handle call's `stream=True` items) is
opened in the replica's context and pulled chunk by chunk (`stream_next`) or closed
(`stream_close`) by the caller; a websocket's app messages are pulled (`websocket_pull`) and
the client's pushed (`websocket_push`) by the proxy. All are `@actors.unqueued`: they never
wait behind requests for the slot their stream or session holds.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import actors
from proxy import HTTPChunks, HTTPStreamStart, StreamBody, WebSocketMessages, WebSocketSessions

from .context import ReplicaContext, current_context
from .streams import StreamRegistry

__all__ = ["StreamEndpoints"]


class StreamEndpoints:
    """The stream and websocket methods of `ReplicaActor`."""

    if TYPE_CHECKING:  # set by ReplicaActor
        _context: ReplicaContext
        _streams: StreamRegistry
        _sockets: WebSocketSessions

    # -- streamed HTTP responses: the proxy pulls their chunks from this replica -------------
    def _open_stream(self, body: StreamBody, items: bool = False) -> HTTPStreamStart:
        token = current_context.set(self._context)  # the iterator runs in this replica's context
        try:
            return self._streams.open(body, items)
        finally:
            current_context.reset(token)

    @actors.unqueued  # never behind requests waiting for a slot that this stream holds
    async def stream_next(self, stream_id: int) -> HTTPChunks:
        """The chunks of a streamed response (or the items of a handle's stream) produced
        since the last pull."""
        return await self._streams.pull(stream_id)

    @actors.unqueued
    async def stream_close(self, stream_id: int) -> None:
        """The client left (or cancelled the stream): stop its iterator (its `finally` runs)."""
        self._streams.close(stream_id)

    # -- websockets: the proxy pulls the app's messages and pushes the client's ------------
    @actors.unqueued
    async def websocket_pull(self, session_id: int) -> WebSocketMessages:
        """What a websocket app sent since the last pull (proxy only)."""
        return await self._sockets.pull(session_id)

    @actors.unqueued
    async def websocket_push(self, session_id: int, messages: tuple[dict, ...]) -> None:
        """The client's messages, to the app's `receive` (proxy only)."""
        self._sockets.push(session_id, messages)

    @actors.unqueued
    async def websocket_close(self, session_id: int) -> None:
        """The proxy is done with the session (the client left or the app closed)."""
        self._sockets.close(session_id)
