"""The proxy's limits and lifecycle with real clients: 504 cancels the replica's work, a
header-read deadline against slow clients, /-/healthz 503 while draining."""

from __future__ import annotations

import asyncio

import httpx
import pytest

import actors
import serve

from .conftest import free_port, wait_until

pytestmark = [pytest.mark.usefixtures("cluster"), pytest.mark.timeout(120)]


@actors.remote
class Recorder:
    """Counts named events; the test reads them."""

    def __init__(self) -> None:
        self.events: dict[str, int] = {}

    async def record(self, name: str) -> None:
        self.events[name] = self.events.get(name, 0) + 1

    async def get(self) -> dict[str, int]:
        return dict(self.events)


def _events(rec: actors.ActorHandle) -> dict[str, int]:
    return actors.get(rec.get.remote(), timeout=10)


def _routes(client: httpx.Client, n: int) -> dict:
    return wait_until(lambda: (lambda r: r if len(r) == n else None)(client.get("/-/routes").json()),
                      timeout=30, what=f"{n} routes at the proxy")


@serve.deployment(route_prefix="/hang")
class Hangs:
    def __init__(self, rec: actors.ActorHandle) -> None:
        self.rec = rec

    async def __call__(self, request):
        if request.query_params.get("quick"):
            return "quick"
        self.rec.record.remote("started")
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            self.rec.record.remote("cancelled")
            raise
        return "never"


def test_504_past_request_timeout_cancels_the_replicas_work() -> None:
    port = free_port()
    serve.start(http_options={"port": port, "request_timeout_s": 1.0})
    try:
        rec = Recorder.remote()
        serve.run(Hangs.bind(rec))
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
            _routes(client, 1)
            r = client.get("/hang")
            assert r.status_code == 504 and "request_timeout_s=1.0" in r.text
            wait_until(lambda: _events(rec).get("cancelled") == 1, timeout=20, what="the replica's work to be cancelled")
            assert _events(rec) == {"started": 1, "cancelled": 1}
            assert client.get("/hang", params={"quick": 1}).text == "quick"  # the replica keeps serving
    finally:
        serve.shutdown()
