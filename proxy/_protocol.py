"""uvicorn's httptools protocol with a header-read deadline and a connection cap.

uvicorn bounds idle keep-alive connections but not a request whose head trickles in: a
client sending its headers a byte at a time would hold the connection (and graceful
shutdown) forever. Here every request's head must be complete within `header_timeout_s`
of its first byte (of the connection opening, for the first request); past it the client
gets 408 and the connection is closed. Other connections are not affected.

A connection opened while `max_connections` are already open is answered 503 and closed
at once, before anything is read: file descriptors stay bounded however many clients
connect (each refusal is counted, and logged at most every few seconds).

A whole response goes out in one write: the handler holds the connection's writes
(`Cork`, in the scope under CORK_KEY) while it sends the response's start and body, and
releases them as one `writelines` (uvicorn writes the head and the body separately: two
send syscalls per response, a tenth of the proxy's CPU time under load).

It also tells a request's handler at once when its client leaves before the response is
complete (`Disconnect`, in the scope under DISCONNECT_KEY), so the request is cancelled
all the way to its replica rather than finishing for nobody.
"""

from __future__ import annotations

import asyncio

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from ._limits import LimitLog

__all__ = ["CORK_KEY", "DISCONNECT_KEY", "Cork", "Disconnect", "protocol_with_header_deadline"]

DISCONNECT_KEY = "zeroserve.disconnect"  # the scope's entry holding its request's `Disconnect`
CORK_KEY = "zeroserve.cork"  # the scope's entry holding its connection's `Cork`


class Cork:
    """A connection's transport whose writes can be held and then sent as one: between
    `hold()` and `release()` writes are kept; `release()` sends them in one `writelines`
    (one syscall). Everything else, and every write while not held, goes to the transport.
    `close()` sends what is held first, so nothing written is lost."""

    __slots__ = ("_held", "_transport")

    def __init__(self, transport: asyncio.Transport) -> None:
        self._transport = transport
        self._held: list[bytes] | None = None

    def hold(self) -> None:
        if self._held is None:
            self._held = []

    def release(self) -> None:
        held, self._held = self._held, None
        if held and not self._transport.is_closing():
            if len(held) == 1:
                self._transport.write(held[0])
            else:
                self._transport.writelines(held)

    def write(self, data: bytes) -> None:
        if self._held is not None:
            self._held.append(data)
        else:
            self._transport.write(data)

    def close(self) -> None:
        self.release()
        self._transport.close()

    def __getattr__(self, name: str) -> object:
        return getattr(self._transport, name)


class Disconnect:
    """A request's client leaving before its response is complete, heard at once (from the
    connection, not by reading `receive`): `task`, if set (the task awaiting the request's
    answer), is cancelled. Shared by every shallow copy of the scope."""

    __slots__ = ("happened", "task")

    def __init__(self) -> None:
        self.happened = False
        self.task: asyncio.Task | None = None

    def fire(self) -> None:
        self.happened = True
        if self.task is not None:
            self.task.cancel()

_BODY = b"request headers not received in time"
_408 = (b"HTTP/1.1 408 Request Timeout\r\ncontent-type: text/plain; charset=utf-8\r\n"
        b"content-length: " + str(len(_BODY)).encode() + b"\r\nconnection: close\r\n\r\n" + _BODY)


_BUSY_BODY = b"too many connections to this proxy; try again later"
_503 = (b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: text/plain; charset=utf-8\r\n"
        b"content-length: " + str(len(_BUSY_BODY)).encode() + b"\r\nconnection: close\r\n\r\n" + _BUSY_BODY)


class _HeaderDeadlineProtocol(HttpToolsProtocol):
    header_timeout_s: float = 30.0
    max_connections: int | None = None
    refused: LimitLog
    slow_heads: LimitLog
    _deadline: asyncio.TimerHandle | None = None
    _head_since: float | None = None  # when the head being read began (None: no head pending)
    _cork: Cork | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        if self.max_connections is not None and len(self.connections) > self.max_connections:
            self.refused.trip(f"over max_connections={self.max_connections}, answered 503")
            transport.write(_503)
            transport.close()  # connection_lost takes it out of the count
            return
        self._cork = Cork(transport)
        self._head_since = self.loop.time()
        self._deadline = self.loop.call_at(self._head_since + self.header_timeout_s, self._expired)

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        # A head that arrived whole (the usual case) costs no timer; one still incomplete
        # after this packet gets one, measured from its first byte.
        if self._head_since is not None and self._deadline is None and not self.transport.is_closing():
            self._deadline = self.loop.call_at(self._head_since + self.header_timeout_s, self._expired)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self.scope[DISCONNECT_KEY] = Disconnect()  # type: ignore[literal-required]
        if self._cork is not None:
            self.scope[CORK_KEY] = self._cork  # type: ignore[literal-required]
        self._head_since = self.loop.time()

    def on_headers_complete(self) -> None:
        self._head_since = None
        self._disarm()
        super().on_headers_complete()
        if self._cork is not None and self.cycle is not None:
            self.cycle.transport = self._cork  # type: ignore[assignment]  # (its writes can be held)

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        cycle = self.cycle
        super().connection_lost(exc)
        if cycle is not None and not cycle.response_complete:
            watch = cycle.scope.get(DISCONNECT_KEY)
            if isinstance(watch, Disconnect):
                watch.fire()

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _expired(self) -> None:
        self._deadline = None
        if self._head_since is None or self.transport.is_closing():
            return
        self.slow_heads.trip(f"request head not complete within {self.header_timeout_s:g} s, answered 408")
        if self.cycle is None or self.cycle.response_complete:  # never inside another response
            self.transport.write(_408)
        self.transport.close()


def protocol_with_header_deadline(header_timeout_s: float, max_connections: int | None = None) -> type[HttpToolsProtocol]:
    """A protocol class for `uvicorn.Config(http=...)` with this deadline and cap (one per server)."""
    return type("HeaderDeadlineProtocol", (_HeaderDeadlineProtocol,),
                {"header_timeout_s": header_timeout_s, "max_connections": max_connections,
                 "refused": LimitLog("proxy refused a connection"),
                 "slow_heads": LimitLog("proxy closed a slow connection")})
