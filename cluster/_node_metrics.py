"""The node's metrics endpoint: `http://NODE_IP:PORT/metrics`, served by the agent.

At each scrape the agent pulls the metric families of every zeroserve process of its node
at once — itself, the head (on the head node), its workers (controller, proxies,
replicas, plain actors) and the drivers that attached to it — through each process's
`rt/metrics` endpoint, merges them (`actors.system.merge_families`: one family per name,
each process told apart by its `component` and `pid` labels) and answers Prometheus text.
A process that does not answer within `$ZEROSERVE_METRICS_TIMEOUT_S` (0.5 s) is left out
of that scrape; it never holds the scrape up. `actors_scrape_processes{result}` says how
many answered.

The server is a small HTTP/1.1 responder on the agent's loop (one request per
connection): `GET /metrics`, and `GET /` pointing there; it binds the node's own IP, so
several nodes on one machine (127.0.0.1, .2, .3) each serve their own. It is a port of
its own: internal metrics never appear on Serve's public HTTP port.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from actors.system import CONTENT_TYPE, Family, Runtime, families_of, merge_families, metrics_registry

__all__ = ["DEFAULT_METRICS_PORT", "MetricsServer", "ProcessRef", "collect_node", "metrics_timeout_s"]

log = logging.getLogger(__name__)
DEFAULT_METRICS_PORT = 8080
_REQUEST_TIMEOUT_S = 5.0
_MAX_HEAD = 16 * 1024


def metrics_timeout_s() -> float:
    return float(os.environ.get("ZEROSERVE_METRICS_TIMEOUT_S", "0.5"))


@dataclass(frozen=True, slots=True)
class ProcessRef:
    """A process of this node to scrape: its runtime address (None: this process) and labels."""

    address: str | None
    component: str
    pid: int | None = None


async def collect_node(rt: Runtime, processes: Sequence[ProcessRef], timeout_s: float) -> list[Any]:
    """The merged families of `processes`, pulled concurrently; the silent ones left out."""

    async def pull(p: ProcessRef) -> tuple[dict[str, str], list[Family]] | None:
        if p.address is None:
            return _labels(p.component, os.getpid()), families_of(metrics_registry())
        fut = rt.call(p.address, b"rt/metrics")
        try:
            reply = await asyncio.wait_for(fut, timeout_s)
        except Exception as e:  # slow (a time-out), dead or gone: not in this scrape
            log.debug("no metrics from %s at %s: %r", p.component, p.address, e)
            return None
        if isinstance(reply, dict):  # {"pid", "role", "families"}
            return _labels(p.component, reply.get("pid", p.pid)), reply["families"]
        return _labels(p.component, p.pid), reply

    results = await asyncio.gather(*(pull(p) for p in processes))
    answered = [r for r in results if r is not None]
    meta: Family = ("actors_scrape_processes", "gauge", "Processes of this node whose metrics this scrape has",
                    "", [("actors_scrape_processes", {"result": "answered"}, float(len(answered)), None),
                         ("actors_scrape_processes", {"result": "skipped"}, float(len(results) - len(answered)), None)])
    return merge_families([*answered, (_labels("agent", os.getpid()), [meta])])


def _labels(component: str, pid: int | None) -> dict[str, str]:
    return {"component": component, "pid": str(pid)} if pid is not None else {"component": component}


class MetricsServer:
    """The HTTP side: binds `ip:port` and answers scrapes with `scrape()`; its URL names
    `advertise` when given (a node bound to 0.0.0.0 is reached at its advertised address)."""

    def __init__(self, ip: str, scrape: Callable[[], Awaitable[bytes]], advertise: str | None = None) -> None:
        self.ip = ip
        self.advertise = advertise
        self._scrape = scrape
        self._server: asyncio.AbstractServer | None = None
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://{self.advertise or self.ip}:{self.port}/metrics" if self._server is not None else ""

    async def start(self, port: int, *, fallback: bool) -> str:
        """Listen on `port`; if it is taken and `fallback`, on a free port instead.
        Raises OSError (port taken, address not ours) otherwise."""
        try:
            self._server = await asyncio.start_server(self._serve, self.ip, port, reuse_address=True)
        except OSError as e:
            if not fallback:
                raise
            log.warning("metrics port %s on %s is not free (%s): using a free port", port, self.ip, e.strerror)
            self._server = await asyncio.start_server(self._serve, self.ip, 0, reuse_address=True)
        sock: socket.socket = self._server.sockets[0]
        self.port = sock.getsockname()[1]
        log.info("metrics at %s", self.url)
        return self.url

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), _REQUEST_TIMEOUT_S)
            method, _, rest = head.split(b"\r\n", 1)[0].decode("latin-1").partition(" ")
            path = rest.split(" ", 1)[0].split("?", 1)[0]
            if method not in ("GET", "HEAD"):
                await self._answer(writer, 405, b"only GET\n", "text/plain", method)
            elif path == "/metrics":
                await self._answer(writer, 200, await self._scrape(), CONTENT_TYPE, method)
            elif path == "/":
                await self._answer(writer, 200, b"zeroserve node metrics: GET /metrics\n", "text/plain", method)
            else:
                await self._answer(writer, 404, b"not found: the metrics are at /metrics\n", "text/plain", method)
        except (asyncio.TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
            pass
        except Exception:
            log.exception("the metrics endpoint failed")
            await self._answer(writer, 500, b"internal error; see the agent's log\n", "text/plain", "GET")
        finally:
            writer.close()

    @staticmethod
    async def _answer(writer: asyncio.StreamWriter, status: int, body: bytes, ctype: str, method: str) -> None:
        reason = {200: "OK", 404: "Not Found", 405: "Method Not Allowed", 500: "Internal Server Error"}[status]
        head = (f"HTTP/1.1 {status} {reason}\r\nContent-Type: {ctype}\r\nContent-Length: {len(body)}\r\n"
                "Connection: close\r\n\r\n").encode()
        writer.write(head if method == "HEAD" else head + body)
        try:
            await writer.drain()
        except ConnectionError:
            pass

    def close(self) -> None:
        if self._server is not None:
            self._server.close()
