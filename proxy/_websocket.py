"""WebSockets through the proxy, at both ends: the ASGI app runs in a replica, the client's
connection ends at the proxy, and messages cross between them in batches, both ways at once.

In the replica: a `WebSocketSession` runs the app (`@serve.ingress`, an `@app.websocket`
route) on a websocket scope. Its `receive` yields `websocket.connect`, then what the proxy
pushes (`push`: the client's messages, in order; a `websocket.disconnect` with the client's
close code when it leaves). What the app sends is buffered (at most MAX_AHEAD messages: its
`send` waits beyond) and handed over by `pull`, everything since the last pull. `first()`
is the app's first message: `websocket.accept` (with subprotocol and headers), or a
`websocket.close` that refuses the handshake (also what an app that fails before accepting
gives: code 1011, its traceback in the replica's log). An app that returns after accepting
without closing closes with 1000; one that fails after accepting closes with 1011.
`WebSocketSessions` keeps a replica's sessions by id, from the handshake until its last
messages are pulled or the proxy closes it (the request slot is given back when the app
ends); one whose proxy stopped pulling for IDLE_S is closed (the proxy always has a pull
waiting while its client is connected).

In the proxy: `bridge` sends the first message to the client; after an accept, it pumps
the client's messages to the replica and the app's to the client until either side closes.
Close codes travel both ways unchanged. However it ends, the session is closed at the
replica (an app still running after the client left gets its `websocket.disconnect`, then
is cancelled after CLOSE_GRACE_S).
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections.abc import Callable
from typing import Any, Protocol

from .messages import HTTPRequest, WebSocketMessages, WebSocketStart

__all__ = ["WebSocketSession", "WebSocketSessions", "WebSocketStream", "bridge"]

log = logging.getLogger(__name__)
MAX_AHEAD = 64  # messages an app may send ahead of the proxy's pulls
CLOSE_GRACE_S = 5.0  # an app told of the client's leaving has this long to end by itself
IDLE_S = 120.0  # a session no proxy pulls from for this long has lost its proxy
SWEEP_EVERY_S = 10.0
_ERROR_CLOSE = {"type": "websocket.close", "code": 1011, "reason": ""}
_NORMAL_CLOSE = {"type": "websocket.close", "code": 1000, "reason": ""}


def websocket_scope(req: HTTPRequest) -> dict[str, Any]:
    """The ASGI websocket scope for a handshake the proxy forwarded (path: the full path)."""
    path = req.root_path + req.path
    protocols = [p.strip() for k, v in req.headers if k == b"sec-websocket-protocol"
                 for p in v.decode("latin-1").split(",") if p.strip()]
    return {"type": "websocket", "asgi": {"version": "3.0"}, "http_version": req.http_version,
            "scheme": req.scheme, "path": path, "raw_path": path.encode(), "root_path": req.root_path,
            "query_string": req.query_string, "headers": list(req.headers), "client": req.client,
            "server": req.server, "subprotocols": protocols}


class WebSocketSession:
    """Replica side: one connection's app (see the module docstring)."""

    def __init__(self, app: Any, req: HTTPRequest) -> None:
        self._inbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self._out: list[dict[str, Any]] = []
        self._changed = asyncio.Event()
        self._connected = False
        self._closed_by_app = False
        self._told_disconnect = False
        self.done = False
        self.pulling = False
        self.last_active = time.monotonic()
        self._task = asyncio.get_running_loop().create_task(app(websocket_scope(req), self._receive, self._send))
        self._task.add_done_callback(self._finished)

    async def _receive(self) -> dict[str, Any]:
        if not self._connected:
            self._connected = True
            return {"type": "websocket.connect"}
        return await self._inbox.get()

    async def _send(self, message: dict[str, Any]) -> None:
        if self._closed_by_app:
            raise RuntimeError(f"the websocket is closed; cannot send {message.get('type')!r}")
        while len(self._out) >= MAX_AHEAD and not self.done:
            self._changed.clear()
            await self._changed.wait()
        if message["type"] == "websocket.close":
            self._closed_by_app = True
            message = {"type": "websocket.close", "code": message.get("code", 1000), "reason": message.get("reason") or ""}
        self._out.append(message)
        self._changed.set()

    def _finished(self, task: asyncio.Task) -> None:
        error = None if task.cancelled() else task.exception()
        if error is not None:
            log.error("the websocket app failed", exc_info=error)
        if not self._closed_by_app:
            self._closed_by_app = True
            self._out.append(_ERROR_CLOSE if error is not None else _NORMAL_CLOSE)
        self.done = True
        self._changed.set()

    async def first(self) -> dict[str, Any]:
        """The app's first message: accept, or close (the handshake refused)."""
        while not self._out:
            self._changed.clear()
            await self._changed.wait()
        return self._out.pop(0)

    async def pull(self) -> WebSocketMessages:
        """What the app sent since the last pull, waiting for at least one message (or the end)."""
        self.pulling = True
        try:
            while not self._out and not self.done:
                self._changed.clear()
                await self._changed.wait()
        finally:
            self.pulling = False
            self.last_active = time.monotonic()
        messages, self._out = tuple(self._out), []
        self._changed.set()  # room for the app
        return WebSocketMessages(messages, self.done and not self._out)

    def push(self, messages: tuple[dict[str, Any], ...]) -> None:
        """The client's messages, in order (a `websocket.disconnect` last if it left)."""
        self.last_active = time.monotonic()
        for m in messages:
            if m.get("type") == "websocket.disconnect":
                self._told_disconnect = True
            self._inbox.put_nowait(m)

    def close(self) -> None:
        """The proxy is done with it: the app hears of the disconnect (if it has not), and is
        cancelled if it has not ended within CLOSE_GRACE_S."""
        if self._task.done():
            return
        if not self._told_disconnect:
            self.push(({"type": "websocket.disconnect", "code": 1006},))
        asyncio.get_running_loop().call_later(CLOSE_GRACE_S, self._task.cancel)

    def on_done(self, fn: Callable[[], None]) -> None:
        self._task.add_done_callback(lambda _: fn())


