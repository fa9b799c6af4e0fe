"""Inside a replica: an `HTTPRequest` becomes a `starlette.requests.Request`, and whatever
the deployment returns becomes an `HTTPResponse`.

Return mapping: `str` -> text/plain, `bytes` -> application/octet-stream, a Starlette
`Response` as itself (a `StreamingResponse`'s chunks are collected), a generator's items
joined, anything else JSON. (Chunk-by-chunk streaming to the client is not built yet.)
"""

from __future__ import annotations

import inspect
import json
from typing import Any

from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from .messages import HTTPRequest, HTTPResponse

__all__ = ["run_asgi", "to_starlette_request", "to_http_response"]


def _scope(req: HTTPRequest, path: str) -> dict[str, Any]:
    return {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": req.http_version, "method": req.method,
        "scheme": req.scheme, "path": path, "raw_path": path.encode(), "root_path": req.root_path,
        "query_string": req.query_string, "headers": list(req.headers), "client": req.client, "server": req.server,
    }


def _receiver(body: bytes) -> Any:
    """An ASGI `receive` that yields the whole (already read) body once."""
    sent = False

    async def receive() -> dict[str, Any]:
        nonlocal sent
        if sent:
            return {"type": "http.disconnect"}
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    return receive


def to_starlette_request(req: HTTPRequest) -> Request:
    """The request a plain `__call__` gets: `path` relative to the route prefix."""
    return Request(_scope(req, req.path), _receiver(req.body))


def _chunk(item: Any) -> bytes:
    return item if isinstance(item, bytes) else str(item).encode()


async def to_http_response(result: Any) -> HTTPResponse:
    if isinstance(result, StreamingResponse):
        chunks = [_chunk(c) async for c in result.body_iterator] if hasattr(result.body_iterator, "__aiter__") \
            else [_chunk(c) for c in result.body_iterator]
        headers = tuple((k, v) for k, v in result.raw_headers if k.lower() != b"content-length")
        return HTTPResponse(result.status_code, headers, b"".join(chunks))
    if isinstance(result, Response):
        return HTTPResponse(result.status_code, tuple(result.raw_headers), bytes(result.body))
    if isinstance(result, str):
        return HTTPResponse(200, ((b"content-type", b"text/plain; charset=utf-8"),), result.encode())
    if isinstance(result, (bytes, bytearray, memoryview)):
        return HTTPResponse(200, ((b"content-type", b"application/octet-stream"),), bytes(result))
    if inspect.isgenerator(result):
        return HTTPResponse(200, ((b"content-type", b"text/plain; charset=utf-8"),), b"".join(_chunk(c) for c in result))
    if inspect.isasyncgen(result):
        return HTTPResponse(200, ((b"content-type", b"text/plain; charset=utf-8"),),
                            b"".join([_chunk(c) async for c in result]))
    body = json.dumps(result, default=_json_default).encode()
    return HTTPResponse(200, ((b"content-type", b"application/json"),), body)


def _json_default(value: Any) -> Any:
    if hasattr(value, "tolist"):  # numpy arrays and scalars
        return value.tolist()
    if hasattr(value, "__dict__"):
        return value.__dict__
    raise TypeError(f"the deployment returned a {type(value).__name__}, which cannot be sent as JSON; "
                    "return str, bytes, a Starlette Response or JSON-serializable data")


async def run_asgi(app: Any, req: HTTPRequest) -> HTTPResponse:
    """Serve one request with an ASGI app; `path` is the full path, `root_path` the prefix."""
    status = 500
    headers: list = []
    body: list[bytes] = []

    async def send(message: dict[str, Any]) -> None:
        nonlocal status, headers
        if message["type"] == "http.response.start":
            status = message["status"]
            headers = [(bytes(k), bytes(v)) for k, v in message.get("headers", [])]
        elif message["type"] == "http.response.body":
            body.append(bytes(message.get("body", b"")))

    await app(_scope(req, req.root_path + req.path), _receiver(req.body), send)
    headers = [(k, v) for k, v in headers if k.lower() != b"content-length"]
    return HTTPResponse(status, tuple(headers), b"".join(body))
