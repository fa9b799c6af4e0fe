"""The HTTP proxy actor: `proxy.ProxyServer` with the serving layer's router behind it.

One per node that should serve HTTP (HeadOnly: one; EveryNode: one per node), placed and
restarted by the controller. `host="node"` binds this node's own IP. It long-polls the controller for
the route table ({route_prefix: deployment}) and forwards each request through the same
`Router` the handles use, to the replica method `__serve_http__`. A streamed response
(`HTTPStreamStart`) stays pinned to the replica that answered: the proxy pulls its chunks
from there (`_ReplicaStream`) while the router counts it in flight; so does a websocket
(`_ReplicaWebSocket`: the handshake goes through the router to `__serve_websocket__`, then
messages are pulled from and pushed to that replica; a deployment that is not an ASGI
ingress is refused with 403 without asking it, once its replicas have reported their methods,
and by the replica itself, as quietly, before). On shutdown the controller calls
`start_draining` (healthz 503, still serving) and then `drain`; when its node stops
gracefully (SIGTERM) it does the same itself, listening on while requests are in flight
(`__actors_drain__`).

Each request's id (the server's, see `proxy._observe`) goes to the replica in the request
context, with the route prefix matched, its application and the multiplexed model id its
header `serve_multiplexed_model_id` names (routers prefer a replica holding that model); `_Observer` counts requests
(`serve_num_http_*`, `serve_http_request_latency_ms`), writes the proxy's access log and,
when tracing is on, makes the request's span (a child of the client's `traceparent`).
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from actors import RuntimeShutDownError
from actors.system import UNKNOWN_VERSION, LongPollClient, Update, current_runtime, node_logs_dir
from proxy import (
    BUILTIN_PATHS,
    HTTPChunks,
    HTTPRequest,
    HTTPResponse,
    HTTPStreamStart,
    ProxyServer,
    WebSocketMessages,
    WebSocketStart,
    current_request_id,
)

from .._config import HTTPOptions
from .._obs_config import LoggingConfig, TracingConfig
from ..exceptions import BackPressureError, DeploymentUnavailableError, MethodNotFoundError
from ..messages import HTTP_METHOD, WEBSOCKET_METHOD, DeploymentId, ReplicaInfo, RouteTable
from . import counting, logs, tracing
from .client import ServeClient
from .context import Ctx
from .outcomes import ignore_outcome
from .router import POLL_HOLD_S, Router
from .serve_metrics import proxy_metrics

__all__ = ["HTTPProxyActor", "ROUTES_KEY"]

ROUTES_KEY = "routes"  # the controller's long-poll key of the route table
FIRST_ROUTES_S = 10.0  # how long a starting proxy waits for its route table before it listens anyway
log = logging.getLogger(__name__)


MODEL_HEADER = b"serve_multiplexed_model_id"  # names the multiplexed model a request is for


def _model_of(request: HTTPRequest) -> str:
    """The multiplexed model id the request's `serve_multiplexed_model_id` header names ("" if none)."""
    for name, value in request.headers:
        if name == MODEL_HEADER:
            return value.decode("latin-1").strip()
    return ""


def _status_of(exc: BaseException) -> int:
    """503 on back-pressure, and when this proxy's own runtime is shutting down (its node
    is going away: a load balancer should try another proxy); 500 for anything else,
    the deployment's own errors and a replica that died with the request included (a
    502 there would make a load balancer count a healthy proxy as failed)."""
    if isinstance(exc, (BackPressureError, DeploymentUnavailableError)):
        return 503
    if isinstance(exc, RuntimeShutDownError):
        return 503
    return 500


def _is_stream_start(result: Any) -> bool:
    return type(result) is HTTPStreamStart


_DRAIN_POLL_S = 0.05
"""While its node drains, how often the proxy looks whether requests are still in flight."""


