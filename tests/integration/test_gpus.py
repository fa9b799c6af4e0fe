"""GPU placement on a real two-node cluster without GPUs: `zeroserve start --num-gpus 2`
on 127.0.0.1 (head) and 127.0.0.2 gives each node devices "0" and "1"; Serve replicas
with `num_gpus: 0.5` get specific devices, see them in `CUDA_VISIBLE_DEVICES` and
`actors.get_gpu_ids()`, fill the four devices two per device, a ninth waits (its status
says for what) until one is deleted, and a SIGKILLed replica's share is free at once for
its replacement."""

from __future__ import annotations

import json
import os
import signal
from collections import Counter
from typing import Any

import pytest

import actors
import serve
from actors.system import current_runtime

from ..conftest import free_port, wait_until, zeroserve

pytestmark = pytest.mark.timeout(240)


@pytest.fixture(scope="module")
def gpu_nodes():
    port = free_port()
    zeroserve("start", "--head", "--port", str(port), "--num-cpus", "4", "--num-gpus", "2")
    zeroserve("start", "--address", f"127.0.0.1:{port}", "--node-ip", "127.0.0.2", "--num-cpus", "4",
              "--num-gpus", "2")
    actors.init(address="auto")
    serve.start(http_options={"location": "NoServer"})
    yield
    serve.shutdown()
    actors.shutdown()
    zeroserve("stop")


@serve.deployment(actor_options={"num_gpus": 0.5, "num_cpus": 0})
class Model:
    def __call__(self) -> dict[str, Any]:
        rt = current_runtime()
        return {"actor_id": rt.actor_id.hex, "node_ip": rt.node_ip, "pid": os.getpid(),
                "cuda": os.environ.get("CUDA_VISIBLE_DEVICES"), "ids": actors.get_gpu_ids()}


def _views(handle: Any, replicas: int) -> dict[str, dict[str, Any]]:
    """What each replica behind `handle` reports about itself, by actor id (calls until all answered)."""
    seen: dict[str, dict[str, Any]] = {}

    def all_seen() -> bool:
        for _ in range(10):
            view = handle.remote().result(timeout_s=30)
            seen[view["actor_id"]] = view
        return len(seen) >= replicas

    wait_until(all_seen, timeout=60, what=f"an answer from each of the {replicas} replicas")
    assert len(seen) == replicas
    return seen


def _head_view() -> dict[str, Any]:
    rt = current_runtime()
    return {a.actor_id.hex: a for a in rt.run_threadsafe(lambda: rt.head.list_actors())}


def _placements(views: dict[str, dict[str, Any]]) -> list[tuple[str, str]]:
    """(node IP, device) of each replica, checked against the head's record of it."""
    head = _head_view()
    ips = {n["node_id"]: n["ip"] for n in actors.nodes()}
    out = []
    for actor_id, view in views.items():
        info = head[actor_id]
        assert len(info.gpu_ids) == 1
        (device,) = info.gpu_ids
        assert view["cuda"] == device and view["ids"] == [int(device)]
        assert view["node_ip"] == ips[info.node_id.hex]
        out.append((view["node_ip"], device))
    return out


def test_fractional_gpus_fill_devices_and_a_ninth_waits(gpu_nodes) -> None:
    seven_app = serve.run(Model.options(num_replicas=7).bind(), name="seven", route_prefix=None)
    eighth_app = serve.run(Model.options(num_replicas=1).bind(), name="eighth", route_prefix=None)
    seven, eighth = _views(seven_app, 7), _views(eighth_app, 1)
    pairs = _placements(seven) + _placements(eighth)
    assert Counter(pairs) == {(ip, d): 2 for ip in ("127.0.0.1", "127.0.0.2") for d in ("0", "1")}
    assert actors.available_resources().get("GPU") == 0.0
    table = zeroserve("status").stdout
    assert table.count("2/2 (0: 1, 1: 1)") == 2, table

    with pytest.raises(serve.DeployTimeoutError, match=r"waiting for resources \{GPU: 0.5\}"):
        serve.run(Model.bind(), name="ninth", route_prefix=None, timeout_s=3)
    ninth_app = serve.run(Model.bind(), name="ninth", route_prefix=None, _wait=False)
    (freed,) = _placements(eighth)
    serve.delete("eighth")
    wait_until(lambda: serve.status()["applications"]["ninth"]["deployments"]["Model"]["replicas"] == {"RUNNING": 1},
               timeout=60,
               what="the ninth replica to start once the eighth was deleted")
    assert _placements(_views(ninth_app, 1)) == [freed]

    # A SIGKILLed replica's share is free at once: its replacement gets that very device.
    victim_id, victim = next(iter(seven.items()))
    (victim_place,) = _placements({victim_id: victim})
    os.kill(victim["pid"], signal.SIGKILL)

    def replaced() -> bool:
        return victim_id not in _head_view() or _head_view()[victim_id].state.value == "DEAD"

    wait_until(replaced, timeout=30, what="the killed replica to be seen dead")
    wait_until(lambda: len({a for a in _views(seven_app, 7)} - {victim_id}) == 7, timeout=60,
               what="a replacement replica")
    after = _views(seven_app, 7)
    assert victim_id not in after
    (new_id,) = set(after) - set(seven)
    assert _placements({new_id: after[new_id]}) == [victim_place]

    serve.delete("seven")
    serve.delete("ninth")
    wait_until(lambda: actors.available_resources().get("GPU") == 4.0, timeout=30, what="every device free again")
    data = json.loads(zeroserve("status", "--json").stdout)
    assert all(n["gpu_free"] == {"0": 1.0, "1": 1.0} for n in data["nodes"] if n["alive"])
    assert all(n["gpu_free"] == {"0": 1.0, "1": 1.0} for n in actors.nodes() if n["alive"])


def test_more_gpus_than_a_node_has_fail_at_once(gpu_nodes) -> None:
    @actors.remote(num_gpus=3)
    class Greedy:
        def ids(self) -> list:
            return actors.get_gpu_ids()

    with pytest.raises(actors.ActorUnschedulableError, match="GPU"):
        actors.get(Greedy.remote().ids.remote(), timeout=30)

    @actors.remote(num_gpus=2)
    class Whole:
        def ids(self) -> tuple:
            return actors.get_gpu_ids(), os.environ.get("CUDA_VISIBLE_DEVICES")

    whole = Whole.remote()
    assert actors.get(whole.ids.remote(), timeout=30) == ([0, 1], "0,1")
    actors.kill(whole)
