"""Metrics and logs on a real 2-node cluster (`zeroserve start` on 127.0.0.1 and
127.0.0.2, each agent serving its node's metrics on the same port of its own IP), with
Serve's proxy on the head node and a replica pinned to the other node:
- each node's endpoint shows its own processes, and only those;
- N HTTP requests move `actors_calls_total` (received, actor) by at least N on the
  replica's node and not on the other; a metric the replica registers shows there with
  the replica process's labels; a replica that dies is gone from the next scrape;
- Serve's public HTTP port serves no internal metrics; `zeroserve status` shows each
  node's endpoint; an explicit metrics port that is taken fails the start clearly;
- `zeroserve logs` reads the replica's file on the other node (by deployment, application
  and replica id) and `-f` follows a new line; head and agent records carry logger and pid.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest

import actors
import serve
from actors.system import metrics_registry, sample_value

from ..conftest import ROOT, RUN_DIR, driver_env, free_port, read_until, wait_until, zeroserve

pytestmark = pytest.mark.timeout(240)
HEAD_IP, OTHER_IP = "127.0.0.1", "127.0.0.2"


def _free_on_both() -> int:
    for _ in range(50):
        port = free_port(HEAD_IP)
        with socket.socket() as s:
            try:
                s.bind((OTHER_IP, port))
            except OSError:
                continue
        return port
    raise RuntimeError("no port free on both node IPs")


@serve.deployment(actor_options={"resources": {"side": 0.01}})  # only the 127.0.0.2 node offers "side"
class Probe:
    def __init__(self) -> None:
        from prometheus_client import Counter

        self.hits = Counter("obs_probe_hits", "Requests this replica answered", registry=metrics_registry())
        print("probe constructed", flush=True)

    async def __call__(self, request) -> str:
        self.hits.inc()
        word = request.query_params.get("say")
        if word:
            print(f"probe says {word}", flush=True)
        return str(os.getpid())


@pytest.fixture(scope="module")
def nodes():
    port, mport, http_port = free_port(), _free_on_both(), free_port()
    zeroserve("start", "--head", "--port", str(port), "--num-cpus", "2", "--metrics-port", str(mport))
    address = f"{HEAD_IP}:{port}"
    zeroserve("start", "--address", address, "--node-ip", OTHER_IP, "--num-cpus", "2", "--resources", '{"side": 1}',
              "--metrics-port", str(mport))
    actors.init(address="auto")
    serve.start(http_options={"location": "HeadOnly", "port": http_port})
    serve.run(Probe.bind(), name="obsapp", route_prefix="/probe")
    urls = {n["ip"]: n["metrics_url"] for n in actors.nodes()}
    yield {"address": address, "mport": mport, "http": f"http://127.0.0.1:{http_port}", "urls": urls}
    serve.shutdown()
    actors.shutdown()
    zeroserve("stop")


def scrape(url: str) -> str:
    with urllib.request.urlopen(url, timeout=10) as r:
        return r.read().decode()


def _get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=10) as r:
        return r.read().decode()


def _records() -> dict[str, dict]:
    return {ip: json.loads((Path(RUN_DIR) / "nodes" / f"{ip}.json").read_text()) for ip in (HEAD_IP, OTHER_IP)}


def test_each_node_serves_its_own_processes_metrics(nodes) -> None:
    urls, mport = nodes["urls"], nodes["mport"]
    assert urls == {ip: f"http://{ip}:{mport}/metrics" for ip in (HEAD_IP, OTHER_IP)}
    replica_pid = int(_get(nodes["http"] + "/probe"))
    rec = _records()
    head_text = wait_until(lambda: (t := scrape(urls[HEAD_IP])) and 'component="proxy"' in t and t, timeout=15,
                           what="the proxy on the head node's endpoint")
    other_text = wait_until(lambda: (t := scrape(urls[OTHER_IP])) and f'pid="{replica_pid}"' in t and t, timeout=15,
                            what="the replica on its node's endpoint")
    for component in ("head", "agent", "controller", "proxy"):
        assert f'component="{component}"' in head_text, component
    assert f'pid="{rec[HEAD_IP]["pids"]["agent"]}"' in head_text
    assert f'pid="{rec[OTHER_IP]["pids"]["agent"]}"' in other_text
    assert f'pid="{rec[OTHER_IP]["pids"]["agent"]}"' not in head_text
    assert 'component="head"' not in other_text and 'component="controller"' not in other_text
    assert f'pid="{replica_pid}"' not in head_text


def test_http_requests_move_actor_calls_on_the_replicas_node_only(nodes) -> None:
    urls, n = nodes["urls"], 100
    replica_pid = int(_get(nodes["http"] + "/probe"))

    def received(text: str) -> float:
        return sample_value(text, "actors_calls_total", direction="received", kind="actor")

    wait_until(lambda: f'pid="{replica_pid}"' in scrape(urls[OTHER_IP]), timeout=15, what="the replica scraped")
    before = {ip: scrape(url) for ip, url in urls.items()}
    for _ in range(n):
        assert _get(nodes["http"] + "/probe") == str(replica_pid)

    def moved() -> dict[str, str] | None:
        after = {ip: scrape(url) for ip, url in urls.items()}
        return after if received(after[OTHER_IP]) - received(before[OTHER_IP]) >= n else None

    after = wait_until(moved, timeout=20, what=f"{n} actor calls counted on {OTHER_IP}")
    assert received(after[HEAD_IP]) - received(before[HEAD_IP]) < n
    sent_by_proxy = (sample_value(after[HEAD_IP], "actors_calls_total", component="proxy", direction="sent",
                                  kind="actor")
                     - sample_value(before[HEAD_IP], "actors_calls_total", component="proxy", direction="sent",
                                    kind="actor"))
    assert sent_by_proxy >= n
    # the metric the replica registered, with its process's labels, on its node only
    hits = sample_value(after[OTHER_IP], "obs_probe_hits_total", component="replica", pid=str(replica_pid))
    assert hits >= n
    assert "obs_probe_hits_total" not in after[HEAD_IP]


def test_no_internal_metrics_on_serves_public_port(nodes) -> None:
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(nodes["http"] + "/metrics", timeout=10)
    assert e.value.code == 404


def test_status_shows_each_nodes_metrics_url(nodes) -> None:
    data = json.loads(zeroserve("status", "--json").stdout)
    assert {n["ip"]: n["metrics_url"] for n in data["nodes"]} == nodes["urls"]
    table = zeroserve("status").stdout
    assert all(url in table for url in nodes["urls"].values())


def test_an_explicit_metrics_port_that_is_taken_fails_the_start_clearly(nodes) -> None:
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.3", 0))
        squatter.listen()
        taken = squatter.getsockname()[1]
        out = zeroserve("start", "--address", nodes["address"], "--node-ip", "127.0.0.3", "--metrics-port",
                        str(taken), check=False)
    assert out.returncode == 1
    assert f"cannot serve the node's metrics on 127.0.0.3:{taken}" in out.stderr
    assert "127.0.0.3" not in {n["ip"] for n in actors.nodes() if n["alive"]}


@pytest.mark.parametrize(("flags", "message"), [
    (("--log-max-bytes", "10"), "must be an integer >= 1024 bytes"),
    (("--log-backups", "0"), "must be an integer >= 1"),
    (("--metrics-port", "70000"), "--metrics-port must be a port number"),
])
def test_bad_observability_flags_fail_before_anything_starts(nodes, flags: tuple[str, str], message: str) -> None:
    out = zeroserve("start", "--address", nodes["address"], "--node-ip", "127.0.0.4", *flags, check=False)
    assert out.returncode == 1 and message in out.stderr
    assert "127.0.0.4" not in {n["ip"] for n in actors.nodes()}


def test_logs_read_a_replica_on_the_other_node_and_follow_new_lines(nodes) -> None:
    _get(nodes["http"] + "/probe?say=first-line")
    replica = serve.status()["applications"]["obsapp"]["deployments"]["Probe"]["replica_details"][0]["replica_id"]

    def shows(target: str) -> str | None:
        out = zeroserve("logs", target, "--tail", "20").stdout
        return out if "probe says first-line" in out else None

    out = wait_until(lambda: shows("Probe"), timeout=15, what="the replica's line through `zeroserve logs`")
    assert re.search(rf"==> {re.escape(OTHER_IP)} replica_obsapp_Probe_\w+\.out <==", out), out
    assert "probe constructed" in out
    assert shows("obsapp") and shows(replica)
    listing = zeroserve("logs").stdout
    assert re.search(rf"{re.escape(OTHER_IP)}\s+replica_obsapp_Probe_\w+\.out", listing)
    assert re.search(rf"{re.escape(HEAD_IP)}\s+head\.log", listing)
    assert OTHER_IP not in zeroserve("logs", "--node", HEAD_IP).stdout
    missing = zeroserve("logs", "NoSuchThing", check=False)
    assert missing.returncode == 1 and "no log files match 'NoSuchThing'" in missing.stderr

    follow = subprocess.Popen([sys.executable, "-c", "import sys; from cluster.cli import main; sys.exit(main())",
                               "logs", "Probe", "-f", "--tail", "1"], env=driver_env(), cwd=str(ROOT),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        read_until(follow, "first-line", timeout=30)  # the tail is printed: following from here
        _get(nodes["http"] + "/probe?say=second-line")
        assert "probe says second-line" in read_until(follow, "second-line", timeout=30)
        follow.send_signal(signal.SIGINT)  # Ctrl-C ends it, quietly
        assert follow.wait(timeout=30) == 0
        assert "Traceback" not in follow.stderr.read()
    finally:
        if follow.poll() is None:
            follow.kill()
            follow.wait()


def test_head_and_agent_records_carry_logger_and_pid(nodes) -> None:
    record = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} (INFO|WARNING|ERROR) cluster[\w.]* pid=(\d+) ")
    rec = _records()
    for target, pid in (("head", rec[HEAD_IP]["pids"]["head"]), ("agent", rec[HEAD_IP]["pids"]["agent"])):
        out = zeroserve("logs", target, "--node", HEAD_IP, "--tail", "50").stdout
        lines = [ln for ln in out.splitlines() if ln and not ln.startswith("==>")]
        matched = [record.match(ln) for ln in lines]
        assert lines and all(matched), out
        assert {m.group(2) for m in matched if m} == {str(pid)}


def test_a_replica_that_dies_is_gone_from_its_nodes_next_scrape(nodes) -> None:
    url = nodes["urls"][OTHER_IP]
    replica_pid = int(_get(nodes["http"] + "/probe"))
    wait_until(lambda: f'pid="{replica_pid}"' in scrape(url), timeout=15, what="the replica scraped")
    os.kill(replica_pid, 9)
    wait_until(lambda: f'pid="{replica_pid}"' not in scrape(url), timeout=15, what="the dead replica gone")
    # the controller replaces it, and the new one is scraped
    new_pid = wait_until(lambda: _replacement(nodes["http"], replica_pid), timeout=60, what="a replacement replica")
    wait_until(lambda: f'pid="{new_pid}"' in scrape(url), timeout=15, what="the new replica scraped")


def _replacement(base: str, old_pid: int) -> int | None:
    try:
        pid = int(_get(base + "/probe"))
    except (urllib.error.URLError, ValueError, OSError):
        return None
    return pid if pid != old_pid else None
