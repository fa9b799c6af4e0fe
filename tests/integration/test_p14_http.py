"""Ray Serve 2.x parity over HTTP (issue 14, items 2, 4, 17), with a real proxy, replicas and
client: a `__call__` (or function) taking no argument is called with none; back-pressure is a
503 with Ray's plain message; a client that disconnects cancels its request at the replica."""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import pickle
import socket
import threading
import time

import httpx
import pytest

import actors
import serve

from ..conftest import free_port, wait_until

pytestmark = [pytest.mark.usefixtures("cluster"), pytest.mark.timeout(180)]


@actors.remote
class Signals:
    """Where replicas record what happened to them, and wait for the test to let them go."""

    def __init__(self) -> None:
        self.events: list[str] = []
        self.gate = asyncio.Event()

    async def record(self, what: str) -> None:
        self.events.append(what)

    async def wait(self) -> None:
        await self.gate.wait()

    async def open(self) -> None:
        self.gate.set()

    async def seen(self) -> list[str]:
        return list(self.events)


@pytest.fixture(scope="module")
def http():
    port = free_port()
    serve.start(http_options={"port": port})
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
        yield client, port
    serve.shutdown()


def _route(client: httpx.Client, prefix: str) -> None:
    wait_until(lambda: prefix in client.get("/-/routes").json(), timeout=20, what=f"route {prefix} at the proxy")


# -- item 2: a __call__ or function of no argument ---------------------------------------------
@serve.deployment
def hello() -> str:
    return "hello, no arguments"


@serve.deployment
class NoArgs:
    def __call__(self) -> dict:
        return {"called": "without the request"}


@serve.deployment
class NoArgsAsync:
    async def __call__(self, *, greeting: str = "hi") -> str:  # keyword-only with a default: not the request
        return greeting


@serve.deployment
class WithRequest:
    async def __call__(self, request) -> str:
        return request.url.path


def test_a_call_taking_no_argument_is_called_with_none(http) -> None:
    client, _ = http
    serve.run(hello.bind(), name="p14-fn", route_prefix="/fn")
    noargs = serve.run(NoArgs.bind(), name="p14-noargs", route_prefix="/noargs")
    serve.run(NoArgsAsync.bind(), name="p14-noargs-async", route_prefix="/noargs-async")
    serve.run(WithRequest.bind(), name="p14-req", route_prefix="/req")
    for prefix in ("/fn", "/noargs", "/noargs-async", "/req"):
        _route(client, prefix)
    assert (client.get("/fn").status_code, client.get("/fn").text) == (200, "hello, no arguments")
    assert client.post("/noargs", content=b"ignored").json() == {"called": "without the request"}
    assert client.get("/noargs-async").text == "hi"
    assert client.get("/req/sub").text == "/sub"  # one that takes it still gets the request
    # handles are not affected: a handle call passes exactly what it was given
    assert noargs.remote().result(timeout_s=30) == {"called": "without the request"}
    for app in ("p14-fn", "p14-noargs", "p14-noargs-async", "p14-req"):
        serve.delete(app)


# -- item 4: back-pressure is a 503 with a plain message ------------------------------------------
@serve.deployment(max_ongoing_requests=1, max_queued_requests=0)
class Busy:
    def __init__(self, signals) -> None:
        self.signals = signals

    async def __call__(self, request) -> str:
        await self.signals.record.remote("busy started")
        await self.signals.wait.remote()
        return "done"


def test_back_pressure_is_503_with_rays_plain_message(http) -> None:
    client, port = http
    signals = Signals.remote()
    serve.run(Busy.bind(signals), name="p14-busy", route_prefix="/busy")
    _route(client, "/busy")
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as other:
        slow = other.build_request("GET", "/busy")
        result: dict[str, httpx.Response] = {}
        worker = threading.Thread(target=lambda: result.setdefault("r", other.send(slow)))
        worker.start()
        wait_until(lambda: "busy started" in actors.get(signals.seen.remote()), timeout=30, what="the slow request")
        refused = client.get("/busy")
        assert refused.status_code == 503
        assert refused.headers["content-type"].startswith("text/plain")
        assert refused.text == "Request dropped due to backpressure (num_queued_requests=0, max_queued_requests=0)."
        actors.get(signals.open.remote())
        worker.join(30)
        assert (result["r"].status_code, result["r"].text) == (200, "done")
    serve.delete("p14-busy")


