"""What crosses from the proxy to a replica and back: one HTTP request, and either one
whole response or, for a streamed one, its start and then batches of chunks pulled by
stream id from the same replica; for a websocket, its start and the messages pulled from
(and pushed to) the replica that runs its app."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["HTTPChunks", "HTTPRequest", "HTTPResponse", "HTTPStreamStart", "WebSocketMessages", "WebSocketStart"]


@dataclass(frozen=True, slots=True)
class HTTPRequest:
    method: str
    path: str  # after the matched route prefix (always starts with "/")
    root_path: str  # the matched route prefix ("" for "/")
    query_string: bytes
    headers: tuple[tuple[bytes, bytes], ...]
    body: bytes
    scheme: str = "http"
    client: tuple[str, int] | None = None
    server: tuple[str, int] | None = None
    http_version: str = "1.1"

    def __reduce__(self):  # positional rebuild: much cheaper than the dataclass state protocol
        return (HTTPRequest, (self.method, self.path, self.root_path, self.query_string, self.headers, self.body,
                              self.scheme, self.client, self.server, self.http_version))


@dataclass(frozen=True, slots=True)
class HTTPResponse:
    status: int
    headers: tuple[tuple[bytes, bytes], ...]
    body: bytes

    def __reduce__(self):
        return (HTTPResponse, (self.status, self.headers, self.body))


@dataclass(frozen=True, slots=True)
class HTTPStreamStart:
    """A streamed response begins: status and headers now; its chunks are pulled from the
    replica that answered, by `stream_id`, until a batch says `done`."""

    status: int
    headers: tuple[tuple[bytes, bytes], ...]
    stream_id: int

    def __reduce__(self):
        return (HTTPStreamStart, (self.status, self.headers, self.stream_id))


@dataclass(frozen=True, slots=True)
class HTTPChunks:
    """The chunks of a streamed response produced since the last pull (at least one unless
    `done`). `done`: the stream has ended (normally, or with `error`: the response is cut)."""

    chunks: tuple[bytes, ...]
    done: bool = False
    error: str | None = None

    def __reduce__(self):
        return (HTTPChunks, (self.chunks, self.done, self.error))


@dataclass(frozen=True, slots=True)
class WebSocketStart:
    """A websocket session opened at a replica: `first` is its app's first message
    (`websocket.accept`, or a `websocket.close` refusing the handshake); the rest are pulled
    from the same replica by `session_id`."""

    session_id: int
    first: dict

    def __reduce__(self):
        return (WebSocketStart, (self.session_id, self.first))


@dataclass(frozen=True, slots=True)
class WebSocketMessages:
    """The ASGI messages a websocket app sent since the last pull. `done`: the app has
    ended (its close, if it sent one, is among these or earlier)."""

    messages: tuple[dict, ...]
    done: bool = False

    def __reduce__(self):
        return (WebSocketMessages, (self.messages, self.done))
