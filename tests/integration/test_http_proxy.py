"""The proxy's limits and lifecycle with real clients: 504 cancels the replica's work, a
header-read deadline against slow clients, body deadlines (a total, and the longest gap
between chunks), a cap on connections (each limit logged when it trips), /-/healthz 503
while draining."""

from __future__ import annotations

import asyncio

import httpx
import pytest

import actors
import serve

from ..conftest import free_port, wait_until

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

    async def wait(self, key: str) -> None:
        await self._gate(key).wait()

    async def open(self, key: str) -> None:
        self._gate(key).set()

    def _gate(self, key: str) -> asyncio.Event:
        gates = self.__dict__.setdefault("gates", {})
        return gates.setdefault(key, asyncio.Event())


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


# -- the proxy server alone (no replicas): a forward that answers at once -----------------
class _ServerThread:
    """A ProxyServer on its own loop in a thread, answering every route with 200 'ok'."""

    def __init__(self, with_routes: bool = True, **options) -> None:
        import threading

        from proxy import HTTPResponse, ProxyServer

        async def forward(target, request, request_id):
            return HTTPResponse(200, ((b"content-type", b"text/plain"),), b"ok")

        self.port = free_port()
        self.loop = asyncio.new_event_loop()
        self.server = ProxyServer("127.0.0.1", self.port, forward, **options)
        if with_routes:
            self.server.set_routes({"/": "any"})
        started = threading.Event()

        def run() -> None:
            asyncio.set_event_loop(self.loop)
            self.loop.run_until_complete(self.server.start())
            started.set()
            self.loop.run_forever()

        self.thread = threading.Thread(target=run, daemon=True)
        self.thread.start()
        assert started.wait(30)

    def run(self, coro, timeout: float = 60):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def close(self) -> None:
        self.run(self.server.stop())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(30)


@pytest.fixture
def bare_server():
    servers = []

    def make(**options) -> _ServerThread:
        servers.append(_ServerThread(**options))
        return servers[-1]

    yield make
    for s in servers:
        s.close()


def test_a_client_trickling_its_headers_gets_408_and_others_are_served_meanwhile(bare_server) -> None:
    import socket
    import threading
    import time

    srv = bare_server(header_timeout_s=1.5)
    slow = socket.create_connection(("127.0.0.1", srv.port), timeout=30)
    stop = threading.Event()
    sent = []

    def trickle() -> None:  # a byte every 50 ms, forever: the head never completes
        data = b"GET / HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 100_000
        for b in data:
            if stop.is_set():
                return
            try:
                slow.send(bytes([b]))
            except OSError:
                return
            sent.append(time.monotonic())
            stop.wait(0.05)

    t = threading.Thread(target=trickle, daemon=True)
    t.start()
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{srv.port}", timeout=10) as client:
            while not sent:  # the slow client has started
                time.sleep(0.01)
            for _ in range(5):  # served while the slow client trickles
                assert client.get("/x").text == "ok"
        answer = b""
        while chunk := slow.recv(4096):  # the server answers 408 and closes
            answer += chunk
        closed_at = time.monotonic()
    finally:
        stop.set()
        t.join(10)
        slow.close()
    assert answer.startswith(b"HTTP/1.1 408"), answer[:100]
    assert b"connection: close" in answer
    assert closed_at - sent[0] >= 1.4  # not before the deadline; the client was still sending
    with httpx.Client(base_url=f"http://127.0.0.1:{srv.port}", timeout=10) as client:
        assert client.get("/-/healthz").text == "success"


def _read_response(sock) -> bytes:
    """One whole response of the bare server (its body 'ok', chunked or with a length)."""
    data = b""
    while not (data.endswith(b"0\r\n\r\n") or (b"content-length" in data and data.endswith(b"ok"))):
        chunk = sock.recv(4096)
        assert chunk, f"connection closed after {data!r}"
        data += chunk
    return data


