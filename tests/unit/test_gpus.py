"""GPU devices: the allocator (`cluster._gpus`), detection (`cluster._accelerators`), the
head handing out devices (fractions packed, never over-committed, freed on exit, kept
across a head restart), and option validation."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Any

import pytest

from actors import ActorUnschedulableError
from actors._options import validate_actor_options
from actors.messages import ActorId, ActorOptions, ActorSpec, ActorState, NodeId
from cluster._accelerators import NodeGpus, accelerator_type_of, node_gpus
from cluster._gpus import allocate, fits_devices, free_shares, release
from cluster._head import Head
from cluster._head_state import restore
from cluster._head_store import HeadStore
from cluster._scheduler import NodeLoad, pick_node
from cluster.messages import NodeRegistration, WorkerExit

# -- the allocator ----------------------------------------------------------------------------------


def test_fractions_pack_onto_the_fullest_device_that_fits() -> None:
    free = {"0": 1.0, "1": 1.0}
    assert allocate(free, 0.5) == ("0",)
    assert allocate(free, 0.25) == ("0",)  # 0.5 free on 0: less room than 1, still fits
    assert allocate(free, 0.5) == ("1",)  # 0 has 0.25 left: too little
    assert allocate(free, 0.25) == ("0",)
    assert free == {"0": 0.0, "1": 0.5}
    assert allocate(free, 0.75) is None
    assert free == {"0": 0.0, "1": 0.5}  # a refused allocation changes nothing


def test_a_fraction_avoids_devices_its_group_already_shares_when_another_fits() -> None:
    free = {"0": 0.5, "1": 1.0}
    assert allocate(free, 0.5, crowded={"0"}) == ("1",)  # spread: "0" holds one of its group
    assert allocate(free, 0.5, crowded={"0", "1"}) == ("0",)  # every device crowded: pack again
    assert allocate(free, 0.5, crowded={"1"}) == ("1",)  # the only device that fits
    assert free == {"0": 0.0, "1": 0.0}


def test_whole_requests_take_entirely_free_devices_only() -> None:
    free = {"0": 1.0, "1": 1.0, "2": 1.0}
    assert allocate(free, 0.5) == ("0",)
    assert not fits_devices(free, 3)  # 2.5 GPUs free, but only two whole devices
    assert allocate(free, 2) == ("1", "2")
    assert allocate(free, 1) is None
    assert free == {"0": 0.5, "1": 0.0, "2": 0.0}


def test_release_gives_back_exactly_what_was_taken() -> None:
    free = {"0": 1.0, "1": 1.0}
    held = [(allocate(free, amount), amount) for amount in (0.3, 0.3, 0.3, 1)]
    assert all(ids for ids, _ in held)
    assert free_shares(["0", "1"], held) == pytest.approx(free)
    for ids, amount in held:
        release(free, ids, amount)
    assert free == pytest.approx({"0": 1.0, "1": 1.0})
    release(free, ("0", "gone"), 0.5)  # never above 1, unknown devices ignored
    assert free == pytest.approx({"0": 1.0, "1": 1.0})


def test_a_device_is_never_over_committed() -> None:
    free = {"0": 1.0}
    taken = 0.0
    while (ids := allocate(free, 0.3)) is not None:
        assert ids == ("0",)
        taken += 0.3
    assert taken == pytest.approx(0.9)
    assert free["0"] == pytest.approx(0.1)


def test_the_scheduler_checks_devices_not_only_the_sum() -> None:
    half_free = NodeLoad(NodeId("a"), True, {"GPU": 2.0}, {"GPU": 1.0}, gpu_free={"0": 0.5, "1": 0.5})
    assert pick_node([half_free], {"GPU": 0.5}) == NodeId("a")
    assert pick_node([half_free], {"GPU": 1.0}) is None  # 1.0 free in all, no device with 1.0
    with pytest.raises(ActorUnschedulableError, match="num_gpus"):
        pick_node([half_free], {"GPU": 3.0})


# -- detection ----------------------------------------------------------------------------------------


def test_num_gpus_names_devices_from_zero() -> None:
    assert node_gpus(3) == NodeGpus(("0", "1", "2"))
    assert node_gpus(0) == NodeGpus(())
    assert NodeGpus(("0", "1"), "A100").resources() == {"GPU": 2.0, "accelerator_type:A100": 1.0}
    assert NodeGpus(()).resources() == {}
    with pytest.raises(ValueError, match="--num-gpus"):
        node_gpus(-1)


def test_visible_devices_are_read_from_the_environment() -> None:
    assert node_gpus(None, {"CUDA_VISIBLE_DEVICES": "2,3"}).ids == ("2", "3")
    assert node_gpus(None, {"NVIDIA_VISIBLE_DEVICES": "GPU-abc"}).ids == ("GPU-abc",)
    assert node_gpus(None, {"CUDA_VISIBLE_DEVICES": ""}).ids == ()
    assert node_gpus(None, {"CUDA_VISIBLE_DEVICES": "1", "NVIDIA_VISIBLE_DEVICES": "0,1"}).ids == ("1",)


def test_devices_listed_by_nvidia_smi(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    smi = tmp_path / "nvidia-smi"
    smi.write_text("#!/bin/sh\n"
                   "echo 'GPU 0: NVIDIA A100-SXM4-40GB (UUID: GPU-1111)'\n"
                   "echo 'GPU 1: NVIDIA A100-SXM4-40GB (UUID: GPU-2222)'\n")
    smi.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}:{os.environ.get('PATH', '')}")
    found = node_gpus(None, {})
    assert found == NodeGpus(("0", "1"), "A100")
    assert found.resources() == {"GPU": 2.0, "accelerator_type:A100": 1.0}
    assert node_gpus(None, {"NVIDIA_VISIBLE_DEVICES": "all"}).ids == ("0", "1")
    assert node_gpus(None, {"CUDA_VISIBLE_DEVICES": "1"}) == NodeGpus(("1",), "A100")
    assert node_gpus(None, {"NVIDIA_VISIBLE_DEVICES": "void"}).ids == ()
    smi.write_text("#!/bin/sh\necho 'NVIDIA-SMI has failed' >&2\nexit 9\n")
    assert node_gpus(None, {}) == NodeGpus(())  # a broken nvidia-smi is no GPU, not a failed agent


def test_accelerator_type_from_the_device_name() -> None:
    assert accelerator_type_of("NVIDIA A100-SXM4-40GB") == "A100"
    assert accelerator_type_of("Tesla T4") == "T4"
    assert accelerator_type_of("NVIDIA H100 80GB HBM3") == "H100"


# -- options ------------------------------------------------------------------------------------------


def test_num_gpus_options() -> None:
    assert validate_actor_options({"num_gpus": 0.5}, is_async=True).demand() == {"GPU": 0.5}
    assert validate_actor_options({"num_gpus": 2}, is_async=True).num_gpus == 2.0
    opts = validate_actor_options({"resources": {"GPU": 1, "TPU": 2}}, is_async=True)
    assert (opts.num_gpus, opts.resources) == (1.0, (("TPU", 2.0),))
    for bad in ({"num_gpus": 1.5}, {"num_gpus": -0.5}, {"num_gpus": 1, "resources": {"GPU": 1}}):
        with pytest.raises(ValueError):
            validate_actor_options(bad, is_async=True)


# -- the head -----------------------------------------------------------------------------------------


class FakeIO:
    def __init__(self) -> None:
        self.starts: dict[ActorId, tuple[int, NodeId, tuple[str, ...]]] = {}

    async def start_actor(self, agent_address: str, spec: ActorSpec, incarnation: int, node_id: NodeId,
                          gpu_ids: tuple[str, ...] = ()) -> None:
        self.starts[spec.actor_id] = (incarnation, node_id, gpu_ids)

    async def kill_worker(self, agent_address: str, actor_id: ActorId, incarnation: int) -> None:
        pass


def gpu_spec(num_gpus: float, group: str | None = "replicas") -> ActorSpec:
    opts = ActorOptions(num_gpus=num_gpus, spread_group=group, max_restarts=0)
    return ActorSpec(ActorId.new(), "Model", "tests.fake", b"payload", opts, "tcp://driver:1", None, ("infer",))


def add_gpu_node(head: Head, name: str, gpus: int) -> NodeId:
    node_id = NodeId(name)
    ids = tuple(str(i) for i in range(gpus))
    head.register_node(NodeRegistration(node_id, f"10.0.0.{len(head.node_table) + 1}", f"tcp://{name}:9",
                                        {"CPU": 8.0, "GPU": float(gpus)}, gpu_ids=ids))
    return node_id


async def settle(head: Head) -> None:
    while head._tasks:
        await asyncio.gather(*list(head._tasks))


def run(scenario: Any, store: HeadStore | None = None) -> Any:
    async def main() -> Any:
        io = FakeIO()
        return await scenario(Head(io, "tcp://head:1", store), io)

    return asyncio.run(main())


def devices_of(head: Head, io: FakeIO, specs: list[ActorSpec]) -> list[tuple[NodeId, str]]:
    out = []
    for s in specs:
        info = head.get_actor_info(s.actor_id)
        assert info is not None and info.node_id is not None
        _, node, ids = io.starts[s.actor_id]
        assert (node, ids) == (info.node_id, info.gpu_ids)
        out.extend((node, d) for d in ids)
    return out


def test_eight_halves_fill_four_devices_on_two_nodes_and_a_ninth_waits() -> None:
    async def scenario(head: Head, io: FakeIO) -> None:
        a, b = add_gpu_node(head, "a", 2), add_gpu_node(head, "b", 2)
        specs = [gpu_spec(0.5) for _ in range(8)]
        for s in specs:
            await head.create_actor(s)
        await settle(head)
        pairs = devices_of(head, io, specs)
        assert sorted(set(pairs)) == [(a, "0"), (a, "1"), (b, "0"), (b, "1")]
        assert all(pairs.count(p) == 2 for p in set(pairs))  # two per device
        assert head.available_resources()["GPU"] == 0.0
        ninth = gpu_spec(0.5)
        info = await head.create_actor(ninth)
        assert info.node_id is None and ninth.actor_id in head.pending
        head.worker_exited(WorkerExit(specs[3].actor_id, 0, -9, "SIGKILL"))  # its share is free at once
        await settle(head)
        freed = io.starts[specs[3].actor_id][1:]
        placed = head.get_actor_info(ninth.actor_id)
        assert placed is not None and (placed.node_id, placed.gpu_ids) == freed
        assert head.get_actor_info(specs[3].actor_id).gpu_ids == ()  # type: ignore[union-attr]

    run(scenario)


def test_replicas_of_one_deployment_spread_over_a_nodes_devices_other_groups_pack() -> None:
    async def scenario(head: Head, io: FakeIO) -> None:
        add_gpu_node(head, "a", 2)
        first, second = gpu_spec(0.5, "app#A"), gpu_spec(0.5, "app#A")
        other = gpu_spec(0.25, "app#B")
        for s in (first, second, other):
            await head.create_actor(s)
        await settle(head)
        assert {io.starts[first.actor_id][2], io.starts[second.actor_id][2]} == {("0",), ("1",)}
        assert io.starts[other.actor_id][2] == ("0",)  # another group: shares a device with A (ties: the first)

    run(scenario)


def test_whole_gpus_and_fractions_share_a_node_without_over_commit() -> None:
    async def scenario(head: Head, io: FakeIO) -> None:
        a = add_gpu_node(head, "a", 2)
        quarter, whole = gpu_spec(0.25, None), gpu_spec(1, None)
        await head.create_actor(quarter)
        await head.create_actor(whole)
        await settle(head)
        assert io.starts[quarter.actor_id][2] == ("0",)
        assert io.starts[whole.actor_id][2] == ("1",)  # the untouched device
        another = gpu_spec(1, None)
        assert (await head.create_actor(another)).node_id is None  # 0.75 free on "0" is not a device
        await head.kill_actor(quarter.actor_id)
        await settle(head)
        assert io.starts[another.actor_id][1:] == (a, ("0",))
        (node,) = head.nodes()
        assert node.gpu_free == {"0": 0.0, "1": 0.0}

    run(scenario)


def test_more_gpus_than_any_node_has_fail_at_once() -> None:
    async def scenario(head: Head, io: FakeIO) -> None:
        add_gpu_node(head, "a", 2)
        add_gpu_node(head, "b", 2)
        cpu_only = add_gpu_node(head, "c", 0)
        with pytest.raises(ActorUnschedulableError, match="num_gpus"):
            await head.create_actor(gpu_spec(3))
        pinned = ActorSpec(ActorId.new(), "Model", "tests.fake", b"p", ActorOptions(num_gpus=0.5, node_id=cpu_only),
                           "tcp://driver:1", None, ())
        with pytest.raises(ActorUnschedulableError, match="GPU"):
            await head.create_actor(pinned)
        assert (await head.create_actor(gpu_spec(2))).node_id is not None  # two whole devices: a node has them

    run(scenario)


def test_a_restored_head_knows_which_devices_are_held(tmp_path: Path) -> None:
    path = tmp_path / "head.sqlite"
    specs = [gpu_spec(0.5, None) for _ in range(3)]

    async def first(head: Head, io: FakeIO) -> dict[ActorId, tuple[str, ...]]:
        add_gpu_node(head, "a", 2)
        for s in specs:
            await head.create_actor(s)
        await settle(head)
        for s in specs:
            inc, node, _ = io.starts[s.actor_id]
            head.actor_started(s.actor_id, inc, "tcp://w:1", 1, node)
        return {s.actor_id: io.starts[s.actor_id][2] for s in specs}

    held = run(first, HeadStore(path))

    async def second(head: Head, io: FakeIO) -> None:
        assert restore(head, HeadStore(path))
        for s in specs:
            info = head.get_actor_info(s.actor_id)
            assert info is not None and info.state is ActorState.ALIVE and info.gpu_ids == held[s.actor_id]
        (node,) = head.nodes()
        assert node.gpu_free == {"0": 0.0, "1": 0.5}
        # the agent registers again with its workers running: they keep their devices
        head.register_node(NodeRegistration(NodeId("a"), "10.0.0.1", "tcp://a:9", {"CPU": 8.0, "GPU": 2.0},
                                            running=tuple((s.actor_id, 0) for s in specs), gpu_ids=("0", "1")))
        (node,) = head.nodes()
        assert node.gpu_free == {"0": 0.0, "1": 0.5}
        # a restarted agent runs none of them: every device is free again
        head.register_node(NodeRegistration(NodeId("a"), "10.0.0.1", "tcp://a:9", {"CPU": 8.0, "GPU": 2.0},
                                            gpu_ids=("0", "1")))
        (node,) = head.nodes()
        assert node.gpu_free == {"0": 1.0, "1": 1.0}

    run(second)


def test_status_shows_gpus_per_node_and_device_and_each_actors_devices() -> None:
    from cluster._status import render_status

    node = {"node_id": "n1", "ip": "127.0.0.2", "alive": True, "is_head": False, "metrics_url": None,
            "resources_total": {"CPU": 4.0, "GPU": 2.0, "accelerator_type:T4": 1.0},
            "resources_available": {"CPU": 4.0, "GPU": 0.75, "accelerator_type:T4": 1.0},
            "gpu_free": {"0": 0.0, "1": 0.75}}
    cpu_node = {**node, "node_id": "n2", "ip": "127.0.0.3", "resources_total": {"CPU": 4.0},
                "resources_available": {"CPU": 4.0}, "gpu_free": {}}
    actor = {"actor_id": "a1", "class_name": "Model", "state": "ALIVE", "name": None, "node_id": "n1", "pid": 7,
             "gpu_ids": ["1"]}
    table = render_status({"head": "127.0.0.1:1", "nodes": [node, cpu_node], "actors": [actor], "serve": {}})
    assert "GPU used/total" in table and "1.25/2 (0: 1, 1: 0.25)" in table
    assert "accelerator_type:T4 0/1" in table
    gpus_column = [line.split()[-1] for line in table.splitlines() if line.strip().startswith("a1")]
    assert gpus_column == ["1"]
