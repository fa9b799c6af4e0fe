"""The HTTP proxy actor: `proxy.ProxyServer` with the serving layer's router behind it.

One per node that should serve HTTP (HeadOnly: one; EveryNode: one per node), placed and
restarted by the controller. `host="node"` binds this node's own IP. It long-polls the controller for
the route table ({route_prefix: deployment}) and forwards each request through the same
`Router` the handles use, to the replica method `__serve_http__`. A streamed response
(`HTTPStreamStart`) stays pinned to the replica that answered: the proxy pulls its chunks
from there (`_ReplicaStream`) while the router counts it in flight. On shutdown the
controller calls `start_draining` (healthz 503, still serving) and then `drain`.
"""

from __future__ import annotations

import asyncio
from typing import Any

from actors import RuntimeShutDownError
from actors.system import LongPollClient, Update, current_runtime
from proxy import HTTPChunks, HTTPRequest, HTTPResponse, HTTPStreamStart, ProxyServer

from .._config import HTTPOptions
from ..exceptions import BackPressureError
from ..messages import HTTP_METHOD, RouteTable
from .client import ServeClient
from .outcomes import ignore_outcome
from .router import POLL_HOLD_S, Router

__all__ = ["HTTPProxyActor", "ROUTES_KEY"]

ROUTES_KEY = "routes"  # the controller's long-poll key of the route table


def _status_of(exc: BaseException) -> int:
    """503 on back-pressure, and when this proxy's own runtime is shutting down (its node
    is going away: a load balancer should try another proxy); 500 for anything else,
    the deployment's own errors and a replica that died with the request included (a
    502 there would make a load balancer count a healthy proxy as failed)."""
    if isinstance(exc, BackPressureError):
        return 503
    if isinstance(exc, RuntimeShutDownError):
        return 503
    return 500


def _is_stream_start(result: Any) -> bool:
    return type(result) is HTTPStreamStart


class _ReplicaStream:
    """A streamed response as the proxy sees it: chunks pulled from the replica that
    answered, which the router counts in flight until the stream ends."""

    __slots__ = ("_ended", "_id", "_replica", "_router", "headers", "status")

    def __init__(self, router: Router, replica: Any, start: HTTPStreamStart) -> None:
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


class HTTPProxyActor:
    def __init__(self, options: HTTPOptions) -> None:
        rt = current_runtime()
        assert rt is not None, "the proxy runs in an actor"
        host = rt.node_ip if options.host == "node" else options.host
        self.client = ServeClient.of(rt)
        self._routes: LongPollClient | None = None
        self._started = asyncio.get_running_loop().create_task(self._start(host, options))

    async def _start(self, host: str, options: HTTPOptions) -> None:
        # Built here, not in the constructor: a failure (a middleware that cannot wrap the
        # app, a port in use) reaches the controller through `ready` as its own type.
        self.server = ProxyServer(host, options.port, self._forward, classify=_status_of,
                                  request_timeout_s=options.request_timeout_s, max_body_bytes=options.max_body_bytes,
                                  keep_alive_timeout_s=options.keep_alive_timeout_s,
                                  middlewares=options.middlewares, root_path=options.root_path)
        await self.server.start()
        self._routes = LongPollClient(self._fetch_routes, self._apply_routes, name="route table").start()

    async def _fetch_routes(self, version: int) -> Update:
        controller = await self.client.controller()
        return await controller.listen.remote(ROUTES_KEY, version, POLL_HOLD_S)

    def _apply_routes(self, update: Update) -> None:
        table = update.value if update.exists and update.value is not None else RouteTable({})
        self.server.set_routes(table.routes)

    async def ready(self) -> str:
        await asyncio.shield(self._started)  # a cancelled call must not cancel the start
        return f"http://{self.server.host}:{self.server.port}"

    async def _forward(self, deployment: str, request: HTTPRequest) -> HTTPResponse | _ReplicaStream:
        router = await self.client.router(deployment)
        result, replica = await router.call_holding(HTTP_METHOD, (request,), {}, _is_stream_start)
        if replica is None:
            return result
        return _ReplicaStream(router, replica, result)

    async def __actors_drain__(self, timeout_s: float) -> None:
        """Its node stops gracefully (SIGTERM): healthz answers 503, then the requests in
        flight finish and no new connection is taken."""
        await self.start_draining()
        await self.drain(max(0.0, timeout_s - 0.5))

    async def start_draining(self) -> None:
        """From now on /-/healthz answers 503 (load balancers take this proxy out), while
        requests are still accepted and served."""
        self.server.draining = True

    async def drain(self, timeout_s: float | None = None) -> None:
        """Stop accepting connections and wait for the requests in flight (up to `timeout_s`)."""
        await self.server.stop(timeout_s)
