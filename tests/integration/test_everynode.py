"""`http_options.location="EveryNode"` on a real 3-node cluster (127.0.0.1/.2/.3, each
proxy binding its own node's IP with `host="node"`), behind a real nginx load balancer.

- one proxy per node, each answering /-/healthz and the routes; a node that joins gets
  a proxy, a node that leaves loses it; a proxy killed while its node lives is restarted;
- nginx in front of the three proxies with steady traffic: a node's agent is SIGKILLed
  (its workers, proxy and replica included, die with it) and every request that started
  after the node's processes were gone succeeds; the only ones allowed to fail are those
  in flight at that moment. Then the node rejoins and gets a proxy again.

nginx OSS has no active health checks: it notices a dead upstream by a refused or failed
connection (`proxy_next_upstream error`, passive `max_fails`/`fail_timeout`). `/-/healthz`
is for load balancers that probe (cloud LBs, nginx Plus, HAProxy).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import psutil
import pytest

import actors
import serve
from actors.messages import ActorState
from actors.system import current_runtime

from ..conftest import RUN_DIR, free_port, still_running, wait_until, zeroserve

pytestmark = pytest.mark.timeout(300)
IPS = ("127.0.0.1", "127.0.0.2", "127.0.0.3")


@pytest.fixture(scope="module")
def nodes():
    port = free_port()
    zeroserve("start", "--head", "--port", str(port), "--num-cpus", "2")
    address = f"127.0.0.1:{port}"
    for ip in IPS[1:]:
        zeroserve("start", "--address", address, "--node-ip", ip, "--num-cpus", "2")
    actors.init(address="auto")
    yield {"address": address}
    actors.shutdown()
    zeroserve("stop")


@pytest.fixture(scope="module")
def everynode(nodes):
    """Serve with a proxy on every node and an app answering with its replica's node IP."""
    http_port = int(os.environ["ZEROSERVE_HTTP_PORT"])
    serve.start(http_options={"location": "EveryNode", "host": "node", "port": http_port})
    serve.run(WhereAmI.bind(), name="where", route_prefix="/where")
    yield {**nodes, "http_port": http_port}
    serve.shutdown()


@serve.deployment(num_replicas=3)
class WhereAmI:
    async def __call__(self, request) -> str:
        import asyncio

        await asyncio.sleep(0.01)  # so that requests are in flight on every node
        return current_runtime().node_ip


def _head(call):
    """`call(head_client)`, awaited on the runtime's loop: e.g. _head(lambda h: h.list_actors())."""
    rt = current_runtime()
    return rt.run_threadsafe(lambda: call(rt.head))


def _healthy_proxies() -> dict[str, str]:
    """{node IP: url} of the HEALTHY proxies."""
    return {p["node_ip"]: p["url"] for p in serve.status()["proxies"].values() if p["state"] == "HEALTHY"}


def _proxy_pid(ip: str) -> int | None:
    node_ids = {n["node_id"] for n in actors.nodes() if n["ip"] == ip and n["alive"]}
    for info in _head(lambda h: h.list_actors()):
        if ((info.name or "").startswith("SERVE_PROXY::") and info.node_id is not None
                and info.node_id.hex in node_ids and info.state is ActorState.ALIVE):
            return info.pid
    return None


def _answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=5).status_code == 200
    except httpx.HTTPError:
        return False


def _agent_pid(ip: str) -> int:
    return json.loads((Path(RUN_DIR) / "nodes" / f"{ip}.json").read_text())["pids"]["agent"]


def _proxy_ips() -> list[str]:
    """IPs of the nodes hosting a live proxy actor, as the head sees it."""
    ips = {n["node_id"]: n["ip"] for n in actors.nodes()}
    return sorted(ips[i.node_id.hex] for i in _head(lambda h: h.list_actors()) if (i.name or "").startswith("SERVE_PROXY::")
                  and i.node_id is not None and i.state is not ActorState.DEAD)


def _refused(url: str) -> bool:
    try:
        httpx.get(url, timeout=5)
    except httpx.ConnectError:
        return True
    return False


