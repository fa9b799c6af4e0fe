"""The head under a SIGKILL right after it acknowledged changes, and under absurd load:
a `zeroserve start` node on 127.0.0.7 whose agent restarts its head.

- Every named actor whose creation was acknowledged is there after the restart and
  answers (through the old handle and by name), and no worker is left over or doubled.
- With 5,000 actors waiting for resources, the node's heartbeats keep arriving, the
  head's loop answers at once and `zeroserve status` answers within a second.
"""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import psutil
import pytest

import actors
from actors.system import current_runtime

from ..conftest import RUN_DIR, free_port, read_json_line, wait_until, zeroserve

pytestmark = pytest.mark.timeout(240)
IP = "127.0.0.7"


@pytest.fixture(scope="module")
def node():
    port = free_port(IP)
    out = zeroserve("start", "--head", "--node-ip", IP, "--port", str(port), "--num-cpus", "4",
                    "--resources", '{"slot": 1}').stdout
    token = out.split("the token of this new cluster is ", 1)[1].split()[0]
    address = f"{IP}:{port}"
    actors.init(address=address, token=token)
    yield {"address": address, "token": token}
    actors.shutdown()
    zeroserve("stop", "--node-ip", IP)


def _head(method: str, *args):
    rt = current_runtime()
    return rt.run_threadsafe(lambda: rt.head.call(method, args))


def _head_pid() -> int:
    return json.loads((Path(RUN_DIR) / "nodes" / f"{IP}.json").read_text())["pids"]["head"]


def _workers_titled(prefix: str) -> list[str]:
    found = []
    for p in psutil.process_iter(["cmdline"]):
        try:
            title = " ".join(p.info["cmdline"] or [])
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
        if title.startswith(prefix):
            found.append(title)
    return sorted(found)


@actors.remote(num_cpus=0)
class Keeper:
    def ping(self) -> int:
        return os.getpid()


def test_acknowledged_named_actors_survive_a_head_sigkill_without_orphans(node) -> None:
    head_pid = _head_pid()
    names = [f"keeper-{i}" for i in range(6)]
    handles = [Keeper.options(name=n, namespace="durable", lifetime="detached").remote() for n in names]
    os.kill(head_pid, signal.SIGKILL)  # at once: no sleep between the acknowledgements and the kill

    def answers(i: int) -> int | None:
        try:
            return actors.get(actors.get_actor(names[i], namespace="durable").ping.remote(), timeout=10)
        except (ValueError, actors.ClusterUnavailableError, actors.ActorDiedError):
            return None

    for i in range(len(names)):
        wait_until(lambda i=i: answers(i), timeout=60, what=f"{names[i]} to answer after the head restart")
    assert _head("info")["pid"] != head_pid
    pids = actors.get([h.ping.remote() for h in handles], timeout=30)  # the handles from before the kill
    assert len(set(pids)) == len(names)
    # One worker per actor: none orphaned, none doubled (process titles name the actor).
    wait_until(lambda: len(_workers_titled("zeroserve::Keeper")) == len(names), timeout=15,
               what=f"exactly {len(names)} Keeper workers (saw {_workers_titled('zeroserve::Keeper')})")
    for n in names:
        assert sum(f"Keeper {n} " in t for t in _workers_titled("zeroserve::Keeper")) == 1
    for h in handles:
        actors.kill(h)
    wait_until(lambda: not _workers_titled("zeroserve::Keeper"), timeout=15, what="the Keeper workers to exit")


_FLOOD = """
    import json, sys, actors
    from concurrent.futures import ThreadPoolExecutor
    actors.init(address=sys.argv[1], token=sys.argv[2])

    @actors.remote(num_cpus=0, resources={"slot": 1})
    class Waiter:
        def ping(self):
            return 1

    with ThreadPoolExecutor(4) as pool:
        handles = list(pool.map(lambda _: Waiter.remote(), range(5000)))
    print(json.dumps({"created": len(handles)}), flush=True)
    sys.stdin.readline()
"""


def test_heartbeats_and_status_keep_up_with_5000_waiting_actors(node) -> None:
    import subprocess
    import sys
    import textwrap

    from ..conftest import driver_env

    flood = subprocess.Popen([sys.executable, "-c", textwrap.dedent(_FLOOD), node["address"], node["token"]],
                             env=driver_env(), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
    try:
        t0 = time.monotonic()
        assert read_json_line(flood, timeout=180) == {"created": 5000}
        created_s = time.monotonic() - t0
        info = _head("info")
        assert info["pending"] >= 4999
        worst_age = worst_rtt = 0.0
        deadline = time.monotonic() + 3.0
        while time.monotonic() < deadline:
            t = time.monotonic()
            info = _head("info")
            worst_rtt = max(worst_rtt, time.monotonic() - t)
            worst_age = max(worst_age, *info["heartbeat_age_s"].values())
            time.sleep(0.1)
        assert worst_age < 1.5, f"a node heartbeat was {worst_age:.2f}s old with 5,000 actors waiting"
        assert worst_rtt < 0.5, f"the head took {worst_rtt:.2f}s to answer with 5,000 actors waiting"
        from cluster._status import fetch_status

        t = time.monotonic()
        data = fetch_status(f"tcp://{node['address']}", node["token"])
        status_s = time.monotonic() - t
        assert sum(a["state"] == "PENDING" for a in data["actors"]) >= 4999
        assert status_s < 1.0, f"status took {status_s:.2f}s with 5,000 actors waiting"
        cli = zeroserve("status", "--address", node["address"], "--token", node["token"])
        assert "pending" in cli.stdout.lower()
        print(f"\n5,000 creations {created_s:.1f}s; worst heartbeat age {worst_age:.2f}s; "
              f"head info RTT {worst_rtt * 1000:.0f} ms; status fetch {status_s * 1000:.0f} ms")
    finally:
        if flood.stdin:
            flood.stdin.close()
        flood.wait(timeout=60)
    wait_until(lambda: _head("info")["pending"] == 0, timeout=60, what="the waiting actors to go with their driver")


def test_status_tells_a_stopped_head_from_a_refused_token(node) -> None:
    """The drill: while the head was busy, `zeroserve status` said "refusing our token"."""
    wrong = zeroserve("status", "--address", node["address"], "--token", "not-the-token", check=False)
    assert wrong.returncode == 1 and "refused our token" in wrong.stderr, wrong.stderr
    head_pid = _head("info")["pid"]
    os.kill(head_pid, signal.SIGSTOP)  # a head that cannot answer at all (its loop and its auth handler)
    try:
        busy = zeroserve("status", "--address", node["address"], "--token", node["token"], check=False)
        joining = zeroserve("start", "--address", node["address"], "--node-ip", "127.0.0.8", "--token",
                            node["token"], "--wait-for-head-s", "0", check=False)
    finally:
        os.kill(head_pid, signal.SIGCONT)
    assert busy.returncode == 1 and "busy or unresponsive" in busy.stderr, busy.stderr
    assert "refused" not in busy.stderr
    assert joining.returncode == 1 and "busy or unresponsive" in joining.stderr, joining.stderr
    assert zeroserve("status", "--address", node["address"], "--token", node["token"]).returncode == 0