class _ReplicaStream:
    """A streamed response as the proxy sees it: chunks pulled from the replica that
    answered, which the router counts in flight until the stream ends."""

    __slots__ = ("_ended", "_id", "_replica", "_router", "headers", "status")

    def __init__(self, router: Router, replica: ReplicaInfo, start: HTTPStreamStart) -> None:
        self.status = start.status
        self.headers = start.headers
        self._id = start.stream_id
        self._router = router
        self._replica = replica
        self._ended = False

    async def pull(self) -> HTTPChunks:
        batch = await self._replica.handle.stream_next.remote(self._id)
        if batch.done:
            self._end()
        return batch

    def close(self) -> None:
        if not self._ended:
            self._replica.handle.stream_close.remote(self._id).future().add_done_callback(ignore_outcome)
            self._end()

    def _end(self) -> None:
        if not self._ended:
            self._ended = True
            self._router.release(self._replica)


def _is_websocket_start(result: Any) -> bool:
    return type(result) is WebSocketStart


class _ReplicaWebSocket:
    """A websocket as the proxy sees it: a session at the replica whose app answered the
    handshake, counted in flight there by the router until it is closed."""

    __slots__ = ("_closed", "_id", "_replica", "_router", "first")

    def __init__(self, router: Router, replica: ReplicaInfo, start: WebSocketStart) -> None:
        self.first = start.first
        self._id = start.session_id
        self._router = router
        self._replica = replica
        self._closed = False

    async def pull(self) -> WebSocketMessages:
        return await self._replica.handle.websocket_pull.remote(self._id)

    async def push(self, messages: tuple[dict, ...]) -> None:
        await self._replica.handle.websocket_push.remote(self._id, messages)

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._replica.handle.websocket_close.remote(self._id).future().add_done_callback(ignore_outcome)
            self._router.release(self._replica)


class _Refused:
    """A websocket handshake refused for a deployment that takes no websockets (its replicas
    said so): the client gets 403, as from an app that closes before accepting; no replica
    is asked and nothing is logged but the access line."""

    __slots__ = ()
    first = {"type": "websocket.close", "code": 1008, "reason": ""}

    async def pull(self) -> WebSocketMessages:  # (never called: the handshake was refused)
        return WebSocketMessages((), True)

    async def push(self, messages: tuple[dict, ...]) -> None:
        pass

    def close(self) -> None:
        pass


