"""Serve's metrics with real processes, read as Prometheus reads them (the node's metrics
endpoint; the test process's own registry for its handles): N requests over HTTP and M
through handles move the right counters by exactly N and M with the right labels;
histograms have buckets; errors are counted; a request held in a replica moves the proxy's
ongoing requests and one waiting behind it the router's queue, both back to 0 once they end;
a replica's death moves `serve_deployment_replica_healthy`, and its replacement counts its
start; user metrics carry their default tags; processes report their open connections."""

from __future__ import annotations

import asyncio
import os
import re
import threading

import httpx
import psutil
import pytest
from prometheus_client import generate_latest

import actors
import serve
from actors.system import metrics_registry, sample_value
from serve import metrics

from ..conftest import free_port, scrape_node_metrics, wait_until

pytestmark = [pytest.mark.usefixtures("cluster"), pytest.mark.timeout(240)]


@serve.deployment
class Inner:
    def __call__(self, x: int) -> int:
        return x + 1


@serve.deployment(route_prefix="/counted")
class Counted:
    def __init__(self, inner) -> None:
        self.inner = inner
        self.calls = metrics.Counter("counted_calls", description="Calls by kind.", tag_keys=("kind",))
        self.calls.set_default_tags({"kind": "http"})

    async def __call__(self, request) -> dict:
        if request.query_params.get("fail"):
            raise RuntimeError("asked to fail")
        self.calls.inc()
        return {"y": await self.inner.remote(1)}

    def ping(self) -> int:
        self.calls.inc(tags={"kind": "handle"})
        return os.getpid()

    def registry(self) -> str:
        return generate_latest(metrics_registry()).decode()


@actors.remote
class Latch:
    """Holds callers until released (what keeps a request in flight for as long as the test needs)."""

    def __init__(self) -> None:
        self.event = asyncio.Event()

    async def wait(self) -> None:
        await self.event.wait()

    async def release(self) -> None:
        self.event.set()


@serve.deployment(route_prefix="/held", max_ongoing_requests=1)
class Held:
    def __init__(self, latch) -> None:
        self.latch = latch

    async def __call__(self, request) -> str:
        await self.latch.wait.remote()
        return "released"


@serve.deployment(health_check_period_s=0.5, health_check_timeout_s=5)
class Fragile:
    def pid(self) -> int:
        return os.getpid()


def _samples(text: str, name: str, **labels: str) -> list[float]:
    out = []
    for line in text.splitlines():
        if line.startswith(name + "{"):
            found = dict(re.findall(r'(\w+)="([^"]*)"', line[len(name):].split("} ")[0]))
            if all(found.get(k) == v for k, v in labels.items()):
                out.append(float(line.rsplit(" ", 1)[1]))
    return out


def _value(text: str, name: str, **labels: str) -> float:
    return sum(_samples(text, name, **labels))


def _mine() -> str:
    return generate_latest(metrics_registry()).decode()


@pytest.fixture(scope="module")
def app():
    port = free_port()
    serve.start(http_options={"port": port})
    handle = serve.run(Counted.bind(Inner.bind()), name="counting")
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
        wait_until(lambda: client.get("/-/routes").json().get("/counted") == "Counted", timeout=30, what="the route")
        yield client, handle
    serve.shutdown()


def _counters(replica: str, mine: str) -> dict[str, float]:
    """The counters the test moves, read from the replica's and this driver's registries."""
    return {
        "replica_http": _value(replica, "serve_deployment_request_counter_total", deployment="Counted",
                               route="/counted", application="counting"),
        "replica_handle": _value(replica, "serve_deployment_request_counter_total", deployment="Counted", route=""),
        "replica_errors": _value(replica, "serve_deployment_error_counter_total", deployment="Counted",
                                 route="/counted"),
        "inner_calls": _value(replica, "serve_handle_request_counter_total", deployment="Inner", route="/counted",
                              application="counting"),
        "driver_handle": _value(mine, "serve_handle_request_counter_total", deployment="Counted", route="",
                                application="counting"),
        "driver_router": _value(mine, "serve_num_router_requests_total", deployment="Counted", route="",
                                application="counting"),
        "user_http": _value(replica, "counted_calls_total", kind="http", deployment="Counted"),
        "user_handle": _value(replica, "counted_calls_total", kind="handle", deployment="Counted"),
    }


