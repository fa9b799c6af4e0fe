"""`http_options.num_workers`: several proxy processes on one node share one port
(SO_REUSEPORT), each with its own routes and routers. Connections spread over them (counted
per process by the request ids they hand out: each process has its own id prefix); each
answers /-/healthz and drains on shutdown; one killed is replaced while the others serve."""

from __future__ import annotations

import collections
import os
import signal

import httpx
import pytest

import actors
import serve
from actors.messages import ActorState
from actors.system import current_runtime

from ..conftest import free_port, wait_until

pytestmark = [pytest.mark.usefixtures("cluster"), pytest.mark.timeout(180)]

WORKERS = 2
ID_PREFIX = 11  # "p" + 10 hex digits: one per proxy process (proxy._observe)


@serve.deployment
def hello(request) -> str:
    return "hello"


def _proxy_pids() -> list[int]:
    rt = current_runtime()
    assert rt is not None
    infos = rt.run_threadsafe(rt.head.list_actors)
    return sorted(i.pid for i in infos if (i.name or "").startswith("SERVE_PROXY") and i.pid
                  and i.state is ActorState.ALIVE)


def _healthy_proxies() -> list[dict]:
    return [p for p in serve.status()["proxies"].values() if p["state"] == "HEALTHY"]


def _per_process(url: str, n: int) -> collections.Counter:
    """Requests answered per proxy process, over `n` new connections."""
    seen: collections.Counter = collections.Counter()
    for _ in range(n):
        with httpx.Client(base_url=url, timeout=10) as client:  # a new connection each time
            r = client.get("/hello")
            assert r.status_code == 200 and r.text == "hello"
            seen[r.headers["x-request-id"][:ID_PREFIX]] += 1
    return seen


def test_workers_share_the_port_and_connections_spread() -> None:
    port = free_port()
    serve.start(http_options={"port": port, "num_workers": WORKERS})
    try:
        serve.run(hello.bind(), name="hello", route_prefix="/hello")
        url = f"http://127.0.0.1:{port}"
        wait_until(lambda: len(_healthy_proxies()) == WORKERS, timeout=60, what=f"{WORKERS} healthy proxies")
        assert sorted(p["worker"] for p in _healthy_proxies()) == list(range(WORKERS))
        assert {p["url"] for p in _healthy_proxies()} == {url}
        assert len(_proxy_pids()) == WORKERS
        # each has its own route table: wait until every one routes /hello
        wait_until(lambda: len(_per_process(url, 20)) == WORKERS, timeout=30, what="both workers answering /hello")
        seen = _per_process(url, 200)
        assert len(seen) == WORKERS and min(seen.values()) >= 200 // WORKERS // 4, seen
        for _ in range(10):
            assert httpx.get(f"{url}/-/healthz", timeout=10).text == "success"

        # one worker killed: the other keeps serving; the controller starts a new one
        victim = _proxy_pids()[0]
        os.kill(victim, signal.SIGKILL)
        wait_until(lambda: victim not in _proxy_pids(), timeout=30, what="the killed proxy gone")
        assert sum(_per_process(url, 20).values()) == 20  # all answered by the survivor
        wait_until(lambda: len(_healthy_proxies()) == WORKERS and len(_proxy_pids()) == WORKERS
                   and victim not in _proxy_pids(), timeout=60, what="the killed worker replaced")
        wait_until(lambda: len(_per_process(url, 20)) == WORKERS, timeout=30, what="connections spread again")
    finally:
        serve.shutdown()
    assert _proxy_pids() == []
    with pytest.raises(httpx.TransportError):
        httpx.get(f"http://127.0.0.1:{port}/-/healthz", timeout=2)


def test_drain_answers_503_from_every_worker() -> None:
    """`start_draining` reaches each worker: every connection gets healthz 503 while requests
    are still served."""
    port = free_port()
    serve.start(http_options={"port": port, "num_workers": WORKERS})
    try:
        serve.run(hello.bind(), name="hello", route_prefix="/hello")
        url = f"http://127.0.0.1:{port}"
        wait_until(lambda: len(_healthy_proxies()) == WORKERS, timeout=60, what=f"{WORKERS} healthy proxies")
        rt = current_runtime()
        assert rt is not None
        infos = rt.run_threadsafe(rt.head.list_actors)
        handles = [actors.get_actor(i.name, namespace="serve") for i in infos
                   if (i.name or "").startswith("SERVE_PROXY") and i.state is ActorState.ALIVE]
        assert len(handles) == WORKERS
        actors.get([h.start_draining.remote() for h in handles], timeout=10)
        statuses = collections.Counter()
        for _ in range(40):
            with httpx.Client(base_url=url, timeout=10) as client:
                statuses[client.get("/-/healthz").status_code] += 1
                assert client.get("/hello").text == "hello"
        assert statuses == {503: 40}
    finally:
        serve.shutdown()