# Before the module's EveryNode Serve starts (tests run in file order):
def test_headonly_runs_one_proxy_on_the_head_node_and_shutdown_stops_it(nodes) -> None:
    port = free_port()
    serve.start(http_options={"location": "HeadOnly", "host": "node", "port": port})
    try:
        assert _healthy_proxies() == {"127.0.0.1": f"http://127.0.0.1:{port}"}
        assert _proxy_ips() == ["127.0.0.1"]
        assert httpx.get(f"http://127.0.0.1:{port}/-/healthz", timeout=10).text == "success"
        assert _refused(f"http://127.0.0.2:{port}/-/healthz")
    finally:
        serve.shutdown()
    assert _proxy_ips() == []
    assert _refused(f"http://127.0.0.1:{port}/-/healthz")


def test_a_port_taken_on_one_node_fails_serve_start_and_leaves_nothing_behind(nodes) -> None:
    import socket

    with socket.socket() as squatter:
        squatter.bind(("127.0.0.2", 0))
        squatter.listen()
        port = squatter.getsockname()[1]
        with pytest.raises(RuntimeError, match=f"could not listen on 127.0.0.2:{port}"):
            serve.start(http_options={"location": "EveryNode", "host": "node", "port": port})
    wait_until(lambda: _proxy_ips() == [], timeout=20, what="the other nodes' proxies to be stopped")
    # Three nodes on one machine all binding 127.0.0.1: the message says what to do.
    with pytest.raises(RuntimeError, match="host='node' binds each proxy to its node's IP"):
        serve.start(http_options={"location": "EveryNode", "host": "127.0.0.1", "port": free_port()})
    wait_until(lambda: _proxy_ips() == [], timeout=20, what="the proxies to be stopped")
    assert _head(lambda h: h.get_named_actor("SERVE_CONTROLLER", "serve")) is None or \
        _head(lambda h: h.get_named_actor("SERVE_CONTROLLER", "serve")).state is ActorState.DEAD


def test_a_proxy_on_every_node_follows_nodes_joining_and_leaving(everynode) -> None:
    port = everynode["http_port"]
    assert _healthy_proxies() == {ip: f"http://{ip}:{port}" for ip in IPS}
    for ip in IPS:
        health = httpx.get(f"http://{ip}:{port}/-/healthz", timeout=10)
        assert (health.status_code, health.text) == (200, "success")
        assert wait_until(lambda ip=ip: _answers(f"http://{ip}:{port}/where"), timeout=20,
                          what=f"the proxy on {ip} to route /where")
    # A node joins: it gets a proxy of its own; while something else holds the port there,
    # the proxy is reported UNHEALTHY and retried until the port is free.
    import socket

    squatter = socket.socket()
    squatter.bind(("127.0.0.4", port))
    squatter.listen()
    zeroserve("start", "--address", everynode["address"], "--node-ip", "127.0.0.4", "--num-cpus", "2")
    try:
        def refused() -> dict | None:
            return next((p for p in serve.status()["proxies"].values()
                         if p["node_ip"] == "127.0.0.4" and p["state"] == "UNHEALTHY"), None)

        assert "in use" in wait_until(refused, timeout=30, what="the joining node's proxy to fail on the port")["message"]
        squatter.close()
        wait_until(lambda: "127.0.0.4" in _healthy_proxies(), timeout=30, what="a proxy on the joining node")
        wait_until(lambda: _answers(f"http://127.0.0.4:{port}/where"), timeout=20,
                   what="the joining node's proxy to route /where")
        # A proxy killed while its node lives is restarted there.
        old = _proxy_pid("127.0.0.2")
        assert old is not None
        os.kill(old, signal.SIGKILL)
        wait_until(lambda: _proxy_pid("127.0.0.2") not in (None, old) and "127.0.0.2" in _healthy_proxies(),
                   timeout=30, what="the killed proxy to be restarted on its node")
        wait_until(lambda: _answers(f"http://127.0.0.2:{port}/-/healthz"), timeout=20,
                   what="the restarted proxy to answer")
    finally:
        squatter.close()
        zeroserve("stop", "--node-ip", "127.0.0.4")
    # The node leaves: its proxy is forgotten (not restarted elsewhere).
    wait_until(lambda: sorted(p["node_ip"] for p in serve.status()["proxies"].values()) == sorted(IPS),
               timeout=30, what="the leaving node's proxy to be forgotten")
    assert _healthy_proxies().keys() == set(IPS)


