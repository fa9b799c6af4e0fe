"""A real multi-node cluster on one machine: `zeroserve start` process trees on
127.0.0.1 (head), 127.0.0.2 and 127.0.0.3, a driver joining with address="auto",
placement across nodes, node and head failures."""

from __future__ import annotations

import json
import os
import signal
import socket
import time
from pathlib import Path

import pytest

import actors
from actors.system import current_runtime

from ..conftest import RUN_DIR, free_port, wait_until, zeroserve

pytestmark = pytest.mark.timeout(180)


@pytest.fixture(scope="module")
def nodes():
    port = free_port()
    out = zeroserve("start", "--head", "--port", str(port), "--num-cpus", "2").stdout
    token = out.split("the token of this new cluster is ", 1)[1].split()[0]
    address = f"127.0.0.1:{port}"
    zeroserve("start", "--address", address, "--node-ip", "127.0.0.2", "--num-cpus", "2", "--resources", '{"GPU": 1}')
    zeroserve("start", "--address", address, "--node-ip", "127.0.0.3", "--num-cpus", "2")
    actors.init(address="auto")
    yield {"address": address, "port": port, "token": token}
    actors.shutdown()
    zeroserve("stop")


def _head(method: str, *args):
    rt = current_runtime()
    return rt.run_threadsafe(lambda: rt.head.call(method, args))


def _ip_of(handle: actors.ActorHandle) -> str:
    info = _head("get_actor_info", handle.actor_id)
    return {n["node_id"]: n["ip"] for n in actors.nodes()}[info.node_id.hex]


@actors.remote(max_restarts=1)
class Where:
    def __init__(self) -> None:
        self.calls = 0

    def count(self) -> int:
        self.calls += 1
        return self.calls

    def pid(self) -> int:
        return os.getpid()

    def call(self, other: actors.ActorHandle) -> int:
        return actors.get(other.count.remote())


def test_status_lists_the_three_nodes(nodes) -> None:
    data = json.loads(zeroserve("status", "--json").stdout)
    assert sorted(n["ip"] for n in data["nodes"] if n["alive"]) == ["127.0.0.1", "127.0.0.2", "127.0.0.3"]
    table = zeroserve("status").stdout
    assert "127.0.0.2" in table and "GPU used/total" in table and "0/1 (0: 0)" in table and "(head)" in table


def test_cli_refuses_bad_starts_clearly(nodes) -> None:
    again = zeroserve("start", "--head", "--port", str(nodes["port"]), check=False)
    assert again.returncode == 1 and "already running on 127.0.0.1" in again.stderr
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.5", 0))
        squatter.listen()
        taken = squatter.getsockname()[1]
        busy = zeroserve("start", "--head", "--node-ip", "127.0.0.5", "--port", str(taken), check=False)
    assert busy.returncode == 1 and f"port {taken} on 127.0.0.5 is in use" in busy.stderr
    wrong = zeroserve("start", "--address", nodes["address"], "--node-ip", "127.0.0.6", "--token", "nope", check=False)
    assert wrong.returncode == 1 and "refused this node's token" in wrong.stderr
    nowhere = zeroserve("start", "--address", f"127.0.0.1:{free_port()}", "--node-ip", "127.0.0.6",
                        "--token", nodes["token"], check=False)
    assert nowhere.returncode == 1 and "cannot reach the head" in nowhere.stderr
    bad = zeroserve("start", "--head", "--node-ip", "127.0.0.6", "--resources", "{oops", check=False)
    assert bad.returncode == 1 and "--resources must be a JSON object" in bad.stderr
    assert "nothing to stop on 127.0.0.9" in zeroserve("stop", "--node-ip", "127.0.0.9").stdout


def test_actors_spread_across_nodes_and_follow_affinity(nodes) -> None:
    spread = [Where.remote() for _ in range(6)]
    actors.get([w.count.remote() for w in spread])
    ips = sorted(_ip_of(w) for w in spread)
    assert ips == ["127.0.0.1"] * 2 + ["127.0.0.2"] * 2 + ["127.0.0.3"] * 2
    node3 = next(n["node_id"] for n in actors.nodes() if n["ip"] == "127.0.0.3")
    pinned = Where.options(node_id=node3).remote()
    gpu = Where.options(resources={"GPU": 1}).remote()
    actors.get([pinned.count.remote(), gpu.count.remote()])
    assert _ip_of(pinned) == "127.0.0.3" and _ip_of(gpu) == "127.0.0.2"
    # actors on different nodes call each other directly
    assert actors.get(spread[0].call.remote(spread[5])) == 2
    for w in [*spread, pinned, gpu]:
        actors.kill(w)


