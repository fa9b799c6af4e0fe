"""The HTTP server of a proxy: uvicorn with a lean ASGI app in front of a route table.

Per request: match the compiled prefix trie, read the body (refusing more than
`max_body_bytes` with 413 before buffering it all), hand an `HTTPRequest` to `forward`
(the serving layer's router), and write the `HTTPResponse` back, or stream a
`ResponseStream` (see `_stream`; `request_timeout_s` bounds the wait for its start). Built-ins:
`GET /-/routes` and `GET /-/healthz` (503 while draining). Errors map to status codes;
the server never crashes on a request: 404 unknown route, 500 user error, 503
back-pressure, 504 past `request_timeout_s`, 431 for headers over MAX_HEADER_BYTES, 408 for
a request head not complete within `header_timeout_s`, or a body not complete within
`body_timeout_s` or idle between chunks for `body_idle_timeout_s` (slow clients, see `_body`;
the connection is closed), 503 and close for a connection over `max_connections`; uvicorn itself answers a
malformed request with 400. A client that disconnects before its answer cancels the
request at its replica (logged and counted as 499). `middlewares` and `root_path` wrap the app
(see `_asgi`): a request's `root_path` is the proxy's root_path plus the matched prefix.

Every request gets an id (see `_observe`), sent back in its `X-Request-ID` response header
whatever the status, and passed to `forward`; an `observer` hears of each request's end
(status, route, latency) for metrics and access logs, and of its start when it traces.
`in_flight` counts the requests being handled (and open websockets).

WebSockets (`forward_websocket`): the handshake goes to the route's replica, whose app
accepts or refuses it; then messages flow both ways until either side closes (`_websocket`).
"""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

import uvicorn

from ._asgi import BUILTIN_PATHS, build_app
from ._body import BODY_IDLE_S, CUT_SHORT, SLOW_BODY, TOO_SLOW, BodyReader
from ._codec import whole_response
from ._limits import LimitLog
from ._observe import REQUEST_ID_HEADER, RequestObserver, request_id_of, set_current
from ._protocol import CORK_KEY, DISCONNECT_KEY, Disconnect, protocol_with_header_deadline
from ._routes import Route, RouteTable
from ._stream import ResponseStream, write_stream
from ._websocket import WebSocketStream, bridge
from .messages import HTTPRequest, HTTPResponse

__all__ = ["ProxyServer"]

log = logging.getLogger(__name__)
MAX_HEADER_BYTES = 64 * 1024
HEADER_TIMEOUT_S = 30.0  # a request's head must arrive within this (408 and close past it)
Forward = Callable[[str, HTTPRequest, str], Awaitable["HTTPResponse | ResponseStream"]]
ForwardWebSocket = Callable[[str, HTTPRequest, str], Awaitable[WebSocketStream]]


class _Server(uvicorn.Server):
    """uvicorn inside a process that owns its signals: install none."""

    def install_signal_handlers(self) -> None:
        pass

    def capture_signals(self):  # uvicorn >= 0.29
        import contextlib

        return contextlib.nullcontext()


def _text(status: int, text: str) -> HTTPResponse:
    return whole_response(status, ((b"content-type", b"text/plain; charset=utf-8"),), text.encode())


_CLIENT_LEFT = _text(499, "the client closed the connection before the response")  # (nginx's 499)


