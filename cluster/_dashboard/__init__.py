"""The dashboard: a web page and a JSON API on the head, at `http://HEAD_IP:PORT/` (8265).

It runs in the head process, on the head's event loop, and reads the head's own state in
memory (no RPC): nodes, actors, and Serve's status summary in the KV. Metrics come from
the nodes' Prometheus endpoints (`_scraper`, `_sampler`); logs from the agents. Nothing
here is on a request's path: proxies, routers and replicas never talk to it.

Modules: `_http` (server, token gate), `_api` (the endpoints), `_scraper` / `_sampler`
(metrics), `static/` (the page: plain HTML, CSS and JS, no build step, no CDN).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from actors.messages import ActorInfo, NodeInfo
from actors.system import Runtime

from ._api import Api
from ._http import Gate, HttpServer, Request, Response, needs_token
from ._sampler import Sampler
from ._scraper import Scraper

if TYPE_CHECKING:
    from .._head import Head

__all__ = ["DEFAULT_DASHBOARD_PORT", "Dashboard", "HeadSource"]

log = logging.getLogger(__name__)
DEFAULT_DASHBOARD_PORT = 8265


class HeadSource:
    """The API's `Source` inside the head process: the `Head` object itself, and the runtime."""

    def __init__(self, rt: Runtime, head: Head) -> None:
        self.rt = rt
        self.head = head
        self.head_address = head.address
        self.dashboard_url = ""

    def nodes(self) -> list[NodeInfo]:
        return self.head.nodes()

    def actors(self) -> list[ActorInfo]:
        return self.head.list_actors()

    def kv_get(self, key: str) -> bytes | None:
        return self.head.kv_get(key)

    async def call_agent(self, address: str, method: str, *args: Any, timeout: float) -> Any:
        return await self.rt.call_service(address, "agent", method, *args, timeout=timeout)


class Dashboard:
    def __init__(self, source: HeadSource, ip: str, token: str) -> None:
        self.source = source
        self.sampler = Sampler()
        self.scraper = Scraper(source.nodes, self.sampler)
        self.api = Api(source, self.sampler)
        self.gate = Gate(token, required=needs_token(ip))
        self.server = HttpServer(ip, self._handle)

    async def _handle(self, req: Request) -> Response:
        denied = self.gate.check(req)
        if denied is not None:
            return denied
        if req.path.startswith("/api/"):
            self.scraper.touch()
        return await self.api.handle(req)

    async def start(self, port: int, *, fallback: bool) -> str:
        url = await self.server.start(port, fallback=fallback)
        self.source.dashboard_url = url
        self.scraper.start()
        log.info("dashboard at %s%s", url, " (asks for the cluster token)" if self.gate.required else "")
        return url

    def close(self) -> None:
        self.scraper.close()
        self.server.close()