def test_serve_replicas_spread_across_nodes(nodes) -> None:
    import serve

    @serve.deployment(num_replicas=3)
    class WhereAmI:
        def __call__(self) -> str:
            return current_runtime().address.rsplit(":", 1)[0].removeprefix("tcp://")

    serve.start(http_options={"location": "NoServer"})
    try:
        handle = serve.run(WhereAmI.bind(), name="spread", route_prefix=None)
        seen: set[str] = set()
        wait_until(lambda: seen.update(handle.remote().result() for _ in range(30)) or len(seen) == 3,
                   timeout=20, what="answers from replicas on all three nodes")
        assert seen == {"127.0.0.1", "127.0.0.2", "127.0.0.3"}
    finally:
        serve.shutdown()


def test_a_killed_node_is_marked_dead_and_its_actors_restart_elsewhere(nodes) -> None:
    zeroserve("start", "--address", nodes["address"], "--node-ip", "127.0.0.4", "--num-cpus", "2")
    node4 = next(n["node_id"] for n in actors.nodes() if n["ip"] == "127.0.0.4" and n["alive"])
    node2 = next(n["node_id"] for n in actors.nodes() if n["ip"] == "127.0.0.2")
    survivor = Where.options(node_id=node2).remote()
    doomed = Where.options(node_id=node4, max_restarts=0).remote()
    pinned = Where.options(node_id=node4).remote()  # restartable, but only on node 4
    actors.get([survivor.count.remote(), doomed.count.remote(), pinned.count.remote()])
    assert _ip_of(doomed) == "127.0.0.4"
    agent_pid = json.loads((Path(RUN_DIR) / "nodes" / "127.0.0.4.json").read_text())["pids"]["agent"]
    t0 = time.monotonic()
    os.kill(agent_pid, signal.SIGKILL)
    # its workers exit a moment later, when their lifeline to the agent closes
    wait_until(lambda: _death_of(doomed), timeout=2, what="calls to the dead node's actor to fail")
    wait_until(lambda: not next(n for n in actors.nodes() if n["node_id"] == node4)["alive"], timeout=6,
               what="the node to be marked dead")
    assert time.monotonic() - t0 < 5.0
    assert actors.get(survivor.count.remote()) == 2
    # A pinned actor cannot move: its restart is unschedulable, and it says why.
    wait_until(lambda: "not an alive node" in _death_of(pinned), timeout=10, what="the pinned actor's death cause")
    # A restarted agent rejoins as a new node.
    zeroserve("start", "--address", nodes["address"], "--node-ip", "127.0.0.4", "--num-cpus", "2")
    assert any(n["ip"] == "127.0.0.4" and n["alive"] for n in actors.nodes())
    zeroserve("stop", "--node-ip", "127.0.0.4")
    actors.kill(survivor)


def _death_of(handle: actors.ActorHandle) -> str:
    try:
        actors.get(handle.count.remote(), timeout=10)
    except actors.ActorDiedError as e:
        return str(e)
    return ""


def test_restartable_actors_of_a_dead_node_come_back_on_another(nodes) -> None:
    zeroserve("start", "--address", nodes["address"], "--node-ip", "127.0.0.4", "--num-cpus", "2")
    movers = [Where.remote() for _ in range(8)]
    actors.get([m.count.remote() for m in movers])
    on4 = [m for m in movers if _ip_of(m) == "127.0.0.4"]
    assert on4, "the spread placed nothing on the new node"
    node4 = next(n["node_id"] for n in actors.nodes() if n["ip"] == "127.0.0.4" and n["alive"])
    agent_pid = json.loads((Path(RUN_DIR) / "nodes" / "127.0.0.4.json").read_text())["pids"]["agent"]
    os.kill(agent_pid, signal.SIGKILL)  # its workers exit when their lifeline closes, a moment later
    wait_until(lambda: not next(n for n in actors.nodes() if n["node_id"] == node4)["alive"], timeout=6,
               what="the node to be marked dead")

    def back(m: actors.ActorHandle) -> int | None:
        try:
            return actors.get(m.count.remote(), timeout=10)
        except actors.ActorDiedError:
            return None

    for m in on4:
        assert wait_until(lambda m=m: back(m), timeout=15, what="a moved actor to answer") == 1  # fresh state
        assert _ip_of(m) != "127.0.0.4"
    zeroserve("stop", "--node-ip", "127.0.0.4")
    for m in movers:
        actors.kill(m)