def test_a_silent_connection_is_closed_after_the_header_deadline_and_keep_alive_still_works(bare_server) -> None:
    import socket

    srv = bare_server(header_timeout_s=1.0, keep_alive_timeout_s=30)
    request = b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n"
    with socket.create_connection(("127.0.0.1", srv.port), timeout=30) as kept:
        kept.sendall(request)
        assert _read_response(kept).startswith(b"HTTP/1.1 200")
        with socket.create_connection(("127.0.0.1", srv.port), timeout=30) as silent:
            assert silent.recv(4096).startswith(b"HTTP/1.1 408")  # opened later: its deadline passed
        # the kept-alive connection, idle past the header deadline, serves its next request
        kept.sendall(request)
        assert _read_response(kept).startswith(b"HTTP/1.1 200")


@serve.deployment(route_prefix="/gated")
class Gated:
    def __init__(self, rec: actors.ActorHandle) -> None:
        self.rec = rec

    async def __call__(self, request):
        self.rec.record.remote("started")
        await self.rec.wait.remote("gate")
        return "finished in flight"


def test_healthz_is_503_while_serve_shuts_down_and_requests_in_flight_finish() -> None:
    import threading

    port = free_port()
    base = f"http://127.0.0.1:{port}"
    serve.start(http_options={"port": port})
    rec = Recorder.remote()
    serve.run(Gated.bind(rec))
    shutting: threading.Thread | None = None
    try:
        with httpx.Client(base_url=base, timeout=60) as client:
            _routes(client, 1)
            in_flight: dict = {}
            requester = threading.Thread(target=lambda: in_flight.update(r=client.get("/gated")))
            requester.start()
            wait_until(lambda: _events(rec).get("started") == 1, timeout=30, what="the request to reach the replica")
            assert httpx.get(f"{base}/-/healthz", timeout=10).status_code == 200
            shutting = threading.Thread(target=serve.shutdown)
            shutting.start()
            # a new connection is still accepted, and told the proxy drains
            health = wait_until(lambda: (lambda r: r if r.status_code == 503 else None)(
                httpx.get(f"{base}/-/healthz", timeout=10)), timeout=30, what="/-/healthz to answer 503")
            assert health.text == "draining"
            assert shutting.is_alive() and requester.is_alive()
            actors.get(rec.open.remote("gate"), timeout=10)
            requester.join(60)
            assert (in_flight["r"].status_code, in_flight["r"].text) == (200, "finished in flight")
            shutting.join(90)
            assert not shutting.is_alive()
            with pytest.raises(httpx.ConnectError):  # stopped: no longer accepting
                httpx.get(f"{base}/-/healthz", timeout=10)
    finally:
        if shutting is None:
            serve.shutdown()


def test_a_request_outside_root_path_gets_an_id_too(bare_server) -> None:
    srv = bare_server(root_path="/serve")
    with httpx.Client(base_url=f"http://127.0.0.1:{srv.port}", timeout=10) as client:
        outside = client.get("/elsewhere", headers={"X-Request-ID": "outside-1"})
        assert (outside.status_code, outside.headers["x-request-id"]) == (404, "outside-1")
        inside = client.get("/serve/x")
        assert inside.text == "ok" and inside.headers["x-request-id"]
        assert client.get("/-/healthz", headers={"X-Request-ID": "hz"}).headers["x-request-id"] == "hz"


def test_a_body_that_trickles_or_stalls_gets_408_and_close_while_others_are_served(bare_server, caplog) -> None:
    import socket
    import time

    srv = bare_server(body_timeout_s=1.5)
    head = b"POST /up HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n"
    with socket.create_connection(("127.0.0.1", srv.port), timeout=30) as stalled, \
            socket.create_connection(("127.0.0.1", srv.port), timeout=30) as trickling:
        stalled.sendall(head)  # then nothing
        trickling.sendall(head)
        started = time.monotonic()
        with httpx.Client(base_url=f"http://127.0.0.1:{srv.port}", timeout=10) as client:
            while time.monotonic() - started < 1.0:  # a byte every 100 ms: never idle, always late
                trickling.sendall(b"x")
                assert client.post("/ok", content=b"fine").text == "ok"  # others are served meanwhile
                time.sleep(0.1)
        for sock in (stalled, trickling):
            answer = b""
            while chunk := sock.recv(4096):  # 408, then the connection closes
                answer += chunk
            assert answer.startswith(b"HTTP/1.1 408") and b"connection: close" in answer, answer[:200]
        assert time.monotonic() - started >= 1.4
    with httpx.Client(base_url=f"http://127.0.0.1:{srv.port}", timeout=10) as client:
        assert client.post("/ok", content=b"x" * 100_000).text == "ok"  # a whole body in time is served
    assert "whose request body was too slow" in caplog.text


