"""Hostile HTTP from raw sockets against a real proxy (an embedded cluster, Serve's proxy,
one replica behind it): malformed requests, request smuggling, oversized heads and bodies,
pipelining, slow headers (slowloris) and slow bodies.

Each case asserts the status code and that nothing reaches the replica that should not
(the replica records every path it serves); the slow cases also assert that the proxy
serves other clients meanwhile, promptly, and that its file descriptors and memory stay
bounded and come back down once the hostile connections are gone.
"""

from __future__ import annotations

import socket
import threading
import time

import httpx
import psutil
import pytest

import serve

from ..conftest import free_port, wait_until
from ._rawhttp import RawResponse, exchange, read_response
from ._traffic import Row, record

pytestmark = [pytest.mark.usefixtures("cluster"), pytest.mark.timeout(120)]
MAX_BODY = 1024 * 1024
HEADER_DEADLINE_S = 30.0  # the proxy's deadline for a request head (proxy._server.HEADER_TIMEOUT_S)


@serve.deployment(route_prefix="/echo")
class Echo:
    def __init__(self) -> None:
        self.seen: list[str] = []

    async def __call__(self, request) -> str:
        body = await request.body()
        if request.url.path.endswith("/seen"):
            return " ".join(self.seen)
        self.seen.append(request.url.path)  # (the path after the route prefix)
        return f"{request.method} {request.url.path} {len(body)}"


@pytest.fixture(scope="module")
def proxy():
    port = free_port()
    serve.start(http_options={"port": port, "max_body_bytes": MAX_BODY, "body_timeout_s": HEADER_DEADLINE_S})
    serve.run(Echo.bind(), name="hostile", route_prefix="/echo")
    try:
        from actors.system import local_cluster

        cluster = local_cluster()
        assert cluster is not None
        agent = psutil.Process(cluster.pids()["agent"])
        [pid] = [p.pid for p in agent.children(recursive=True) if " ".join(p.cmdline()).startswith("zeroserve::HTTPProxyActor")]
        wait_until(lambda: _get(port, "/echo/warm").status_code == 200, timeout=30, what="the route at the proxy")
        yield {"port": port, "pid": pid, "process": psutil.Process(pid)}
    finally:
        serve.shutdown()


def _get(port: int, path: str, timeout: float = 10) -> httpx.Response:
    return httpx.get(f"http://127.0.0.1:{port}{path}", timeout=timeout)


def _seen(port: int) -> list[str]:
    return _get(port, "/echo/seen").text.split()


@pytest.mark.parametrize("raw", [
    b"GARBAGE\r\n\r\n",
    b"GET /echo/a HTTP/1.1\r\nHost: x\r\nNo colon here\r\n\r\n",
    b"GET /echo/a\x00b HTTP/1.1\r\nHost: x\r\n\r\n",
    b"POST /echo/a HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n",
    b"GET /echo/a HTTP/1.1\r\nHost: x\r\nX-Bad: a\x01b\r\n\r\n",
], ids=["garbage", "header-without-colon", "nul-in-path", "bad-content-length", "control-char"])
def test_a_malformed_request_gets_400_and_the_connection_closes(proxy, raw: bytes) -> None:
    before = _seen(proxy["port"])
    answer = exchange(proxy["port"], raw)
    assert answer.status == 400, answer
    assert answer.closed, "the connection stayed open after a malformed request"
    assert _seen(proxy["port"])[len(before):] == [], "a malformed request reached the replica"


@pytest.mark.parametrize("raw", [
    (b"POST /echo/front HTTP/1.1\r\nHost: x\r\nContent-Length: 49\r\nTransfer-Encoding: chunked\r\n\r\n"
     b"0\r\n\r\nGET /echo/smuggled HTTP/1.1\r\nHost: x\r\n\r\n"),
    (b"POST /echo/front HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Length: 4\r\n\r\n"
     b"5c\r\nGET /echo/smuggled HTTP/1.1\r\nHost: x\r\n\r\n0\r\n\r\n"),
    (b"POST /echo/front HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nContent-Length: 44\r\n\r\n"
     b"GET /echo/smuggled HTTP/1.1\r\nHost: x\r\n\r\n"),
], ids=["CL.TE", "TE.CL", "two-content-lengths"])
def test_request_smuggling_gets_400_and_smuggles_nothing(proxy, raw: bytes) -> None:
    before = _seen(proxy["port"])
    answer = exchange(proxy["port"], raw)
    assert answer.status == 400, answer
    assert answer.closed and answer.rest == b"", f"more after the 400: {answer.rest[:200]!r}"
    assert _seen(proxy["port"])[len(before):] == [], "a smuggled request reached the replica"
    assert _get(proxy["port"], "/echo/next").status_code == 200


