"""Unit tests of the head service (`cluster._head.Head`) against a fake `HeadIO`.

No network, no processes: the fake records the workers the head asks agents to start
and kill. Each test drives one scenario inside `asyncio.run`; `settle()` lets the
head's background start requests run (it awaits them, it does not sleep).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from actors import ActorUnschedulableError
from actors.messages import ActorId, ActorInfo, ActorOptions, ActorSpec, ActorState, JobId, NodeId
from cluster._head import NODE_TIMEOUT_S, Head
from cluster.exceptions import NameTakenError
from cluster.messages import NodeRegistration, WorkerExit


class FakeIO:
    """Records what the head asks of the agents; can be told to fail starts."""

    def __init__(self) -> None:
        self.starts: list[tuple[str, ActorId, int, NodeId]] = []
        self.kills: list[tuple[str, ActorId, int]] = []
        self.fail_starts = False

    async def start_actor(self, agent_address: str, spec: ActorSpec, incarnation: int, node_id: NodeId,
                          gpu_ids: tuple[str, ...] = ()) -> None:
        if self.fail_starts:
            raise ConnectionError("agent unreachable")
        self.starts.append((agent_address, spec.actor_id, incarnation, node_id))

    async def kill_worker(self, agent_address: str, actor_id: ActorId, incarnation: int) -> None:
        self.kills.append((agent_address, actor_id, incarnation))

    def started(self, actor_id: ActorId) -> list[tuple[int, NodeId]]:
        return [(inc, node) for _, aid, inc, node in self.starts if aid == actor_id]


def run(scenario: Callable[[Head, FakeIO], Awaitable[Any]]) -> Any:
    """Run `scenario(head, io)` on a fresh loop with a fresh head."""

    async def main() -> Any:
        io = FakeIO()
        head = Head(io, "tcp://head:1")
        return await scenario(head, io)

    return asyncio.run(main())


async def settle(head: Head) -> None:
    """Let every background start request the head has issued complete."""
    while head._tasks:
        await asyncio.gather(*list(head._tasks))


def spec_of(*, num_cpus: float = 1.0, name: str | None = None, namespace: str | None = None,
            max_restarts: int = 0, lifetime: str | None = None, job_id: JobId | None = None,
            node_id: NodeId | None = None, get_if_exists: bool = False,
            resources: tuple[tuple[str, float], ...] = ()) -> ActorSpec:
    opts = ActorOptions(name=name, namespace=namespace, lifetime=lifetime, num_cpus=num_cpus, resources=resources,
                        max_restarts=max_restarts, node_id=node_id, get_if_exists=get_if_exists)
    return ActorSpec(ActorId.new(), "Worker", "tests.fake", b"payload", opts, "tcp://driver:1", job_id, ("work",))


def add_node(head: Head, name: str, cpus: float = 4.0, **custom: float) -> NodeId:
    node_id = NodeId(name)
    reply = head.register_node(NodeRegistration(node_id, f"10.0.0.{len(head.node_table) + 1}", f"tcp://{name}:9",
                                                {"CPU": cpus, **custom}))
    assert reply["node_id"] == name
    assert reply["epoch"] == head.epoch
    return node_id


def free(head: Head, node_id: NodeId, resource: str = "CPU") -> float:
    (info,) = [n for n in head.nodes() if n.node_id == node_id]
    return info.resources_available.get(resource, 0.0)


def state(head: Head, actor_id: ActorId) -> ActorState:
    info = head.get_actor_info(actor_id)
    assert info is not None
    return info.state


async def start_alive(head: Head, io: FakeIO, spec: ActorSpec) -> ActorInfo:
    """Create an actor, let its start go out, and report its worker up."""
    await head.create_actor(spec)
    await settle(head)
    (incarnation, node_id) = io.started(spec.actor_id)[-1]
    assert head.actor_started(spec.actor_id, incarnation, f"tcp://worker-{incarnation}:1", 100 + incarnation, node_id)
    info = head.get_actor_info(spec.actor_id)
    assert info is not None and info.state is ActorState.ALIVE
    return info


def exit_of(actor_id: ActorId, incarnation: int, reason: str = "worker exited") -> WorkerExit:
    return WorkerExit(actor_id, incarnation, 1, reason)


# -- nodes and placement --------------------------------------------------------------------------


def test_register_node_reports_resources() -> None:
    async def scenario(head: Head, io: FakeIO) -> None:
        a = add_node(head, "a", 4.0, GPU=1.0)
        add_node(head, "b", 2.0)
        assert {n.node_id for n in head.nodes()} == {a, NodeId("b")}
        assert head.cluster_resources() == {"CPU": 6.0, "GPU": 1.0}
        assert head.available_resources() == {"CPU": 6.0, "GPU": 1.0}
        assert head.node_heartbeat(a) is True
        assert head.node_heartbeat(NodeId("unknown")) is False

    run(scenario)


def test_create_actor_places_and_starts_it() -> None:
    async def scenario(head: Head, io: FakeIO) -> None:
        a = add_node(head, "a", 4.0)
        spec = spec_of(num_cpus=1.5)
        info = await head.create_actor(spec)
        assert info.actor_id == spec.actor_id
        assert info.state is ActorState.PENDING
        assert info.node_id == a
        await settle(head)
        assert io.starts == [("tcp://a:9", spec.actor_id, 0, a)]
        assert free(head, a) == 2.5
        assert head.available_resources() == {"CPU": 2.5}

    run(scenario)


def test_resources_are_released_when_the_worker_exits() -> None:
    async def scenario(head: Head, io: FakeIO) -> None:
        a = add_node(head, "a", 4.0, GPU=2.0)
        spec = spec_of(num_cpus=2.0, resources=(("GPU", 1.0),))
        await start_alive(head, io, spec)
        assert (free(head, a), free(head, a, "GPU")) == (2.0, 1.0)
        head.worker_exited(exit_of(spec.actor_id, 0))
        assert state(head, spec.actor_id) is ActorState.DEAD
        assert (free(head, a), free(head, a, "GPU")) == (4.0, 2.0)
        head.worker_exited(exit_of(spec.actor_id, 0, "duplicate report"))  # released only once
        assert (free(head, a), free(head, a, "GPU")) == (4.0, 2.0)

    run(scenario)


def test_actors_are_spread_over_nodes() -> None:
    async def scenario(head: Head, io: FakeIO) -> None:
        add_node(head, "a", 8.0)
        add_node(head, "b", 8.0)
        specs = [spec_of(num_cpus=1.0) for _ in range(4)]
        for s in specs:
            await head.create_actor(s)
        await settle(head)
        nodes = [io.started(s.actor_id)[0][1].hex for s in specs]
        assert sorted(nodes) == ["a", "a", "b", "b"]
        assert nodes[0] != nodes[1]

    run(scenario)


def test_actor_waits_for_resources_then_is_placed() -> None:
    async def scenario(head: Head, io: FakeIO) -> None:
        a = add_node(head, "a", 1.0)
        first = spec_of(num_cpus=1.0)
        second = spec_of(num_cpus=1.0)
        await start_alive(head, io, first)
        info = await head.create_actor(second)
        await settle(head)
        assert info.state is ActorState.PENDING
        assert info.node_id is None
        assert io.started(second.actor_id) == []
        assert free(head, a) == 0.0

        head.worker_exited(exit_of(first.actor_id, 0))
        await settle(head)
        assert io.started(second.actor_id) == [(0, a)]
        assert head.get_actor_info(second.actor_id).node_id == a  # type: ignore[union-attr]
        assert free(head, a) == 0.0

    run(scenario)


def test_waiting_actors_are_placed_in_fifo_order() -> None:
    async def scenario(head: Head, io: FakeIO) -> None:
        add_node(head, "a", 1.0)
        running = spec_of(num_cpus=1.0)
        await start_alive(head, io, running)
        waiting = [spec_of(num_cpus=1.0) for _ in range(3)]
        for s in waiting:
            await head.create_actor(s)
        head.worker_exited(exit_of(running.actor_id, 0))
        await settle(head)
        assert [bool(io.started(s.actor_id)) for s in waiting] == [True, False, False]

    run(scenario)


def test_actor_is_placed_when_a_node_joins() -> None:
    async def scenario(head: Head, io: FakeIO) -> None:
        add_node(head, "small", 1.0)
        spec = spec_of(num_cpus=1.0)
        blocker = spec_of(num_cpus=1.0)
        await start_alive(head, io, blocker)
        await head.create_actor(spec)
        b = add_node(head, "b", 2.0)
        await settle(head)
        assert io.started(spec.actor_id) == [(0, b)]

    run(scenario)


def test_infeasible_request_raises_and_records_nothing() -> None:
    async def scenario(head: Head, io: FakeIO) -> None:
        add_node(head, "a", 4.0)
        with pytest.raises(ActorUnschedulableError, match="CPU"):
            await head.create_actor(spec_of(num_cpus=16.0))
        with pytest.raises(ActorUnschedulableError, match="TPU"):
            await head.create_actor(spec_of(resources=(("TPU", 1.0),)))
        with pytest.raises(ActorUnschedulableError, match="elsewhere"):
            await head.create_actor(spec_of(node_id=NodeId("elsewhere")))
        await settle(head)
        assert head.list_actors() == []
        assert io.starts == []

    run(scenario)


def test_node_affinity_places_on_that_node() -> None:
    async def scenario(head: Head, io: FakeIO) -> None:
        add_node(head, "a", 4.0)
        b = add_node(head, "b", 4.0)
        specs = [spec_of(node_id=b) for _ in range(3)]
        for s in specs:
            await head.create_actor(s)
        await settle(head)
        assert all(io.started(s.actor_id) == [(0, b)] for s in specs)

    run(scenario)


def test_start_failure_makes_the_actor_dead_and_releases_resources() -> None:
    async def scenario(head: Head, io: FakeIO) -> None:
        a = add_node(head, "a", 2.0)
        io.fail_starts = True
        spec = spec_of(num_cpus=2.0)
        await head.create_actor(spec)
        await settle(head)
        info = head.get_actor_info(spec.actor_id)
        assert info is not None and info.state is ActorState.DEAD
        assert "could not be started" in (info.death_cause or "")
        assert free(head, a) == 2.0

    run(scenario)


# -- actor lifecycle --------------------------------------------------------------------------------


def test_actor_started_makes_it_alive() -> None:
    async def scenario(head: Head, io: FakeIO) -> None:
        a = add_node(head, "a")
        spec = spec_of()
        await head.create_actor(spec)
        await settle(head)
        assert head.actor_started(spec.actor_id, 1, "tcp://wrong:1", 1, a) is False  # no such incarnation
        assert head.actor_started(spec.actor_id, 0, "tcp://w:1", 77, a) is True
        info = head.get_actor_info(spec.actor_id)
        assert info is not None
        assert (info.state, info.address, info.pid, info.node_id) == (ActorState.ALIVE, "tcp://w:1", 77, a)
        assert head.actor_started(spec.actor_id, 0, "tcp://w:1", 77, a) is False  # already alive

    run(scenario)


def test_worker_exit_with_restarts_left_restarts_the_actor() -> None:
    async def scenario(head: Head, io: FakeIO) -> None:
        a = add_node(head, "a", 2.0)
        spec = spec_of(num_cpus=1.0, max_restarts=1)
        await start_alive(head, io, spec)
        head.worker_exited(exit_of(spec.actor_id, 0, "segfault"))
        info = head.get_actor_info(spec.actor_id)
        assert info is not None
        assert info.state is ActorState.RESTARTING
        assert info.incarnation == 1
        assert info.restarts_left == 0
        assert info.death_cause == "segfault"
        await settle(head)
        assert io.started(spec.actor_id) == [(0, a), (1, a)]
        assert free(head, a) == 1.0  # held once, by the new incarnation

        assert head.actor_started(spec.actor_id, 1, "tcp://w1:1", 2, a)
        assert state(head, spec.actor_id) is ActorState.ALIVE
        head.worker_exited(exit_of(spec.actor_id, 0, "late report"))  # stale: ignored
        assert state(head, spec.actor_id) is ActorState.ALIVE
        assert free(head, a) == 1.0

        head.worker_exited(exit_of(spec.actor_id, 1, "segfault again"))
        assert state(head, spec.actor_id) is ActorState.DEAD
        assert free(head, a) == 2.0
        await settle(head)
        assert len(io.started(spec.actor_id)) == 2

    run(scenario)


def test_actor_failed_is_final_and_frees_resources_for_waiters() -> None:
    async def scenario(head: Head, io: FakeIO) -> None:
        a = add_node(head, "a", 1.0)
        broken = spec_of(num_cpus=1.0, max_restarts=5)
        waiter = spec_of(num_cpus=1.0)
        await head.create_actor(broken)
        await head.create_actor(waiter)
        await settle(head)
        head.actor_failed(broken.actor_id, 0, "__init__ raised ValueError")
        info = head.get_actor_info(broken.actor_id)
        assert info is not None
        assert info.state is ActorState.DEAD
        assert info.death_cause == "__init__ raised ValueError"
        await settle(head)
        assert io.started(waiter.actor_id) == [(0, a)]

    run(scenario)


def test_kill_with_no_restart_is_final_at_once() -> None:
    async def scenario(head: Head, io: FakeIO) -> None:
        a = add_node(head, "a", 2.0)
        spec = spec_of(num_cpus=2.0, name="svc", max_restarts=-1)
        await start_alive(head, io, spec)
        assert await head.kill_actor(spec.actor_id, no_restart=True) is True
        assert io.kills == [("tcp://a:9", spec.actor_id, 0)]
        info = head.get_actor_info(spec.actor_id)
        assert info is not None and info.state is ActorState.DEAD
        assert head.get_named_actor("svc", None) is None  # the name is free at once
        assert free(head, a) == 2.0

        head.worker_exited(exit_of(spec.actor_id, 0, "killed"))
        await settle(head)
        assert state(head, spec.actor_id) is ActorState.DEAD
        assert free(head, a) == 2.0  # not released twice
        assert len(io.started(spec.actor_id)) == 1  # no restart
        assert await head.kill_actor(spec.actor_id) is False  # already dead

    run(scenario)


def test_kill_allowing_restart_restarts_after_exit() -> None:
    async def scenario(head: Head, io: FakeIO) -> None:
        a = add_node(head, "a", 2.0)
        spec = spec_of(max_restarts=1)
        await start_alive(head, io, spec)
        assert await head.kill_actor(spec.actor_id, no_restart=False) is True
        assert state(head, spec.actor_id) is ActorState.ALIVE  # until its worker is gone
        head.worker_exited(exit_of(spec.actor_id, 0, "killed"))
        assert state(head, spec.actor_id) is ActorState.RESTARTING
        await settle(head)
        assert io.started(spec.actor_id) == [(0, a), (1, a)]

    run(scenario)


def test_kill_of_a_queued_actor() -> None:
    async def scenario(head: Head, io: FakeIO) -> None:
        a = add_node(head, "a", 1.0)
        blocker = spec_of(num_cpus=1.0)
        queued = spec_of(num_cpus=1.0)
        await start_alive(head, io, blocker)
        await head.create_actor(queued)
        assert await head.kill_actor(queued.actor_id) is True
        assert state(head, queued.actor_id) is ActorState.DEAD
        assert io.kills == []  # it had no worker
        head.worker_exited(exit_of(blocker.actor_id, 0))
        await settle(head)
        assert io.started(queued.actor_id) == []
        assert free(head, a) == 1.0

    run(scenario)


def test_kill_of_unknown_actor_returns_false() -> None:
    async def scenario(head: Head, io: FakeIO) -> None:
        assert await head.kill_actor(ActorId("nope")) is False

    run(scenario)


# -- jobs -----------------------------------------------------------------------------------------


def test_job_finished_kills_its_non_detached_actors_only() -> None:
    async def scenario(head: Head, io: FakeIO) -> None:
        add_node(head, "a", 8.0)
        job = JobId(head.register_job("tcp://driver:1", "ns", 4242)["job_id"])
        other = JobId(head.register_job("tcp://driver2:1", "ns", 4343)["job_id"])
        owned = spec_of(job_id=job)
        detached = spec_of(job_id=job, lifetime="detached", name="keeper")
        foreign = spec_of(job_id=other)
        for s in (owned, detached, foreign):
            await start_alive(head, io, s)

        assert await head.job_finished(job) == 1
        assert state(head, owned.actor_id) is ActorState.DEAD
        assert state(head, detached.actor_id) is ActorState.ALIVE
        assert state(head, foreign.actor_id) is ActorState.ALIVE
        assert [k[1] for k in io.kills] == [owned.actor_id]
        assert head.job_heartbeat(job) is False  # forgotten
        assert head.job_heartbeat(other) is True

    run(scenario)


def test_job_namespace_is_inherited() -> None:
    async def scenario(head: Head, io: FakeIO) -> None:
        add_node(head, "a")
        named_job = head.register_job("tcp://d:1", "team", 1)
        assert named_job["namespace"] == "team"
        anon_job = head.register_job("tcp://d:2", None, 2)
        assert anon_job["namespace"].startswith("anonymous-")
        spec = spec_of(name="svc", job_id=JobId(named_job["job_id"]))
        info = await head.create_actor(spec)
        assert info.namespace == "team"
        assert head.get_named_actor("svc", "team") is not None
        assert head.get_named_actor("svc", None) is None

    run(scenario)


def test_silent_job_is_finished() -> None:
    async def scenario(head: Head, io: FakeIO) -> None:
        add_node(head, "a")
        job = JobId(head.register_job("tcp://d:1", "ns", 1)["job_id"])
        spec = spec_of(job_id=job)
        await start_alive(head, io, spec)
        assert await head.check_jobs(now=time.monotonic()) == []
        assert await head.check_jobs(now=time.monotonic() + 3600) == [job]
        assert state(head, spec.actor_id) is ActorState.DEAD

    run(scenario)


# -- names ----------------------------------------------------------------------------------------


def test_named_actor_lookup_is_per_namespace() -> None:
    async def scenario(head: Head, io: FakeIO) -> None:
        add_node(head, "a")
        in_ns1 = spec_of(name="svc", namespace="ns1")
        in_ns2 = spec_of(name="svc", namespace="ns2")
        in_default = spec_of(name="svc")
        for s in (in_ns1, in_ns2, in_default):
            await head.create_actor(s)
        assert head.get_named_actor("svc", "ns1").actor_id == in_ns1.actor_id  # type: ignore[union-attr]
        assert head.get_named_actor("svc", "ns2").actor_id == in_ns2.actor_id  # type: ignore[union-attr]
        assert head.get_named_actor("svc", None).actor_id == in_default.actor_id  # type: ignore[union-attr]
        assert head.get_named_actor("svc", "default").actor_id == in_default.actor_id  # type: ignore[union-attr]
        assert head.get_named_actor("svc", "ns3") is None
        assert head.get_named_actor("other", "ns1") is None

    run(scenario)


def test_duplicate_name_raises_unless_get_if_exists() -> None:
    async def scenario(head: Head, io: FakeIO) -> None:
        add_node(head, "a")
        first = spec_of(name="svc", namespace="ns")
        await head.create_actor(first)
        with pytest.raises(NameTakenError):
            await head.create_actor(spec_of(name="svc", namespace="ns"))
        again = spec_of(name="svc", namespace="ns", get_if_exists=True)
        info = await head.create_actor(again)
        assert info.actor_id == first.actor_id
        assert head.get_actor_info(again.actor_id) is None
        await settle(head)
        assert [s[1] for s in io.starts] == [first.actor_id]

    run(scenario)


def test_name_is_reusable_after_death() -> None:
    async def scenario(head: Head, io: FakeIO) -> None:
        add_node(head, "a")
        first = spec_of(name="svc")
        await start_alive(head, io, first)
        head.worker_exited(exit_of(first.actor_id, 0))
        second = spec_of(name="svc", get_if_exists=True)
        info = await head.create_actor(second)
        assert info.actor_id == second.actor_id
        assert head.get_named_actor("svc", None).actor_id == second.actor_id  # type: ignore[union-attr]

    run(scenario)


# -- watch (long poll) ------------------------------------------------------------------------------


def test_watch_returns_changes_immediately() -> None:
    async def scenario(head: Head, io: FakeIO) -> None:
        add_node(head, "a")
        spec = spec_of()
        await head.create_actor(spec)
        start = time.monotonic()
        reply = await head.watch(0, head.epoch, hold_s=30.0)
        assert time.monotonic() - start < 5.0
        assert [i.actor_id for i in reply.actors] == [spec.actor_id]
        assert reply.version == head.actors.version
        assert reply.head_epoch == head.epoch

    run(scenario)


def test_watch_holds_when_nothing_changed() -> None:
    async def scenario(head: Head, io: FakeIO) -> None:
        add_node(head, "a")
        await head.create_actor(spec_of())
        version = head.actors.version
        start = time.monotonic()
        reply = await head.watch(version, head.epoch, hold_s=0.05)
        assert time.monotonic() - start >= 0.045
        assert reply.actors == ()
        assert reply.version == version

    run(scenario)


def test_watch_wakes_up_on_a_change() -> None:
    async def scenario(head: Head, io: FakeIO) -> None:
        a = add_node(head, "a")
        spec = spec_of()
        await head.create_actor(spec)
        await settle(head)
        version = head.actors.version
        waiter = asyncio.create_task(head.watch(version, head.epoch, hold_s=30.0))
        await asyncio.sleep(0)  # yield once: the watch runs up to its wait on the change event
        assert not waiter.done()
        head.actor_started(spec.actor_id, 0, "tcp://w:1", 5, a)
        reply = await asyncio.wait_for(waiter, 5.0)
        assert [(i.actor_id, i.state) for i in reply.actors] == [(spec.actor_id, ActorState.ALIVE)]
        assert reply.version > version

    run(scenario)


def test_watch_with_another_epoch_returns_everything() -> None:
    async def scenario(head: Head, io: FakeIO) -> None:
        add_node(head, "a", 8.0)
        specs = [spec_of() for _ in range(3)]
        for s in specs:
            await head.create_actor(s)
        version = head.actors.version
        assert (await head.watch(version, head.epoch, hold_s=0.0)).actors == ()
        reply = await head.watch(version, "epoch-of-a-previous-head", hold_s=30.0)
        assert {i.actor_id for i in reply.actors} == {s.actor_id for s in specs}
        assert reply.head_epoch == head.epoch

    run(scenario)


# -- node failure ---------------------------------------------------------------------------------


def _age(head: Head, node_id: NodeId, seconds: float) -> None:
    """Pretend `node_id` last heartbeated `seconds` ago."""
    head.node_table[node_id].last_seen -= seconds


def test_check_nodes_keeps_heartbeating_nodes() -> None:
    async def scenario(head: Head, io: FakeIO) -> None:
        a = add_node(head, "a")
        assert head.check_nodes(now=time.monotonic()) == []
        assert head.node_heartbeat(a) is True
        assert all(n.alive for n in head.nodes())

    run(scenario)


def test_silent_node_is_marked_dead_with_its_actors() -> None:
    async def scenario(head: Head, io: FakeIO) -> None:
        a = add_node(head, "a", 4.0)
        spec = spec_of()
        await start_alive(head, io, spec)
        lost = head.check_nodes(now=time.monotonic() + NODE_TIMEOUT_S + 1)
        assert lost == [a]
        (node,) = head.nodes()
        assert node.alive is False
        assert head.node_heartbeat(a) is False  # tells the agent to register again
        info = head.get_actor_info(spec.actor_id)
        assert info is not None and info.state is ActorState.DEAD
        assert "stopped heartbeating" in (info.death_cause or "")
        assert head.cluster_resources() == {}
        assert head.available_resources() == {}
        assert head.check_nodes(now=time.monotonic() + NODE_TIMEOUT_S + 1) == []  # reported once

    run(scenario)


def test_actors_of_a_lost_node_restart_elsewhere() -> None:
    async def scenario(head: Head, io: FakeIO) -> None:
        a = add_node(head, "a", 2.0)
        spec = spec_of(num_cpus=2.0, max_restarts=1)
        await start_alive(head, io, spec)
        b = add_node(head, "b", 2.0)
        _age(head, a, NODE_TIMEOUT_S + 1)
        assert head.check_nodes() == [a]
        info = head.get_actor_info(spec.actor_id)
        assert info is not None
        assert info.state is ActorState.RESTARTING
        assert info.incarnation == 1
        assert info.node_id == b
        await settle(head)
        assert io.started(spec.actor_id) == [(0, a), (1, b)]
        assert free(head, b) == 0.0
        assert head.available_resources() == {"CPU": 0.0}

    run(scenario)


def test_node_leaving_is_like_a_lost_node() -> None:
    async def scenario(head: Head, io: FakeIO) -> None:
        a = add_node(head, "a")
        spec = spec_of()
        await start_alive(head, io, spec)
        head.node_leaving(a)
        assert state(head, spec.actor_id) is ActorState.DEAD
        assert head.nodes()[0].alive is False

    run(scenario)


def test_reregistering_an_alive_node_keeps_its_reservations() -> None:
    async def scenario(head: Head, io: FakeIO) -> None:
        a = add_node(head, "a", 4.0)
        spec = spec_of(num_cpus=3.0)
        await start_alive(head, io, spec)
        head.register_node(NodeRegistration(a, "10.0.0.1", "tcp://a:9", {"CPU": 4.0},
                                            running=((spec.actor_id, 0),)))
        assert free(head, a) == 1.0
        await head.create_actor(spec_of(num_cpus=3.0))  # must wait, not overcommit
        await settle(head)
        assert len(io.starts) == 1

    run(scenario)


def test_registration_reserves_what_the_head_places_there_and_names_stale_workers() -> None:
    async def scenario(head: Head, io: FakeIO) -> None:
        add_node(head, "a", 4.0)
        spec = spec_of(num_cpus=3.0)
        await start_alive(head, io, spec)
        a = head.actors.get(spec.actor_id).node_id
        again = head.register_node(NodeRegistration(a, "10.0.0.1", "tcp://a:9", {"CPU": 4.0},
                                                    running=((spec.actor_id, 0),)))
        assert free(head, a) == 1.0 and again["stale"] == []  # the live incarnation it hosts counts
        unknown = spec_of(num_cpus=1.0)
        c = NodeId("c")
        reply = head.register_node(NodeRegistration(c, "10.0.0.3", "tcp://c:9", {"CPU": 8.0},
                                                    running=((spec.actor_id, 0), (spec.actor_id, 7),
                                                             (unknown.actor_id, 0))))
        # c claims workers the head places elsewhere or never made: they must be killed,
        # not counted, or one actor would run twice (a node declared lost that comes back).
        assert free(head, c) == 8.0
        assert sorted(reply["stale"]) == sorted([(spec.actor_id, 0), (spec.actor_id, 7), (unknown.actor_id, 0)])

    run(scenario)


def test_restartable_actor_waits_for_a_node_instead_of_dying() -> None:
    async def scenario(head: Head, io: FakeIO) -> None:
        a = add_node(head, "a", 4.0)
        spec = spec_of(num_cpus=1.0, max_restarts=-1)
        await start_alive(head, io, spec)
        _age(head, a, NODE_TIMEOUT_S + 1)
        assert head.check_nodes() == [a]
        assert state(head, spec.actor_id) is ActorState.RESTARTING
        head.register_node(NodeRegistration(a, "10.0.0.1", "tcp://a:9", {"CPU": 4.0}))
        await settle(head)
        assert io.started(spec.actor_id)[-1] == (1, a)

    run(scenario)


# -- key-value store ------------------------------------------------------------------------------


def test_kv_store() -> None:
    async def scenario(head: Head, io: FakeIO) -> None:
        assert head.kv_get("missing") is None
        assert head.kv_put("app/config", b"v1") is True
        assert head.kv_get("app/config") == b"v1"
        assert head.kv_put("app/config", b"v2") is True
        assert head.kv_get("app/config") == b"v2"
        assert head.kv_put("app/config", b"v3", overwrite=False) is False
        assert head.kv_get("app/config") == b"v2"
        assert head.kv_put("app/route", b"r", overwrite=False) is True
        head.kv_put("other", b"o")
        assert head.kv_keys() == ["app/config", "app/route", "other"]
        assert head.kv_keys("app/") == ["app/config", "app/route"]
        assert head.kv_delete("app/config") is True
        assert head.kv_delete("app/config") is False
        assert head.kv_get("app/config") is None
        assert head.kv_keys("app/") == ["app/route"]

    run(scenario)