def test_back_pressure_error_pickles_with_its_numbers() -> None:
    e = pickle.loads(pickle.dumps(serve.BackPressureError(num_queued_requests=3, max_queued_requests=5)))
    assert (e.num_queued_requests, e.max_queued_requests) == (3, 5)
    assert str(e) == "Request dropped due to backpressure (num_queued_requests=3, max_queued_requests=5)."


# -- item 17: a client that disconnects cancels its request ---------------------------------------
@serve.deployment(max_ongoing_requests=1, max_queued_requests=0)
class Hangs:
    def __init__(self, signals) -> None:
        self.signals = signals

    async def __call__(self, request) -> str:
        key = request.query_params["key"]
        if key == "quick":
            return "quick"
        await self.signals.record.remote(f"started {key}")
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            await asyncio.shield(self.signals.record.remote(f"cancelled {key}"))
            raise
        return "never"


def test_a_client_that_disconnects_cancels_its_request_at_the_replica(http) -> None:
    client, port = http
    signals = Signals.remote()
    serve.run(Hangs.bind(signals), name="p14-hangs", route_prefix="/hangs")
    _route(client, "/hangs")
    for i in range(2):  # twice: the replica's one slot was given back the first time
        key = f"k{i}"
        sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        sock.sendall(f"GET /hangs?key={key} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        wait_until(lambda key=key: f"started {key}" in actors.get(signals.seen.remote()), timeout=30,
                   what="the request to start in the replica")
        sock.close()  # the client leaves
        wait_until(lambda key=key: f"cancelled {key}" in actors.get(signals.seen.remote()), timeout=30,
                   what="the handler to get CancelledError")
    # the slot is free again (max_ongoing_requests=1, no queue): a new request is served
    wait_until(lambda: client.get("/hangs", params={"key": "quick"}).status_code == 200, timeout=20,
               what="the replica's slot to be free")
    serve.delete("p14-hangs")


def test_a_client_that_times_out_cancels_a_request_still_queued(http) -> None:
    """A request waiting for a replica (not yet sent) is dropped from the queue when its
    client leaves: it never runs."""
    client, port = http
    signals = Signals.remote()
    serve.run(Hangs.options(max_queued_requests=-1).bind(signals), name="p14-queue", route_prefix="/queue")
    _route(client, "/queue")
    first = socket.create_connection(("127.0.0.1", port), timeout=10)
    first.sendall(b"GET /queue?key=holder HTTP/1.1\r\nHost: x\r\n\r\n")
    wait_until(lambda: "started holder" in actors.get(signals.seen.remote()), timeout=30, what="the first request")
    with pytest.raises(httpx.ReadTimeout):  # queued behind the first; the client gives up
        client.get("/queue", params={"key": "queued"}, timeout=1.0)
    first.close()
    wait_until(lambda: "cancelled holder" in actors.get(signals.seen.remote()), timeout=30, what="the first to end")
    assert client.get("/queue", params={"key": "quick"}).text == "quick"
    assert "started queued" not in actors.get(signals.seen.remote())
    serve.delete("p14-queue")


@serve.deployment(max_ongoing_requests=2, max_queued_requests=-1)
class Pairs:
    def __init__(self) -> None:
        self.arrived = 0
        self.both = asyncio.Event()

    async def __call__(self, request) -> str:
        if request.query_params.get("pair"):  # waits for a second request: both slots must be free
            self.arrived += 1
            if self.arrived % 2 == 0:
                self.both.set()
            await asyncio.wait_for(self.both.wait(), 10)
            return "paired"
        time.sleep(0.01)  # work that holds the replica's loop: calls and cancels pile up behind it
        return "done"


def _hang_up_after_sending(port: int, n: int) -> None:
    """`n` clients that each send a request and leave at once."""
    for _ in range(n):
        sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        sock.sendall(b"GET /busy HTTP/1.1\r\nHost: x\r\n\r\n")
        sock.close()