class _Observer:
    """The end of each HTTP request at this proxy: metrics, access log, span. With the access
    log on, a request's record is queued and the log's flush counts a batch of them
    (`tally`) and has their lines written (see `logs.LogFile`); with it off, `end` counts
    it at once (`_tally`)."""

    def __init__(self, node_id: str, node_ip: str) -> None:
        self.tracing = tracing.ENABLED
        self.access: logs.AccessLog | None = None
        self.targets: dict[str, DeploymentId] = {}  # a route's target -> its deployment
        self.server: ProxyServer | None = None
        self._node = (node_id, node_ip)
        self._cells: dict[tuple[str, str, int | str], tuple[Any, ...]] | None = None
        if counting.ENABLED:
            self._cells = {}
            proxy_metrics().ongoing.add_source(self)

    @property
    def tally(self) -> logs.Tally | None:
        """What counts a batch of requests' records (None: metrics are off)."""
        return self._tally_batch if self._cells is not None else None

    def metric_rows(self, name: str) -> list[tuple[tuple[str, ...], float]]:
        """serve_num_ongoing_http_requests, read at scrape time."""
        return [(self._node, float(self.server.in_flight if self.server is not None else 0))]

    def begin(self, scope: dict, request_id: str) -> Any:
        return tracing.start_current(f"HTTP {scope['method']}", "SERVER", parent=tracing.client_parent(scope["headers"]),
                                     attributes={"http.method": scope["method"], "http.target": scope["path"],
                                                 "serve.request_id": request_id})

    def end(self, token: Any, method: str, route: str, target: str | None, status: int, started: float,
            request_id: str, path: str) -> None:
        latency_ms = (time.perf_counter() - started) * 1000.0
        access = self.access
        if access is not None:  # the log's flush finds the route's deployment (`app_of`, `_tally`)
            access.append((time.time(), method, route or path, status, latency_ms, request_id, route, "", target,
                           target is not None or route not in BUILTIN_PATHS))  # no line for the proxy's own routes
        elif self._cells is not None:
            self._tally(method, status, latency_ms, route, target)
        if token is not None:
            span, span_token = token
            span.update_name(f"HTTP {method} {route or path}")
            span.set_attribute("http.route", route)
            tracing.end(span, span_token, status=status)

    def app_of(self, target: str | None) -> str:
        """The application of a route's target ("" for none)."""
        dep = self.targets.get(target) if target is not None else None
        return dep.app if dep is not None else ""

    def _tally(self, method: str, status: int | str, latency_ms: float, route: str, target: str | None) -> None:
        """Count one request (`target`: its route's target, if any)."""
        c = self._cells_of(route, method, status, target)
        c[0].value += 1
        c[1].observe(latency_ms)
        if len(c) > 2:
            c[2].value += 1
            c[3].value += 1

    def _tally_batch(self, queued: list) -> None:
        """Count the requests' records among a batch of queued access-log items, by route,
        method, status and target (the record's `extra`)."""
        for (route, method, status, target), latencies in logs.latencies_by(queued, "route", "method", "status",
                                                                            "extra").items():
            c, n = self._cells_of(route, method, status, target), len(latencies)
            c[0].value += n
            c[1].observe_all(latencies)
            if len(c) > 2:
                c[2].value += n
                c[3].value += n

    def _cells_of(self, route: str, method: str, status: int | str, target: str | None) -> tuple[Any, ...]:
        """The cells of a request's labels, made at their first request."""
        cells = self._cells
        assert cells is not None
        key = (route, method, status)
        c = cells.get(key)
        if c is None:
            dep = self.targets.get(target) if target is not None else None
            c = cells[key] = self._make_cells(route, method, dep, int(status))
        return c

    @staticmethod
    def _make_cells(route: str, method: str, dep: DeploymentId | None, status: int) -> tuple[Any, ...]:
        m, code = proxy_metrics(), str(status)
        name, app = (dep.name, dep.app) if dep is not None else ("", "")
        cells: tuple[Any, ...] = (m.requests.cell(route, method, app, code), m.latency.cell(method, route, app, code))
        if status >= 400:
            cells += (m.errors.cell(route, code, method, app),
                      m.deployment_errors.cell(name, code, method, route, app))
        return cells


