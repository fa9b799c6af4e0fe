"""Inside a replica: an `HTTPRequest` becomes a `starlette.requests.Request`, and whatever
the deployment returns becomes an `HTTPResponse`, or a `StreamBody` to stream.

Return mapping: `str` -> text/plain, `bytes` -> application/octet-stream, a Starlette
`Response` as itself, a `StreamingResponse` streamed chunk by chunk (its headers as given),
a generator (sync or async) streamed as text/plain, anything else JSON. An ASGI app
(`@serve.ingress`) whose body comes in one message is one `HTTPResponse`; one that sends
its body in parts (`more_body`) is streamed as it sends them.
"""

from __future__ import annotations

import asyncio
import collections
import inspect
import json
import logging
from typing import Any

from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from ._stream import MAX_AHEAD, StreamBody, iterate_in_thread
from .messages import HTTPRequest, HTTPResponse

__all__ = ["run_asgi", "to_starlette_request", "to_http_response"]

log = logging.getLogger(__name__)
_TEXT = ((b"content-type", b"text/plain; charset=utf-8"),)


def _scope(req: HTTPRequest, path: str) -> dict[str, Any]:
    return {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": req.http_version, "method": req.method,
        "scheme": req.scheme, "path": path, "raw_path": path.encode(), "root_path": req.root_path,
        "query_string": req.query_string, "headers": list(req.headers), "client": req.client, "server": req.server,
    }


def _receiver(body: bytes) -> Any:
    """An ASGI `receive` that yields the whole (already read) body once, then waits until
    the app is done (a streaming app listening for a disconnect must not be told one: if
    the client leaves, the proxy closes the stream and the app is cancelled)."""
    sent = False

    async def receive() -> dict[str, Any]:
        nonlocal sent
        if sent:
            await asyncio.get_running_loop().create_future()  # never set: ends by cancellation
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    return receive


def to_starlette_request(req: HTTPRequest) -> Request:
    """The request a plain `__call__` gets: `path` relative to the route prefix."""
    return Request(_scope(req, req.path), _receiver(req.body))


def _chunk(item: Any) -> bytes:
    return item if isinstance(item, bytes) else str(item).encode()


def whole_response(status: int, headers: tuple[tuple[bytes, bytes], ...], body: bytes) -> HTTPResponse:
    """A whole response, with its content-length (so it is not sent chunked)."""
    if status >= 200 and status not in (204, 304):
        headers = (*headers, (b"content-length", b"%d" % len(body)))
    return HTTPResponse(status, headers, body)


async def _encoded(chunks: Any) -> Any:
    async for item in chunks:
        yield _chunk(item)


def _stream_of(iterable: Any) -> Any:
    """An async iterator of bytes over a sync or async iterable (sync ones on threads)."""
    return _encoded(iterable if hasattr(iterable, "__aiter__") else iterate_in_thread(iter(iterable)))


async def to_http_response(result: Any) -> HTTPResponse | StreamBody:
    if isinstance(result, StreamingResponse):
        headers = tuple((k, v) for k, v in result.raw_headers if k.lower() != b"content-length")
        return StreamBody(result.status_code, headers, _stream_of(result.body_iterator))
    if isinstance(result, Response):
        return HTTPResponse(result.status_code, tuple(result.raw_headers), bytes(result.body))
    if isinstance(result, str):
        return whole_response(200, _TEXT, result.encode())
    if isinstance(result, (bytes, bytearray, memoryview)):
        return whole_response(200, ((b"content-type", b"application/octet-stream"),), bytes(result))
    if inspect.isgenerator(result) or inspect.isasyncgen(result):
        return StreamBody(200, _TEXT, _stream_of(result))
    body = json.dumps(result, default=_json_default).encode()
    return whole_response(200, ((b"content-type", b"application/json"),), body)


def _json_default(value: Any) -> Any:
    if hasattr(value, "tolist"):  # numpy arrays and scalars
        return value.tolist()
    if hasattr(value, "__dict__"):
        return value.__dict__
    raise TypeError(f"the deployment returned a {type(value).__name__}, which cannot be sent as JSON; "
                    "return str, bytes, a Starlette Response or JSON-serializable data")


class _Parts:
    """The body parts an ASGI app sends after its first, as an async iterator (bounded:
    the app's `send` waits while MAX_AHEAD parts are unread)."""

    def __init__(self) -> None:
        self.parts: collections.deque[bytes] = collections.deque()
        self.changed = asyncio.Event()
        self.ended = False
        self.error: BaseException | None = None

    async def put(self, part: bytes) -> None:
        while len(self.parts) >= MAX_AHEAD and not self.ended:
            self.changed.clear()
            await self.changed.wait()
        self.parts.append(part)
        self.changed.set()

    def end(self, error: BaseException | None = None) -> None:
        self.ended = True
        self.error = error
        self.changed.set()

    async def __aiter__(self) -> Any:
        while True:
            while self.parts:
                part = self.parts.popleft()
                self.changed.set()  # room for the app
                yield part
            if self.ended:
                if self.error is not None:
                    raise self.error
                return
            self.changed.clear()
            await self.changed.wait()


async def run_asgi(app: Any, req: HTTPRequest) -> HTTPResponse | StreamBody:
    """Serve one request with an ASGI app; `path` is the full path, `root_path` the prefix.
    The app runs as its own task: once its first body message is sent, the response is
    returned (whole, or as a stream of the parts still to come) while the app finishes."""
    loop = asyncio.get_running_loop()
    head: asyncio.Future = loop.create_future()
    start: dict[str, Any] = {"status": 500, "headers": []}
    parts = _Parts()

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            start["status"] = message["status"]
            start["headers"] = [(bytes(k), bytes(v)) for k, v in message.get("headers", [])]
        elif message["type"] == "http.response.body":
            body, more = bytes(message.get("body", b"")), message.get("more_body", False)
            if not head.done():
                head.set_result((body, more))
            elif body:
                await parts.put(body)
            if not more:
                parts.end()

    def finished(task: asyncio.Task) -> None:
        error = None if task.cancelled() else task.exception()
        if not head.done():
            if error is not None:
                head.set_exception(error)
            else:
                head.set_result((b"", False))  # the app sent no body
        elif error is not None:
            log.error("the ASGI app failed after its response started", exc_info=error)
        if error is None and task.cancelled():
            error = RuntimeError("the ASGI app was cancelled before its response ended")
        parts.end(error)

    task = loop.create_task(app(_scope(req, req.root_path + req.path), _receiver(req.body), send))
    task.add_done_callback(finished)
    try:
        body, more = await head
    except asyncio.CancelledError:
        task.cancel()
        raise
    headers = tuple((k, v) for k, v in start["headers"] if k.lower() != b"content-length")
    if not more:
        return whole_response(start["status"], headers, body)
    return StreamBody(start["status"], headers, _app_parts(body, parts, task))


async def _app_parts(first: bytes, parts: _Parts, task: asyncio.Task) -> Any:
    try:
        if first:
            yield first
        async for part in parts:
            yield part
    finally:
        if not task.done():  # closed early (the client left): stop the app
            task.cancel()
