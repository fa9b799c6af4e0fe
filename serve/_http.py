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
import logging
from typing import Any

from actors import RuntimeShutDownError
from actors.system import current_runtime
from proxy import HTTPChunks, HTTPRequest, HTTPResponse, HTTPStreamStart, ProxyServer

from ._handle import _controller, _router
from ._router import ignore_outcome
from .exceptions import BackPressureError
from .messages import HTTP_METHOD

__all__ = ["HTTPProxyActor"]

log = logging.getLogger(__name__)


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

    def __init__(self, router: Any, replica: Any, start: HTTPStreamStart) -> None:
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
    def __init__(self, host: str, port: int, options: dict[str, Any]) -> None:
        if host == "node":
            host = current_runtime().node_ip
        self.server = ProxyServer(host, port, self._forward, classify=_status_of,
                                  request_timeout_s=options.get("request_timeout_s"),
                                  max_body_bytes=options.get("max_body_bytes", 100 * 1024 * 1024),
                                  keep_alive_timeout_s=options.get("keep_alive_timeout_s", 5),
                                  middlewares=options.get("middlewares", ()), root_path=options.get("root_path", ""))
        self._routes_version = -1
        self._started = asyncio.get_running_loop().create_task(self._start())

    async def _start(self) -> None:
        await self.server.start()
        self._poller = asyncio.get_running_loop().create_task(self._poll_routes())

    async def ready(self) -> str:
        await asyncio.shield(self._started)  # a cancelled call must not cancel the start
        return f"http://{self.server.host}:{self.server.port}"

    async def _forward(self, deployment: str, request: HTTPRequest) -> HTTPResponse | _ReplicaStream:
        router = await _router(current_runtime(), deployment)
        result, replica = await router.call_holding(HTTP_METHOD, (request,), {}, _is_stream_start)
        if replica is None:
            return result
        return _ReplicaStream(router, replica, result)

    async def _poll_routes(self) -> None:
        while True:
            try:
                controller = await _controller(current_runtime())
                version, routes = await controller.listen_routes.remote(self._routes_version, 20.0)
            except asyncio.CancelledError:
                raise
            except Exception as e:
                log.debug("route poll failed (%s); keeping the current table", e)
                await asyncio.sleep(0.2)
                continue
            self._routes_version = version
            self.server.set_routes(routes)

    async def start_draining(self) -> None:
        """From now on /-/healthz answers 503 (load balancers take this proxy out), while
        requests are still accepted and served."""
        self.server.draining = True

    async def drain(self, timeout_s: float | None = None) -> None:
        """Stop accepting connections and wait for the requests in flight (up to `timeout_s`)."""
        await self.server.stop(timeout_s)
