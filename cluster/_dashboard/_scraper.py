"""The dashboard's scrape loop: reads every alive node's metrics endpoint into the `Sampler`.

It scrapes every `period_s` (2 s) while someone is looking — an `/api/` call within the
last `watch_s` — and every `idle_s` otherwise (`$ZEROSERVE_DASHBOARD_IDLE_SCRAPE_S`,
default 10 s; 0: not at all), so the charts have a history when the page opens and a
closed dashboard costs next to nothing. The first call after an idle spell wakes it at
once. A node that does not answer within `timeout_s` is left out of that scrape.
Requests never wait on a scrape: they read the sampler's last one.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Awaitable, Callable
from urllib.parse import urlsplit

from actors.messages import NodeInfo

from ._sampler import Sampler

__all__ = ["Scraper", "http_get", "idle_scrape_s"]

log = logging.getLogger(__name__)
_MAX_BODY = 64 * 1024 * 1024


def idle_scrape_s() -> float:
    text = os.environ.get("ZEROSERVE_DASHBOARD_IDLE_SCRAPE_S", "").strip()
    if not text:
        return 10.0
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"$ZEROSERVE_DASHBOARD_IDLE_SCRAPE_S must be seconds (0: no scrapes while nobody looks), "
                         f"got {text!r}") from None
    if value < 0:
        raise ValueError(f"$ZEROSERVE_DASHBOARD_IDLE_SCRAPE_S must be >= 0, got {text!r}")
    return value


async def http_get(url: str, timeout_s: float) -> str:
    """The body of `GET url` (plain HTTP/1.1, `Connection: close`); OSError/TimeoutError if it fails."""

    async def get() -> str:
        parts = urlsplit(url)
        host, port = parts.hostname or "127.0.0.1", parts.port or 80
        reader, writer = await asyncio.open_connection(host, port)
        try:
            path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
            writer.write(f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nConnection: close\r\n\r\n".encode())
            await writer.drain()
            data = await reader.read(_MAX_BODY)
            while True:
                more = await reader.read(_MAX_BODY)
                if not more:
                    break
                data += more
        finally:
            writer.close()
        head, _, body = data.partition(b"\r\n\r\n")
        status = head.split(b" ", 2)[1] if head.count(b" ") >= 2 else b"?"
        if status != b"200":
            raise OSError(f"GET {url} answered {status.decode(errors='replace')}")
        return body.decode("utf-8", "replace")

    return await asyncio.wait_for(get(), timeout_s)


class Scraper:
    def __init__(self, nodes: Callable[[], list[NodeInfo]], sampler: Sampler, *,
                 fetch: Callable[[str, float], Awaitable[str]] = http_get, period_s: float = 2.0,
                 idle_s: float | None = None, watch_s: float = 30.0, timeout_s: float = 2.0) -> None:
        self.nodes = nodes
        self.sampler = sampler
        self.fetch = fetch
        self.period_s = period_s
        self.idle_s = idle_scrape_s() if idle_s is None else idle_s
        self.watch_s = watch_s
        self.timeout_s = timeout_s
        self._watched_until = 0.0
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def watched(self) -> bool:
        return time.monotonic() < self._watched_until

    def touch(self) -> None:
        """Someone is looking: scrape every period_s for the next watch_s (and now, if idle)."""
        if not self.watched():
            self._wake.set()
        self._watched_until = time.monotonic() + self.watch_s

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    def close(self) -> None:
        if self._task is not None:
            self._task.cancel()

    async def scrape(self) -> None:
        nodes = [n for n in self.nodes() if n.alive and n.metrics_url]
        texts = await asyncio.gather(*(self.fetch(n.metrics_url, self.timeout_s) for n in nodes),
                                     return_exceptions=True)
        got = {}
        for n, text in zip(nodes, texts, strict=True):
            if isinstance(text, BaseException):
                log.debug("no metrics from %s: %r", n.metrics_url, text)
            else:
                got[n.ip] = text
        self.sampler.add(time.time(), got)

    async def _run(self) -> None:
        while True:
            started = time.monotonic()
            try:
                await self.scrape()
            except Exception:
                log.exception("a dashboard scrape failed")
            self._wake.clear()
            if self.watched():
                wait: float | None = self.period_s
            else:
                wait = self.idle_s if self.idle_s > 0 else None
            if wait is not None:
                wait = max(0.0, wait - (time.monotonic() - started))
            try:
                await asyncio.wait_for(self._wake.wait(), wait)
            except asyncio.TimeoutError:
                pass
