"""The dashboard's HTTP side: a small HTTP/1.1 server (GET and HEAD, keep-alive) and the
token gate in front of it.

The server runs on the head's event loop; each request is parsed, passed to one handler,
and answered with a `Response`. Bodies are not read (no method here takes one).

The gate: when the dashboard binds anything but 127.0.0.1 / ::1 (on test clusters the
addresses 127.0.0.2... stand for other machines, so they count as exposed too), every
request must carry the cluster token — `Authorization: Bearer T`, an `X-Zeroserve-Token: T`
header, or the `zeroserve_token` cookie. A page opened as `/?token=T` with the right token
sets that cookie (HttpOnly, SameSite=Strict) and redirects to the same page without it.
A missing or wrong token gets 401 and no data. Tokens are compared in constant time.
"""

from __future__ import annotations

import asyncio
import hmac
import ipaddress
import json
import logging
import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, quote, urlsplit

__all__ = ["COOKIE", "Gate", "HttpServer", "Request", "Response", "json_response", "needs_token"]

log = logging.getLogger(__name__)
COOKIE = "zeroserve_token"
_MAX_HEAD = 16 * 1024
_IDLE_S = 30.0
_REASONS = {200: "OK", 303: "See Other", 400: "Bad Request", 401: "Unauthorized", 404: "Not Found",
            405: "Method Not Allowed", 500: "Internal Server Error", 502: "Bad Gateway", 503: "Service Unavailable"}


@dataclass(frozen=True, slots=True)
class Request:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]  # lower-case names

    @property
    def cookies(self) -> dict[str, str]:
        out = {}
        for part in self.headers.get("cookie", "").split(";"):
            k, sep, v = part.strip().partition("=")
            if sep:
                out[k] = v
        return out


@dataclass(frozen=True, slots=True)
class Response:
    status: int
    body: bytes
    content_type: str = "text/plain; charset=utf-8"
    headers: tuple[tuple[str, str], ...] = field(default=())


def json_response(data: Any, status: int = 200) -> Response:
    return Response(status, json.dumps(data, separators=(",", ":"), default=str).encode(), "application/json",
                    (("Cache-Control", "no-store"),))


def needs_token(ip: str) -> bool:
    """Whether a dashboard bound on `ip` asks for the token (anything but 127.0.0.1 / ::1)."""
    try:
        addr = ipaddress.ip_address(ip)
    except ValueError:
        return True
    return addr not in (ipaddress.ip_address("127.0.0.1"), ipaddress.ip_address("::1"))


class Gate:
    """Lets a request through, logs it in (`?token=`), or answers 401."""

    def __init__(self, token: str, required: bool) -> None:
        self._token = token.encode()
        self.required = required

    def _ok(self, given: str | None) -> bool:
        return given is not None and hmac.compare_digest(given.encode(), self._token)

    def check(self, req: Request) -> Response | None:
        """None: let it through; else the answer (a 401, or the login redirect)."""
        if not self.required:
            return None
        auth = req.headers.get("authorization", "")
        given = [auth[7:].strip() if auth.lower().startswith("bearer ") else None,
                 req.headers.get("x-zeroserve-token"), req.cookies.get(COOKIE)]
        if any(self._ok(g) for g in given):
            return None
        if "token" in req.query and not req.path.startswith("/api/") and self._ok(req.query["token"]):
            rest = [(k, v) for k, v in req.query.items() if k != "token"]
            where = req.path + ("?" + "&".join(f"{quote(k)}={quote(v)}" for k, v in rest) if rest else "")
            return Response(303, b"", headers=(("Location", where), ("Set-Cookie", f"{COOKIE}={self._token.decode()}; "
                                                                                 "Path=/; HttpOnly; SameSite=Strict")))
        if req.path.startswith("/api/"):
            return json_response({"error": "this dashboard needs the cluster token: send it as "
                                           "'Authorization: Bearer TOKEN' or open the page as /?token=TOKEN"}, 401)
        page = ("<!doctype html><meta charset=utf-8><title>zeroserve dashboard</title>"
                "<body style='font-family:sans-serif;margin:3em'><h2>zeroserve dashboard</h2>"
                "<p>This dashboard needs the cluster token (the one <code>zeroserve start --head</code> printed).</p>"
                "<form method=get action='/'><input name=token type=password size=40 autofocus> "
                "<button>Open</button></form></body>")
        return Response(401, page.encode(), "text/html; charset=utf-8", (("Cache-Control", "no-store"),))


Handler = Callable[[Request], Awaitable[Response]]


class HttpServer:
    def __init__(self, ip: str, handler: Handler) -> None:
        self.ip = ip
        self._handler = handler
        self._server: asyncio.AbstractServer | None = None
        self.port = 0

    @property
    def url(self) -> str:
        host = f"[{self.ip}]" if ":" in self.ip else self.ip
        return f"http://{host}:{self.port}/" if self._server is not None else ""

    async def start(self, port: int, *, fallback: bool) -> str:
        """Listen on `port`; if it is taken and `fallback`, on a free one. OSError otherwise."""
        try:
            self._server = await asyncio.start_server(self._serve, self.ip, port, reuse_address=True)
        except OSError as e:
            if not fallback:
                raise
            log.warning("dashboard port %s on %s is not free (%s): using a free port", port, self.ip, e.strerror)
            self._server = await asyncio.start_server(self._serve, self.ip, 0, reuse_address=True)
        sock: socket.socket = self._server.sockets[0]
        self.port = sock.getsockname()[1]
        return self.url

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), _IDLE_S)
                if len(head) > _MAX_HEAD:
                    await self._write(writer, Response(400, b"request head too large\n"), "GET", close=True)
                    return
                req = _parse(head)
                if req is None:
                    await self._write(writer, Response(400, b"malformed request\n"), "GET", close=True)
                    return
                close = req.headers.get("connection", "").lower() == "close"
                if req.method not in ("GET", "HEAD"):
                    resp = Response(405, b"only GET\n", headers=(("Allow", "GET, HEAD"),))
                else:
                    try:
                        resp = await self._handler(req)
                    except Exception:
                        log.exception("the dashboard failed on %s", req.path)
                        resp = json_response({"error": "internal error; see the head's log"}, 500)
                await self._write(writer, resp, req.method, close)
                if close:
                    return
        except (asyncio.TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
            pass
        finally:
            writer.close()

    @staticmethod
    async def _write(writer: asyncio.StreamWriter, resp: Response, method: str, close: bool) -> None:
        lines = [f"HTTP/1.1 {resp.status} {_REASONS.get(resp.status, 'Error')}", f"Content-Type: {resp.content_type}",
                 f"Content-Length: {len(resp.body)}", "X-Content-Type-Options: nosniff",
                 f"Connection: {'close' if close else 'keep-alive'}", *(f"{k}: {v}" for k, v in resp.headers)]
        head = ("\r\n".join(lines) + "\r\n\r\n").encode()
        writer.write(head if method == "HEAD" else head + resp.body)
        await writer.drain()

    def close(self) -> None:
        if self._server is not None:
            self._server.close()


def _parse(head: bytes) -> Request | None:
    try:
        text = head.decode("latin-1")
        first, *rest = text.split("\r\n")
        method, target, _version = first.split(" ", 2)
    except ValueError:
        return None
    parts = urlsplit(target)
    headers = {}
    for line in rest:
        k, sep, v = line.partition(":")
        if sep:
            headers[k.strip().lower()] = v.strip()
    return Request(method, parts.path or "/", dict(parse_qsl(parts.query, keep_blank_values=True)), headers)