def test_a_body_cut_short_never_reaches_the_replica(proxy) -> None:
    port = proxy["port"]
    before = _seen(port)
    bad_chunk = exchange(port, b"POST /echo/cut1 HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                               b"ZZ\r\nhello\r\n0\r\n\r\n")
    assert bad_chunk.status == 400 and bad_chunk.closed, bad_chunk
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:  # 10 of 100 bytes, then gone
        s.sendall(b"POST /echo/cut2 HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n" + b"z" * 10)
    assert _get(port, "/echo/after").status_code == 200  # (the replica has handled what reached it by now)
    reached = [p for p in _seen(port)[len(before):] if p != "/after"]
    assert reached == [], f"requests with bodies cut short reached the replica: {reached}"


def test_oversized_heads_and_bodies_are_refused(proxy) -> None:
    port = proxy["port"]
    declared = exchange(port, b"POST /echo/big HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % (MAX_BODY + 1))
    assert declared.status == 413, declared  # refused before the body is sent
    chunk = b"x" * 65536
    chunked = b"".join(b"%x\r\n%s\r\n" % (len(chunk), chunk) for _ in range(MAX_BODY // len(chunk) + 2)) + b"0\r\n\r\n"
    streamed = exchange(port, b"POST /echo/big HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n" + chunked)
    assert streamed.status == 413, streamed
    headers = exchange(port, b"GET /echo/big HTTP/1.1\r\nHost: x\r\n" +
                       b"".join(b"X-Pad-%d: %s\r\n" % (i, b"p" * 1000) for i in range(100)) + b"\r\n")
    assert headers.status == 431, headers
    assert "/big" not in _seen(port)
    ok = exchange(port, b"POST /echo/fits HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\nConnection: close\r\n\r\n"
                  % MAX_BODY + b"y" * MAX_BODY)
    assert (ok.status, ok.body) == (200, b"POST /fits %d" % MAX_BODY), ok


def test_pipelined_requests_are_answered_in_order(proxy) -> None:
    with socket.create_connection(("127.0.0.1", proxy["port"]), timeout=10) as s:
        s.sendall(b"".join(b"GET /echo/p%d HTTP/1.1\r\nHost: x\r\n\r\n" % i for i in range(8)) +
                  b"POST /echo/last HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc")
        buffer = b""
        answers: list[RawResponse] = []
        for _ in range(9):
            answer, buffer = read_response(s, buffer)
            answers.append(answer)
    assert [(a.status, a.body) for a in answers] == [(200, b"GET /p%d 0" % i) for i in range(8)] + \
        [(200, b"POST /last 3")]


class _Others:
    """A well-behaved client asking every 0.1 s while hostile connections are open."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.latencies: list[float] = []
        self.failures: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        with httpx.Client(timeout=10) as client:
            while not self._stop.wait(0.1):
                t = time.monotonic()
                try:
                    r = client.get(f"http://127.0.0.1:{self.port}/echo/other")
                    if r.status_code != 200:
                        self.failures.append(f"{r.status_code} {r.text[:100]}")
                except httpx.HTTPError as e:
                    self.failures.append(f"{type(e).__name__}: {e}")
                self.latencies.append(time.monotonic() - t)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(30)


class _Tricklers:
    """`n` connections each sending `at_once`, then `trickle` one byte per connection every
    `every` s; each one's answer and when it came (b"" if the connection just closed)."""

    def __init__(self, port: int, n: int, at_once: bytes, trickle: bytes, every: float = 0.5) -> None:
        self.opened = time.monotonic()  # (before the first connection: the deadlines run from each one's opening)
        self.socks = [socket.create_connection(("127.0.0.1", port), timeout=60) for _ in range(n)]
        for s in self.socks:
            s.sendall(at_once)
        self.ended: dict[int, tuple[float, bytes]] = {}
        self._data = trickle
        self._every = every
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        for i in range(len(self._data)):
            for k, s in enumerate(self.socks):
                if k in self.ended:
                    continue
                try:
                    s.send(self._data[i:i + 1])
                    s.setblocking(False)
                    try:
                        answer = s.recv(4096)
                    except BlockingIOError:
                        answer = None
                    finally:
                        s.setblocking(True)
                    if answer is not None:  # an answer, or b"" when closed
                        self.ended[k] = (time.monotonic() - self.opened, answer)
                except OSError as e:
                    self.ended[k] = (time.monotonic() - self.opened, repr(e).encode())
            if len(self.ended) == len(self.socks) or self._stop.wait(self._every):
                return

    def close(self) -> None:
        self._stop.set()
        self._thread.join(30)
        for s in self.socks:
            s.close()


def _hostile_run(proxy, tricklers: _Tricklers, until_s: float) -> tuple[_Others, int, int, float]:
    """Serve others while `tricklers` trickle, until all ended or `until_s` passed;
    the proxy's peak FDs, its FDs afterwards and its RSS growth (MB)."""
    process: psutil.Process = proxy["process"]
    rss0 = process.memory_info().rss
    others = _Others(proxy["port"])
    peak = 0
    try:
        while len(tricklers.ended) < len(tricklers.socks) and time.monotonic() - tricklers.opened < until_s:
            peak = max(peak, process.num_fds())
            time.sleep(0.2)
    finally:
        others.stop()
        tricklers.close()
    growth = (process.memory_info().rss - rss0) / 2**20
    deadline = time.monotonic() + 15
    while (after := process.num_fds()) > proxy["fds0"] + 10 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert after <= proxy["fds0"] + 10, f"the proxy kept {after} FDs after the hostile connections closed " \
                                        f"({proxy['fds0']} before them)"
    return others, peak, after, growth


@pytest.fixture
def baseline(proxy):
    proxy["fds0"] = proxy["process"].num_fds()
    return proxy


def test_slowloris_headers_get_408_at_the_deadline_and_others_are_served(baseline) -> None:
    proxy = baseline
    n = 100
    slow = _Tricklers(proxy["port"], n, b"", b"GET /echo/slow HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 1000)
    others, peak, after, growth = _hostile_run(proxy, slow, HEADER_DEADLINE_S + 8)
    answers = dict(slow.ended)
    _record(f"{n} slowloris connections (headers)", others, slow, HEADER_DEADLINE_S + 5)
    assert len(answers) == n, f"{n - len(answers)} slow connections still open after {HEADER_DEADLINE_S + 8} s"
    assert all(a.startswith(b"HTTP/1.1 408") for _, a in answers.values()), {a[:40] for _, a in answers.values()}
    assert all(HEADER_DEADLINE_S <= t <= HEADER_DEADLINE_S + 5 for t, _ in answers.values()), \
        sorted(t for t, _ in answers.values())
    _assert_others_served(others)
    assert peak <= proxy["fds0"] + n + 20, (peak, proxy["fds0"])
    assert growth < 50, f"the proxy grew by {growth:.0f} MB"
    print(f"\nslowloris: {n} connections, 408 after {min(t for t, _ in answers.values()):.1f}-"
          f"{max(t for t, _ in answers.values()):.1f} s; others: {len(others.latencies)} requests, worst "
          f"{max(others.latencies) * 1000:.0f} ms; proxy FDs {proxy['fds0']} -> {peak} -> {after}, RSS +{growth:.1f} MB")


def test_slow_bodies_are_cut_off_and_others_are_served(baseline) -> None:
    proxy = baseline
    n = 100
    slow = _Tricklers(proxy["port"], n, b"POST /echo/slowbody HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n",
                      b"b" * 1000)
    bound = HEADER_DEADLINE_S + 5  # a body must be complete within the head's deadline too
    others, peak, _after, growth = _hostile_run(proxy, slow, bound + 1)
    _record(f"{n} slow bodies (1 byte / 0.5 s)", others, slow, bound, f"body_timeout_s={HEADER_DEADLINE_S:g}")
    _assert_others_served(others)
    assert peak <= proxy["fds0"] + n + 20, (peak, proxy["fds0"])
    assert growth < 50, f"the proxy grew by {growth:.0f} MB"
    answers = dict(slow.ended)
    assert len(answers) == n, f"{n - len(answers)} of {n} slow bodies still open after {bound + 1:.0f} s"
    assert all(a.startswith(b"HTTP/1.1 408") or a == b"" for _, a in answers.values()), \
        {a[:40] for _, a in answers.values()}
    assert "/slowbody" not in _seen(proxy["port"])


def _record(fault: str, others: _Others, slow: _Tricklers, bound_s: float, note: str = "") -> None:
    """A drill-table row: the well-behaved requests meanwhile; recovery: until the proxy had
    cut every hostile connection (or the drill's end if it did not)."""
    cut = max((t for t, _ in slow.ended.values()), default=0.0) if len(slow.ended) == len(slow.socks) else \
        time.monotonic() - slow.opened
    record(Row(fault, len(others.latencies), len(others.failures), len(slow.socks), max(others.latencies, default=0.0),
               cut, bound_s, note or "recovery: until the proxy cut them all"))


def _assert_others_served(others: _Others) -> None:
    assert not others.failures, others.failures[:5]
    assert len(others.latencies) >= 50, len(others.latencies)
    worst = max(others.latencies)
    assert worst < 2.0, f"a well-behaved request took {worst:.2f} s while hostile connections were open"