def test_serve_status_lists_the_proxies(everynode) -> None:
    port = everynode["http_port"]
    table = zeroserve("serve", "status").stdout
    assert f"Serve: HTTP at http://127.0.0.1:{port} (EveryNode)" in table
    rows = {line.split()[1]: line.split() for line in table.splitlines() if line.strip().startswith(tuple(
        n["node_id"] for n in actors.nodes()))}
    assert {ip: row[2:4] for ip, row in rows.items()} == {ip: ["HEALTHY", f"http://{ip}:{port}"] for ip in IPS}


def _controller_pid() -> int | None:
    info = _head(lambda h: h.get_named_actor("SERVE_CONTROLLER", "serve"))
    return info.pid if info is not None and info.state is ActorState.ALIVE else None


def test_a_restarted_controller_adopts_the_running_proxies(everynode) -> None:
    port = everynode["http_port"]
    proxies = {ip: _proxy_pid(ip) for ip in IPS}
    old = _controller_pid()
    assert old is not None and None not in proxies.values()
    os.kill(old, signal.SIGKILL)
    for ip in IPS:  # traffic keeps flowing while the controller is down or recovering
        r = httpx.get(f"http://{ip}:{port}/where", timeout=30)
        assert r.status_code == 200 and r.text in IPS
    wait_until(lambda: _controller_pid() not in (None, old), timeout=30, what="the controller to restart")
    wait_until(lambda: _healthy_proxies().keys() == set(IPS), timeout=30, what="the adopted proxies to be HEALTHY")
    assert {ip: _proxy_pid(ip) for ip in IPS} == proxies, "proxies were restarted instead of adopted"


# -- behind nginx ------------------------------------------------------------------------
def _nginx() -> str:
    found = shutil.which("nginx") or next((p for p in ("/usr/sbin/nginx", "/usr/local/sbin/nginx")
                                           if os.access(p, os.X_OK)), None)
    if found is None:
        if os.environ.get("ZEROSERVE_REQUIRE_NGINX"):  # set by .ci/run, which installs it
            pytest.fail("nginx is not installed, though .ci/run should have installed it")
        pytest.skip("nginx is not installed (apt-get install -y nginx; .ci/run installs it)")
    return found