def test_clients_that_hang_up_at_once_leave_the_replica_serving(http) -> None:
    """Hundreds of clients that hang up as soon as they have sent: a cancel may reach the
    replica with its call, before the call's task has run a step. Such a call must still
    give back its slot: a leaked slot is lost for good (all of them: every later request
    waits forever). Then two requests that each wait for the other must both run at once."""
    client, port = http
    serve.run(Pairs.bind(), name="p14-hang-ups", route_prefix="/busy")
    _route(client, "/busy")
    threads = [threading.Thread(target=_hang_up_after_sending, args=(port, 200)) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        pair = list(pool.map(lambda _: client.get("/busy", params={"pair": "1"}, timeout=15), range(2)))
    assert [r.status_code for r in pair] == [200, 200], [r.text for r in pair]
    assert [r.text for r in pair] == ["paired", "paired"]
    serve.delete("p14-hang-ups")


# -- item 18: scale to zero over HTTP -------------------------------------------------------------
# Ray 2.x's autoscaling guide, ported by the renaming rule: a deployment with min_replicas=0
# runs no replica while idle; a request starts one and is served by it.
@serve.deployment(
    autoscaling_config={
        "min_replicas": 0,
        "max_replicas": 2,
        "target_ongoing_requests": 1,
        "metrics_interval_s": 0.2,
        "look_back_period_s": 1.0,
        "downscale_delay_s": 1.0,
    },
    graceful_shutdown_wait_loop_s=0.1,
)
class Sleepy:
    def __init__(self, signals) -> None:
        self.signals = signals
        signals.record.remote("replica started")  # (no wait: this runs on the replica's loop)

    async def __call__(self, request) -> str:
        return "awake"

    def __del__(self) -> None:
        self.signals.record.remote("replica stopped")


def _count(signals, what: str) -> int:
    return actors.get(signals.seen.remote()).count(what)


def test_scale_to_zero_keeps_the_route_and_a_request_starts_a_replica(http) -> None:
    client, _ = http
    signals = Signals.remote()
    serve.run(Sleepy.bind(signals), name="p14-zero", route_prefix="/zero")
    _route(client, "/zero")  # published with no replica running
    assert _count(signals, "replica started") == 0
    for round_ in (1, 2):
        r = client.get("/zero", timeout=60)  # waits while the controller starts a replica
        assert (r.status_code, r.text) == (200, "awake")
        wait_until(lambda n=round_: _count(signals, "replica started") == n, timeout=20, what="one replica started")
        # idle again: back to zero replicas; the route stays
        wait_until(lambda n=round_: _count(signals, "replica stopped") == n, timeout=60,
                   what="the deployment to scale back to zero")
        assert "/zero" in client.get("/-/routes").json()
    serve.delete("p14-zero")


@serve.deployment(autoscaling_config={"min_replicas": 0, "max_replicas": 1, "metrics_interval_s": 0.2})
class Broken:
    def __init__(self) -> None:
        raise RuntimeError("the model file is missing")

    def __call__(self) -> str:
        return "never"


def test_a_request_to_a_deployment_at_zero_that_cannot_start_is_a_503_not_a_hang(http) -> None:
    client, _ = http
    serve.run(Broken.bind(), name="p14-broken-zero", route_prefix="/broken-zero")
    _route(client, "/broken-zero")
    r = client.get("/broken-zero", timeout=120)  # waits while the starts fail, then is refused
    assert r.status_code == 503
    assert "unavailable" in r.text and "the model file is missing" in r.text
    assert client.get("/broken-zero", timeout=30).status_code == 503  # at once from now on
    serve.delete("p14-broken-zero")


def test_a_request_to_a_deployment_at_zero_is_bounded_by_request_timeout_s(tmp_path) -> None:
    """request_timeout_s bounds the wait for the replica: a constructor slower than it is a 504."""
    port = free_port()
    go = tmp_path / "go"
    serve.shutdown()  # this test needs its own http_options
    try:
        serve.start(http_options={"port": port, "request_timeout_s": 1.0})
        serve.run(SlowStart.bind(str(go)), name="p14-slow-zero", route_prefix="/slow-zero")
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
            _route(client, "/slow-zero")
            r = client.get("/slow-zero")
            assert r.status_code == 504
            go.write_text("go")  # the constructor may finish now
            wait_until(lambda: client.get("/slow-zero").status_code == 200, timeout=60,
                       what="the replica to start and serve")
    finally:
        serve.shutdown()


@serve.deployment(autoscaling_config={"min_replicas": 0, "max_replicas": 1, "metrics_interval_s": 0.2})
class SlowStart:
    def __init__(self, go: str) -> None:
        while not os.path.exists(go):  # until the test says (a slow model load)
            time.sleep(0.05)

    def __call__(self) -> str:
        return "started"