def test_a_body_idle_for_body_idle_timeout_s_gets_408_long_before_its_total_deadline(bare_server, caplog) -> None:
    import socket
    import time

    srv = bare_server(body_timeout_s=60, body_idle_timeout_s=1.0)
    head = b"POST /up HTTP/1.1\r\nHost: x\r\nContent-Length: 12\r\n\r\n"
    with socket.create_connection(("127.0.0.1", srv.port), timeout=30) as stalled, \
            socket.create_connection(("127.0.0.1", srv.port), timeout=30) as steady:
        stalled.sendall(head + b"abc")  # then nothing: idle, with 59 s of its total left
        stalled_at = time.monotonic()
        steady.sendall(head)
        for _ in range(12):  # a byte every 0.25 s: 3 s in all, never idle for 1 s
            time.sleep(0.25)
            steady.sendall(b"x")
        assert _read_response(steady).startswith(b"HTTP/1.1 200")  # slower in all than one gap: served
        answer = b""
        while chunk := stalled.recv(4096):  # 408, then the connection closes
            answer += chunk
        waited = time.monotonic() - stalled_at
    assert answer.startswith(b"HTTP/1.1 408") and b"connection: close" in answer, answer[:200]
    assert 1.0 <= waited < 30, waited  # the gap ended it, not the 60 s total
    assert "whose request body was too slow" in caplog.text


def test_connections_over_max_connections_get_503_and_are_closed_at_once(bare_server, caplog) -> None:
    import socket

    srv = bare_server(max_connections=20)
    idle = [socket.create_connection(("127.0.0.1", srv.port), timeout=30) for _ in range(20)]
    try:
        with socket.create_connection(("127.0.0.1", srv.port), timeout=30) as extra:
            answer = b""
            while chunk := extra.recv(4096):  # answered and closed without sending anything
                answer += chunk
            assert answer.startswith(b"HTTP/1.1 503") and b"too many connections" in answer
        # the limit tripping is logged (a warning, at most one line per LOG_EVERY_S)
        assert [r.levelname for r in caplog.records if "proxy refused a connection: over max_connections=20"
                in r.getMessage()] == ["WARNING"]
        idle.pop().close()  # room again: a new connection is served
        wait_until(lambda: _served(srv.port), timeout=10, what="a connection to be served again")
    finally:
        for s in idle:
            s.close()


def _served(port: int) -> bool:
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=5) as client:
            return client.get("/x").text == "ok"
    except httpx.HTTPError:
        return False


@serve.deployment(route_prefix="/upload")
class Upload:
    async def __call__(self, request) -> int:
        return len(await request.body())


def test_body_idle_timeout_s_of_http_options_reaches_the_proxy() -> None:
    import socket
    import time

    port = free_port()
    serve.start(http_options={"port": port, "body_idle_timeout_s": 1.0})
    try:
        serve.run(Upload.bind(), name="upload")
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
            _routes(client, 1)
            assert client.post("/upload", content=b"12345").text == "5"
        with socket.create_connection(("127.0.0.1", port), timeout=30) as stalled:
            stalled.sendall(b"POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nab")
            started = time.monotonic()
            answer = b""
            while chunk := stalled.recv(4096):
                answer += chunk
        assert answer.startswith(b"HTTP/1.1 408"), answer[:200]
        assert time.monotonic() - started < 20  # its gap, not the 120 s default total (nor a 30 s gap)
    finally:
        serve.shutdown()


def test_a_proxy_without_its_route_table_answers_503_not_404(bare_server) -> None:
    srv = bare_server(with_routes=False)
    with httpx.Client(base_url=f"http://127.0.0.1:{srv.port}", timeout=10) as client:
        r = client.get("/anything")
        assert r.status_code == 503 and "no route table yet" in r.text
        assert client.get("/-/healthz").status_code == 503  # load balancers keep it out meanwhile
        srv.loop.call_soon_threadsafe(srv.server.set_routes, {"/": "any"})
        wait_until(lambda: client.get("/-/healthz").status_code == 200, timeout=10, what="the routes to arrive")
        assert client.get("/anything").text == "ok"