class ProxyServer:
    def __init__(self, host: str, port: int, forward: Forward, *, request_timeout_s: float | None = None,
                 max_body_bytes: int = 100 * 1024 * 1024, keep_alive_timeout_s: float = 5,
                 classify: Callable[[BaseException], int] | None = None, middlewares: Iterable[Any] = (),
                 root_path: str = "", header_timeout_s: float = HEADER_TIMEOUT_S,
                 body_timeout_s: float = 120.0, body_idle_timeout_s: float = BODY_IDLE_S,
                 max_connections: int | None = None,
                 observer: RequestObserver | None = None, forward_websocket: ForwardWebSocket | None = None,
                 reuse_port: bool = False) -> None:
        self.host = host
        self._reuse_port = reuse_port  # share the port with other processes (SO_REUSEPORT)
        self._forward_ws = forward_websocket
        self.port = port
        self._forward = forward
        self._timeout = request_timeout_s
        self._max_body = max_body_bytes
        self._body_timeout = body_timeout_s
        self._body_idle = body_idle_timeout_s
        self._slow_bodies = LimitLog("proxy closed a connection whose request body was too slow")
        self._classify = classify or (lambda e: 500)
        self._observer = observer
        self.table = RouteTable.compile([])
        self.routes_known = False  # no route table yet: 503, not 404 (a restarted proxy is not "not found")
        self.draining = False
        self.in_flight = 0
        # the app behind root_path and middlewares
        asgi = build_app(self.app, middlewares, root_path, outside=self._outside_root_path)
        # log_config=None: uvicorn leaves the process's logging alone (its default config
        # stops "uvicorn.*" records from reaching the root logger, so a proxy's log file
        # would miss its server's errors); log_level still quiets its loggers below WARNING.
        config = uvicorn.Config(asgi, host=host, port=port, lifespan="off", log_level="warning",
                                access_log=False, log_config=None,
                                # seconds, as a float at run time too (the annotation says int)
                                timeout_keep_alive=keep_alive_timeout_s,  # type: ignore[arg-type]
                                http=protocol_with_header_deadline(header_timeout_s, max_connections),
                                interface="asgi3", proxy_headers=False)
        self._server = _Server(config)
        self._task: asyncio.Task | None = None

    def set_routes(self, routes: dict[str, str], names: dict[str, str] | None = None) -> None:
        """Swap in a new compiled table (atomically: one assignment). `names`: how
        GET /-/routes shows each target (default: the target)."""
        names = names or {}
        self.table = RouteTable.compile(Route(prefix, target, names.get(target, "")) for prefix, target in routes.items())
        self.routes_known = True

    async def start(self) -> None:
        # Bind and listen here and hand uvicorn the socket: a port in use is an OSError at
        # this call (uvicorn answers a bind failure of its own with sys.exit, which would end
        # the process), and no other server can take the port between a check and the bind.
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if self._reuse_port:  # the kernel spreads connections over every socket bound so
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            sock.bind((self.host, self.port))
            sock.listen(self._server.config.backlog)
        except OSError:
            sock.close()
            raise
        self.port = sock.getsockname()[1]
        self._task = asyncio.get_running_loop().create_task(self._server.serve(sockets=[sock]))
        while not self._server.started:
            if self._task.done():
                self._task.result()  # raises the bind error
                raise OSError(f"the HTTP server on {self.host}:{self.port} stopped at start")
            await asyncio.sleep(0.01)

    async def stop(self, timeout_s: float | None = None) -> None:
        """Stop accepting connections; wait for the requests in flight (up to `timeout_s`,
        then they are cancelled). /-/healthz answers 503 from the moment `draining` is set
        (before this, so load balancers stop sending here while it still serves)."""
        self.draining = True
        self._server.config.timeout_graceful_shutdown = timeout_s  # type: ignore[assignment]  # (as above)
        self._server.should_exit = True
        if self._task is not None:
            await asyncio.gather(self._task, return_exceptions=True)

    # -- the ASGI app ------------------------------------------------------------------
    async def app(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            await self._handle(scope, receive, send, None)
        elif scope["type"] == "websocket":
            await self._websocket(scope, receive, send)

    async def _websocket(self, scope: dict, receive: Any, send: Any) -> None:
        """A websocket: its handshake goes to the route's replica (whose app accepts or
        refuses it), then messages flow both ways (`_websocket.bridge`). Refused here (HTTP
        403 to the client) with no such route, while draining, or past `request_timeout_s`."""
        started = time.perf_counter()
        request_id = request_id_of(scope.get("headers", ()))
        set_current(request_id)
        match = self.table.match(scope["path"])
        if match is None or self.draining or self._forward_ws is None:
            await send({"type": "websocket.close", "code": 1008})
            self._observe_websocket("", None, 404 if match is None else 503, started, request_id, scope["path"])
            return
        if (await receive())["type"] != "websocket.connect":
            return
        route, target = match.route.prefix, match.route.target
        request = HTTPRequest("GET", match.path, scope.get("root_path", "") + match.root_path,
                              scope.get("query_string", b""), tuple(scope.get("headers", ())), b"",
                              scope.get("scheme", "ws"), tuple(scope["client"]) if scope.get("client") else None,
                              tuple(scope["server"]) if scope.get("server") else None, scope.get("http_version", "1.1"))
        self.in_flight += 1
        status = 500
        try:
            try:
                stream = await asyncio.wait_for(self._forward_ws(target, request, request_id), self._timeout)
            except Exception as e:
                status = 504 if isinstance(e, asyncio.TimeoutError) else self._classify(e)
                log.warning("websocket %s refused: %s: %s", scope["path"], type(e).__name__, e)
                await send({"type": "websocket.close", "code": 1011})
                return
            status = 101 if stream.first["type"] == "websocket.accept" else 403
            await bridge(stream, send, receive)
        finally:
            self.in_flight -= 1
            self._observe_websocket(route, target, status, started, request_id, scope["path"])

    def _observe_websocket(self, route: str, target: str | None, status: int, started: float, request_id: str,
                           path: str) -> None:
        """A websocket's end, for metrics and the access log (method WEBSOCKET; status 101 if
        its app accepted it, else why it was refused)."""
        if self._observer is not None:
            try:
                self._observer.end(None, "WEBSOCKET", route, target, status, started, request_id, path)
            except Exception:
                log.exception("the request observer failed")

    async def _outside_root_path(self, scope: dict, receive: Any, send: Any, response: HTTPResponse) -> None:
        """A request outside `root_path` (answered by the mount, with an id like any other)."""
        await self._handle(scope, receive, send, response)

    async def _handle(self, scope: dict, receive: Any, send: Any, fixed: HTTPResponse | None) -> None:
        started = time.perf_counter()
        request_id = request_id_of(scope.get("headers", ()))
        set_current(request_id)  # this request's task: its logs carry the id
        observer = self._observer
        token = observer.begin(scope, request_id) if observer is not None and observer.tracing else None
        self.in_flight += 1
        route: str = ""
        target: str | None = None
        status = 500
        try:
            response: HTTPResponse | ResponseStream
            if fixed is not None:
                response = fixed
            else:
                try:
                    response, route, target = await self._respond(scope, receive, request_id)
                except Exception as e:  # never a crashed proxy
                    log.exception("proxy error")
                    response = _text(500, f"internal proxy error: {e!r}")
            status = response.status
            id_header = (REQUEST_ID_HEADER, request_id.encode())
            if not isinstance(response, HTTPResponse):  # a streamed response
                await write_stream(response, send, receive, id_header)
                return
            cork = scope.get(CORK_KEY)  # the head and the body in one write
            if cork is not None:
                cork.hold()
            try:
                await send({"type": "http.response.start", "status": status,
                            "headers": _with_header(response.headers, id_header)})
                await send({"type": "http.response.body", "body": response.body})
            finally:
                if cork is not None:
                    cork.release()
        finally:
            self.in_flight -= 1
            if observer is not None:
                try:
                    observer.end(token, scope["method"], route, target, status, started, request_id, scope["path"])
                except Exception:
                    log.exception("the request observer failed")

    async def _respond(self, scope: dict, receive: Any,
                       request_id: str) -> tuple[HTTPResponse | ResponseStream, str, str | None]:
        """The response, the route it matched ("" if none) and its target."""
        if sum(len(k) + len(v) for k, v in scope.get("headers", ())) > MAX_HEADER_BYTES:
            return _text(431, f"request headers larger than {MAX_HEADER_BYTES} bytes"), "", None
        path = scope["path"]
        if path in BUILTIN_PATHS:
            if path == "/-/healthz":
                if not self.routes_known:
                    return _text(503, "starting: no route table yet"), path, None
                return (_text(503, "draining") if self.draining else _text(200, "success")), path, None
            return whole_response(200, ((b"content-type", b"application/json"),),
                                  json.dumps(self.table.routes()).encode()), path, None
        match = self.table.match(path)
        if match is None and not self.routes_known:
            return _text(503, "this proxy is starting and has no route table yet; try again shortly"), "", None
        if match is None:
            return _text(404, f"Path '{scope.get('root_path', '') + path}' not found. Ping http://{self.host}:{self.port}/-/routes for the routing table."), "", None
        route, target = match.route.prefix, match.route.target
        body = await self._read_body(scope, receive)
        if body is None:
            return _text(413, f"request body over max_body_bytes={self._max_body}"), route, target
        if body is CUT_SHORT:  # the client left (or uvicorn refused its framing) mid-body: nothing to forward
            return _text(400, "request body cut short"), route, target
        if body is TOO_SLOW:
            self._slow_bodies.trip(f"{scope['method']} {scope['path']}")
            return SLOW_BODY, route, target
        request = HTTPRequest(scope["method"], match.path, scope.get("root_path", "") + match.root_path,
                              scope.get("query_string", b""),
                              tuple(scope.get("headers", ())), body, scope.get("scheme", "http"),
                              tuple(scope["client"]) if scope.get("client") else None,
                              tuple(scope["server"]) if scope.get("server") else None, scope.get("http_version", "1.1"))
        watch: Disconnect | None = scope.get(DISCONNECT_KEY)
        if watch is not None:
            if watch.happened:
                return _CLIENT_LEFT, route, target
            watch.task = asyncio.current_task()
        try:
            return await asyncio.wait_for(self._forward(target, request, request_id), self._timeout), route, target
        except asyncio.CancelledError:
            if watch is None or not watch.happened:
                raise
            # the client left: the call was cancelled at its replica (async handlers get
            # CancelledError); nobody reads this answer, it is what the access log shows
            uncancel = getattr(asyncio.current_task(), "uncancel", None)  # Python 3.11+
            if uncancel is not None:
                uncancel()
            return _CLIENT_LEFT, route, target
        except asyncio.TimeoutError:
            return _text(504, f"the request took longer than request_timeout_s={self._timeout}"), route, target
        except Exception as e:
            status = self._classify(e)
            if status == 500:  # the traceback is in the replica's log, not for the client
                first = str(e).split("\n", 1)[0]
                return _text(500, f"Internal Server Error: {type(e).__name__}: {first}"), route, target
            return _text(status, str(e) or type(e).__name__), route, target  # a plain message (Ray's style)
        finally:
            if watch is not None:
                watch.task = None

    async def _read_body(self, scope: dict, receive: Any) -> bytes | None:
        """The request body; None if over max_body_bytes, TOO_SLOW past its deadlines.
        A request with no body announced costs no timer."""
        expected = False
        for name, value in scope.get("headers", ()):
            if name == b"content-length":
                if value.isdigit() and int(value) > self._max_body:
                    return None
                expected = expected or value != b"0"
            elif name == b"transfer-encoding":
                expected = True
        if not expected:
            message = await receive()  # uvicorn has it: the request ended with its head
            return message.get("body", b"") if message["type"] == "http.request" else b""
        return await BodyReader(self._max_body, self._body_timeout, self._body_idle).read(receive)


def _with_header(headers: tuple[tuple[bytes, bytes], ...], header: tuple[bytes, bytes]) -> list[tuple[bytes, bytes]]:
    """The response's headers and `header`, unless the response has that header already."""
    name = header[0]
    for k, _ in headers:
        if k == name:
            return list(headers)
    return [*headers, header]