class WebSocketSessions:
    """A replica's open sessions by id; `on_closed()` once per session when its app ends."""

    def __init__(self, on_closed: Callable[[], None]) -> None:
        self._on_closed = on_closed
        self._sessions: dict[int, WebSocketSession] = {}
        self._ids = itertools.count(1)
        self._sweeper: asyncio.Task | None = None

    def __len__(self) -> int:
        return len(self._sessions)

    async def open(self, session: WebSocketSession) -> WebSocketStart:
        session_id = next(self._ids)
        self._sessions[session_id] = session
        session.on_done(lambda: self._ended(session_id))
        if self._sweeper is None or self._sweeper.done():
            self._sweeper = asyncio.get_running_loop().create_task(self._sweep())
        return WebSocketStart(session_id, await session.first())

    def _ended(self, session_id: int) -> None:
        """Its app ended: the slot is free; the session stays until its last messages are pulled."""
        self._on_closed()

    async def pull(self, session_id: int) -> WebSocketMessages:
        session = self._sessions.get(session_id)
        if session is None:
            return WebSocketMessages((_NORMAL_CLOSE,), True)
        batch = await session.pull()
        if batch.done:
            self._sessions.pop(session_id, None)
        return batch

    def push(self, session_id: int, messages: tuple[dict[str, Any], ...]) -> None:
        session = self._sessions.get(session_id)
        if session is not None:
            session.push(messages)

    def close(self, session_id: int) -> None:
        session = self._sessions.pop(session_id, None)
        if session is not None:
            session.close()

    async def _sweep(self) -> None:
        while self._sessions:
            await asyncio.sleep(SWEEP_EVERY_S)
            now = time.monotonic()
            for session_id, s in list(self._sessions.items()):
                if not s.pulling and now - s.last_active > IDLE_S:
                    log.warning("closing websocket session %d: not pulled for %ss (its proxy is gone?)",
                                session_id, IDLE_S)
                    self.close(session_id)


class WebSocketStream(Protocol):
    """Proxy side: a websocket session at a replica, as `forward_websocket` returns it."""

    first: dict[str, Any]

    async def pull(self) -> WebSocketMessages: ...

    async def push(self, messages: tuple[dict[str, Any], ...]) -> None: ...

    def close(self) -> None: ...  # idempotent; ends the session at the replica


async def _client_to_app(receive: Any, stream: WebSocketStream) -> None:
    while True:
        message = await receive()
        kind = message["type"]
        if kind == "websocket.receive":
            await stream.push(({"type": kind, "bytes": message.get("bytes"), "text": message.get("text")},))
        elif kind == "websocket.disconnect":
            await stream.push(({"type": kind, "code": message.get("code", 1005), "reason": message.get("reason")},))
            return


async def bridge(stream: WebSocketStream, send: Any, receive: Any) -> None:
    """Proxy side: the session's first message to the client, then both directions until
    either side closes. The stream is closed however this ends."""
    up: asyncio.Future | None = None
    pull: asyncio.Future | None = None
    try:
        await send(stream.first)
        if stream.first["type"] != "websocket.accept":
            return
        up = asyncio.ensure_future(_client_to_app(receive, stream))
        while True:
            pull = asyncio.ensure_future(stream.pull())
            await asyncio.wait((pull, up), return_when=asyncio.FIRST_COMPLETED)
            if not pull.done():  # the client left (its disconnect went to the app)
                return
            try:
                batch = pull.result()
            except Exception as e:  # the replica died or refused: close as a server error
                log.warning("a websocket session failed at its replica: %s: %s", type(e).__name__, e)
                batch = WebSocketMessages((_ERROR_CLOSE,), True)
            for message in batch.messages:
                await send(message)
                if message["type"] == "websocket.close":
                    return
            if batch.done:
                await send(_NORMAL_CLOSE)
                return
    except OSError:  # the client is gone (uvicorn's ClientDisconnected): nothing to send to
        return
    finally:
        for task in (pull, up):
            if task is not None:
                task.cancel()
        stream.close()