class HTTPProxyActor:
    def __init__(self, options: HTTPOptions, logging_config: LoggingConfig | None = None,
                 tracing_config: TracingConfig | None = None, *, worker: int = 0, reuse_port: bool = False) -> None:
        """`worker`: which of its node's proxy processes this is; `reuse_port`: it shares
        the port with the others (SO_REUSEPORT)."""
        rt = current_runtime()
        assert rt is not None, "the proxy runs in an actor"
        host = rt.node_ip if options.host == "node" else options.host
        self._reuse_port = reuse_port
        tracing.configure(tracing_config)  # before the observer, which reads whether tracing is on
        self._observer = _Observer(rt.node_id.hex if rt.node_id is not None else "", rt.node_ip)
        self._observer.access = logs.configure(logs.Who.proxy(rt.node_ip, worker), logging_config,
                                               default_dir=node_logs_dir(), fallback=current_request_id,
                                               tally=self._observer.tally, app_of=self._observer.app_of)
        self.client = ServeClient.of(rt)
        self._routes: LongPollClient | None = None
        self._targets: dict[str, tuple[DeploymentId, str]] = {}  # a route's target -> (deployment, route prefix)
        self._started = asyncio.get_running_loop().create_task(self._start(host, options))

    async def _start(self, host: str, options: HTTPOptions) -> None:
        # Built here, not in the constructor: a failure (a middleware that cannot wrap the
        # app, a port in use) reaches the controller through `ready` as its own type.
        self.server = ProxyServer(host, options.port, self._forward, classify=_status_of,
                                  request_timeout_s=options.request_timeout_s, max_body_bytes=options.max_body_bytes,
                                  keep_alive_timeout_s=options.keep_alive_timeout_s,
                                  body_timeout_s=options.body_timeout_s,
                                  body_idle_timeout_s=options.body_idle_timeout_s,
                                  max_connections=options.max_connections,
                                  middlewares=options.middlewares, root_path=options.root_path,
                                  observer=self._observer, forward_websocket=self._forward_websocket,
                                  reuse_port=self._reuse_port)
        self._observer.server = self.server
        # The routes before the port: a restarted proxy must not answer 404 (or 503) to the
        # traffic a load balancer sends it the moment it listens. Bounded: without a
        # controller it listens anyway, answering 503 until the table arrives.
        version = UNKNOWN_VERSION
        try:
            first = await asyncio.wait_for(self._fetch_routes(UNKNOWN_VERSION), FIRST_ROUTES_S)
            self._apply_routes(first)
            version = first.version
        except Exception as e:
            log.warning("no route table within %s s (%s: %s); listening anyway (503 until it comes)", FIRST_ROUTES_S,
                        type(e).__name__, e)
        await self.server.start()
        self._routes = LongPollClient(self._fetch_routes, self._apply_routes, name="route table",
                                      initial_version=version).start()

    async def _fetch_routes(self, version: int) -> Update:
        controller = await self.client.controller()
        return await controller.listen.remote(ROUTES_KEY, version, POLL_HOLD_S)

    def _apply_routes(self, update: Update) -> None:
        table = update.value if update.exists and update.value is not None else RouteTable({})
        self._targets = {str(dep_id): (dep_id, prefix) for prefix, dep_id in table.routes.items()}
        self._observer.targets = {key: dep_id for key, (dep_id, _) in self._targets.items()}
        self.server.set_routes({prefix: str(dep_id) for prefix, dep_id in table.routes.items()},
                               {key: dep_id.name for key, (dep_id, _) in self._targets.items()})

    async def ready(self) -> str:
        await asyncio.shield(self._started)  # a cancelled call must not cancel the start
        return f"http://{self.server.host}:{self.server.port}"

    async def _forward(self, target: str, request: HTTPRequest, request_id: str) -> HTTPResponse | _ReplicaStream:
        dep_id, route = self._targets[target]
        ctx: Ctx = (request_id, route, dep_id.app, _model_of(request),
                    tracing.current_traceparent() if tracing.ENABLED else "")
        router = await self.client.router(dep_id)
        result, replica = await router.call_holding(HTTP_METHOD, (request,), {}, _is_stream_start, ctx)
        if replica is None:
            return result
        return _ReplicaStream(router, replica, result)

    async def _forward_websocket(self, target: str, request: HTTPRequest,
                                 request_id: str) -> _ReplicaWebSocket | _Refused:
        dep_id, route = self._targets[target]
        ctx: Ctx = (request_id, route, dep_id.app, _model_of(request),
                    tracing.current_traceparent() if tracing.ENABLED else "")
        router = await self.client.router(dep_id)
        try:
            result, replica = await router.call_holding(WEBSOCKET_METHOD, (request,), {}, _is_websocket_start, ctx)
        except MethodNotFoundError:  # not an ASGI ingress (the router knows its replicas' methods)
            return _Refused()
        if replica is None:
            raise TypeError(f"the replica answered a websocket handshake with {type(result).__name__}")
        return _ReplicaWebSocket(router, replica, result)

    async def __actors_drain__(self, timeout_s: float) -> None:
        """Its node stops gracefully (SIGTERM): healthz answers 503 at once, and the proxy
        keeps listening (and serving) while it has requests in flight, so load balancers and
        readiness probes read that 503 rather than a refused connection; once none is left
        (or near the end of `timeout_s`) it stops taking connections and finishes the rest."""
        await self.start_draining()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + max(0.0, timeout_s - 0.5)
        while self.server.in_flight > 0 and loop.time() < deadline - 1.0:
            await asyncio.sleep(_DRAIN_POLL_S)
        await self.drain(max(0.0, deadline - loop.time()))

    async def start_draining(self) -> None:
        """From now on /-/healthz answers 503 (load balancers take this proxy out), while
        requests are still accepted and served."""
        self.server.draining = True

    async def drain(self, timeout_s: float | None = None) -> None:
        """Stop accepting connections and wait for the requests in flight (up to `timeout_s`)."""
        await self.server.stop(timeout_s)
        logs.flush(wait_s=logs.LAST_LINES_S)  # the process is killed next