def test_http_and_handle_requests_move_their_counters_by_exactly_n_and_m(app) -> None:
    client, handle = app
    n, m, k = 7, 5, 3
    handle.ping.remote().result(timeout_s=30)  # the driver's router exists: its counters start from here
    replica = handle.registry.remote().result(timeout_s=30)
    mine = _mine()
    before = _counters(replica, mine)
    for _ in range(n):
        assert client.get("/counted").json() == {"y": 2}
    for _ in range(k):
        assert client.get("/counted", params={"fail": 1}).status_code == 500
    for _ in range(m):
        handle.ping.remote().result(timeout_s=30)
    replica = handle.registry.remote().result(timeout_s=30)  # itself a handle call: counted after this read
    mine = _mine()
    after = _counters(replica, mine)
    moved = {key: after[key] - before[key] for key in before}
    assert moved == {"replica_http": n + k, "replica_handle": m + 1, "replica_errors": k, "inner_calls": n,
                     "driver_handle": m + 1, "driver_router": m + 1, "user_http": n, "user_handle": m}
    user = [line for line in replica.splitlines() if line.startswith("counted_calls_total{")]
    assert all('application="counting"' in line and 'replica="counting#Counted#' in line for line in user), user
    buckets = _samples(replica, "serve_deployment_processing_latency_ms_bucket", deployment="Counted",
                       route="/counted")
    assert len(buckets) >= 10 and buckets == sorted(buckets)  # cumulative buckets, +Inf last

    node = scrape_node_metrics()  # the proxy and the controller: through the node's endpoint
    ok = _value(node, "serve_num_http_requests_total", route="/counted", method="GET", application="counting",
                status_code="200")
    failed = _value(node, "serve_num_http_error_requests_total", route="/counted", error_code="500",
                    method="GET", application="counting")
    assert ok >= n and failed >= k
    assert _value(node, "serve_http_request_latency_ms_count", route="/counted", status_code="200") == ok
    assert _value(node, "serve_http_request_latency_ms_bucket", route="/counted", status_code="200",
                  le="+Inf") == ok
    assert _value(node, "serve_num_router_requests_total", deployment="Counted", route="/counted") == ok + failed
    # The proxy's routers count no handle calls: no handle made them.
    assert _samples(node, "serve_handle_request_counter_total", deployment="Counted", route="/counted") == []
    before_ok = ok
    for _ in range(n):
        client.get("/counted")
    node = scrape_node_metrics()
    assert _value(node, "serve_num_http_requests_total", route="/counted", method="GET", application="counting",
                  status_code="200") - before_ok == n
    assert _value(node, "serve_deployment_target_replicas", deployment="Counted", application="counting") == 1


def test_held_requests_move_ongoing_http_requests_and_a_waiting_one_the_queue(app) -> None:
    client, _ = app
    latch = Latch.remote()
    serve.run(Held.bind(latch), name="held")
    wait_until(lambda: client.get("/-/routes").json().get("/held") == "Held", timeout=30, what="the /held route")

    def gauges() -> tuple[float, float]:
        text = scrape_node_metrics()
        return (_value(text, "serve_num_ongoing_http_requests"),
                _value(text, "serve_deployment_queued_queries", deployment="Held", application="held"))

    assert gauges() == (0.0, 0.0)
    answers: list[int] = []

    def get() -> None:
        with httpx.Client(timeout=60) as c:
            answers.append(c.get(client.base_url.join("/held")).status_code)

    first = threading.Thread(target=get, daemon=True)
    first.start()
    wait_until(lambda: gauges() == (1.0, 0.0), timeout=30, what="one request in flight, none queued")
    second = threading.Thread(target=get, daemon=True)  # max_ongoing_requests=1: it waits in the proxy's router
    second.start()
    wait_until(lambda: gauges() == (2.0, 1.0), timeout=30, what="two requests in flight, one of them queued")
    actors.get(latch.release.remote())
    first.join(30)
    second.join(30)
    assert answers == [200, 200]
    wait_until(lambda: gauges() == (0.0, 0.0), timeout=30, what="nothing in flight or queued")
    serve.delete("held")
    actors.kill(latch)


def test_processes_report_their_open_connections(app) -> None:
    _, handle = app
    handle.ping.remote().result(timeout_s=30)
    text = scrape_node_metrics()
    for component in ("head", "agent", "driver"):
        assert sample_value(text, "actors_open_connections", component=component) > 0, component
    assert sample_value(text, "actors_open_connections", pid=str(os.getpid())) > 0


def test_a_replicas_death_moves_replica_healthy_and_its_replacement_counts_a_start(app) -> None:
    handle = serve.run(Fragile.bind(), name="fragile", route_prefix=None)
    pid = handle.pid.remote().result(timeout_s=30)
    first = wait_until(lambda: [line for line in scrape_node_metrics().splitlines()
                                if line.startswith("serve_deployment_replica_healthy{") and "fragile#Fragile#" in line
                                and line.endswith(" 1.0")], timeout=30, what="Fragile healthy")
    old = re.search(r'replica="(fragile#Fragile#\w+)"', first[0]).group(1)
    wait_until(lambda: _samples(scrape_node_metrics(), "serve_deployment_replica_starts_total", replica=old) == [1.0],
               timeout=30, what="the replica's start counted")
    psutil.Process(pid).kill()

    def replaced() -> bool:
        text = scrape_node_metrics()
        dead = _samples(text, "serve_deployment_replica_healthy", replica=old)
        fresh = [line for line in text.splitlines() if line.startswith("serve_deployment_replica_healthy{")
                 and "fragile#Fragile#" in line and old not in line and line.endswith(" 1.0")]
        starts = _samples(text, "serve_deployment_replica_starts_total", deployment="Fragile", application="fragile")
        return dead == [0.0] and len(fresh) == 1 and starts == [1.0] and \
            _samples(text, "serve_deployment_replica_starts_total", replica=fresh[0].split('replica="')[1]
                     .split('"')[0]) == [1.0]

    wait_until(replaced, timeout=60, what="the dead replica at 0, its replacement at 1 with its start counted")
    serve.delete("fragile")