def test_calls_go_on_while_the_head_is_killed_and_it_comes_back_with_its_state(nodes) -> None:
    a, b = Where.remote(), Where.remote()
    named = Where.options(name="keeper", lifetime="detached", namespace="ops").remote()
    actors.get([a.count.remote(), b.count.remote(), named.count.remote()])
    _head("kv_put", "checkpoint", b"state-1")
    os.kill(_head("info")["pid"], signal.SIGKILL)
    values = [actors.get(a.call.remote(b)) for _ in range(20)]  # actor to actor, head down or restarting
    assert values == list(range(2, 22))

    def created() -> actors.ActorHandle | None:
        try:
            return Where.remote()
        except actors.ClusterUnavailableError:
            return None

    fresh = wait_until(created, timeout=20, what="creation to work once the head is back")
    assert actors.get(fresh.count.remote(), timeout=20) == 1
    assert actors.get(actors.get_actor("keeper", namespace="ops").count.remote()) == 2
    assert _head("kv_get", "checkpoint") == b"state-1"
    for h in (a, b, fresh, named):
        actors.kill(h)


def test_creation_fails_clearly_while_the_head_is_unresponsive(nodes, monkeypatch) -> None:
    a = Where.remote()
    actors.get(a.count.remote())
    head_pid = _head("info")["pid"]
    monkeypatch.setenv("ZEROSERVE_HEAD_TIMEOUT_S", "1.5")
    os.kill(head_pid, signal.SIGSTOP)
    try:
        with pytest.raises(actors.ClusterUnavailableError, match="did not answer"):
            Where.remote()
        assert actors.get(a.count.remote(), timeout=5) == 2  # existing actors are unaffected
    finally:
        os.kill(head_pid, signal.SIGCONT)
    b = wait_until(lambda: _try_create(), timeout=20, what="creation after the head resumed")
    assert actors.get(b.count.remote(), timeout=20) == 1
    # the head's own stall did not make it declare the cluster dead
    assert all(n["alive"] for n in actors.nodes() if n["ip"] in ("127.0.0.1", "127.0.0.2", "127.0.0.3"))
    actors.kill(a)
    actors.kill(b)


def _try_create() -> actors.ActorHandle | None:
    try:
        return Where.remote()
    except actors.ClusterUnavailableError:
        return None


def test_a_detached_actor_outlives_the_driver_that_made_it(nodes) -> None:
    from ..conftest import read_json_line, start_driver

    maker = start_driver("""
        import json, actors
        actors.init(address="auto", namespace="jobs")

        @actors.remote
        class Ledger:
            def __init__(self):
                self.entries = []

            def add(self, x):
                self.entries.append(x)
                return len(self.entries)

        ledger = Ledger.options(name="ledger", lifetime="detached").remote()
        temp = Ledger.options(name="scratch").remote()
        print(json.dumps({"n": actors.get(ledger.add.remote("first")), "t": actors.get(temp.add.remote(1))}),
              flush=True)
        actors.shutdown()
    """)
    try:
        assert read_json_line(maker) == {"n": 1, "t": 1}
        assert maker.wait(timeout=30) == 0
    finally:
        maker.kill()
    ledger = actors.get_actor("ledger", namespace="jobs")  # the next driver reaches it
    assert actors.get(ledger.add.remote("second")) == 2
    with pytest.raises(ValueError, match="no actor named 'scratch'"):
        actors.get_actor("scratch", namespace="jobs")  # not detached: gone with its driver
    actors.kill(ledger)