def _nginx_conf(tmp: Path, listen: int, upstreams: list[str]) -> Path:
    servers = "\n".join(f"        server {u} max_fails=1 fail_timeout=30s;" for u in upstreams)
    temp = "\n".join(f"    {kind}_temp_path {tmp / kind};" for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
    user = "user root;" if os.geteuid() == 0 else ""  # workers may write our temp dirs
    conf = tmp / "nginx.conf"
    conf.write_text(f"""
{user}
worker_processes 1;
daemon off;
pid {tmp / 'nginx.pid'};
error_log {tmp / 'error.log'} warn;
events {{ worker_connections 512; }}
http {{
    access_log off;
{temp}
    upstream serve {{
{servers}
        keepalive 16;
    }}
    server {{
        listen 127.0.0.1:{listen};
        location / {{
            proxy_pass http://serve;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_next_upstream error timeout http_502 http_503;
            proxy_next_upstream_tries 3;
            proxy_connect_timeout 2s;
            proxy_read_timeout 60s;
        }}
    }}
}}
""")
    return conf


@pytest.fixture
def nginx(everynode, tmp_path):
    binary = _nginx()
    listen = free_port()
    conf = _nginx_conf(tmp_path, listen, [f"{ip}:{everynode['http_port']}" for ip in IPS])
    proc = subprocess.Popen([binary, "-p", str(tmp_path), "-e", str(tmp_path / "error.log"), "-c", str(conf)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        def up() -> bool:
            if proc.poll() is not None:
                pytest.fail(f"nginx exited ({proc.returncode}): {proc.stderr.read() if proc.stderr else ''}")
            return _answers(f"http://127.0.0.1:{listen}/-/healthz")

        wait_until(up, timeout=20, what="nginx to answer")
        yield f"http://127.0.0.1:{listen}"
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


@dataclass
class _Request:
    start: float
    end: float
    ok: bool
    answer: str


class _Traffic:
    """Client threads sending GETs back to back through the load balancer."""

    def __init__(self, url: str, threads: int = 4) -> None:
        self.url = url
        self.done: list[_Request] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, daemon=True) for _ in range(threads)]
        for t in self._threads:
            t.start()

    def _run(self) -> None:
        with httpx.Client(timeout=60) as client:
            while not self._stop.is_set():
                start = time.monotonic()
                try:
                    r = client.get(self.url)
                    ok, answer = r.status_code == 200, f"{r.status_code} {r.text[:200]}"
                except httpx.HTTPError as e:
                    ok, answer = False, f"{type(e).__name__}: {e}"
                with self._lock:
                    self.done.append(_Request(start, time.monotonic(), ok, answer))

    def since(self, t: float) -> list[_Request]:
        with self._lock:
            return [r for r in self.done if r.start > t]

    def stop(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(90)


def test_requests_keep_succeeding_through_nginx_when_a_node_dies(everynode, nginx) -> None:
    port = everynode["http_port"]
    for ip in IPS:  # what a probing load balancer would check
        assert httpx.get(f"http://{ip}:{port}/-/healthz", timeout=10).status_code == 200
    victim = "127.0.0.3"
    doomed = [p.pid for p in psutil.Process(_agent_pid(victim)).children(recursive=True)]
    assert _proxy_pid(victim) in doomed
    traffic = _Traffic(f"{nginx}/where")
    try:
        t0 = time.monotonic()
        wait_until(lambda: {r.answer.split(" ", 1)[1] for r in traffic.since(t0) if r.ok} >= set(IPS), timeout=30,
                   what="traffic through nginx to reach replicas on all three nodes")
        t_kill = time.monotonic()
        os.kill(_agent_pid(victim), signal.SIGKILL)
        try:
            wait_until(lambda: not still_running(doomed), timeout=10, what="the killed node's workers to exit")
        except BaseException:
            print(f"survivors of the node's SIGKILL: {still_running(doomed)}")
            raise
        t_gone = time.monotonic()
        wait_until(lambda: not any(n["alive"] for n in actors.nodes() if n["ip"] == victim), timeout=15,
                   what="the node to be marked dead")
        wait_until(lambda: len([r for r in traffic.since(t_gone) if r.ok]) >= 100 and
                   time.monotonic() - t_gone > 8, timeout=90, what="100 requests after the node died")
    finally:
        traffic.stop()
    done = traffic.done
    failed = [r for r in done if not r.ok]
    in_flight_at_kill = [r for r in done if r.start <= t_gone and r.end >= t_kill]
    late_failures = [r for r in failed if r.start > t_gone]
    assert not late_failures, f"requests started after the node's processes were gone failed: {late_failures[:5]}"
    assert len(failed) <= len(in_flight_at_kill), (failed, len(in_flight_at_kill))
    after = [r for r in done if r.start > t_gone and r.ok]
    assert after and all(r.answer.split(" ", 1)[1] in IPS[:2] for r in after)
    print(f"\n{len(done)} requests through nginx, {len(failed)} failed, "
          f"{len(in_flight_at_kill)} in flight when the node died: {[(round(r.start - t_kill, 2), r.answer) for r in failed]}")
    # The node comes back (a new node id on the same IP): it gets a proxy again.
    zeroserve("start", "--address", everynode["address"], "--node-ip", victim, "--num-cpus", "2")
    wait_until(lambda: victim in _healthy_proxies(), timeout=30, what="a proxy on the node that rejoined")
    wait_until(lambda: _answers(f"http://{victim}:{port}/where"), timeout=20, what="the rejoined node to route")
    assert sorted(p["node_ip"] for p in serve.status()["proxies"].values()) == sorted(IPS)


def test_proxy_status_codes_tell_a_load_balancer_what_it_may_retry() -> None:
    from serve._data.http_proxy import _status_of
    from serve.exceptions import BackPressureError

    assert _status_of(BackPressureError("full")) == 503
    assert _status_of(actors.ActorDiedError("the replica died with the request")) == 500
    assert _status_of(actors.RuntimeShutDownError("the runtime of this process is shut down")) == 503
    assert _status_of(ValueError("the deployment's own error")) == 500
    assert _status_of(actors.RemoteError("Oops", "unpicklable user error", "tb")) == 500
