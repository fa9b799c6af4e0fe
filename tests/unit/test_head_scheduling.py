"""Unit tests of the head's scheduling at scale and of spreading a group over nodes.

Contract: an event costs the number of *shapes* of waiting actors (demand + affinity),
not the number of waiting actors; the earliest arrival that fits goes first; replicas of
one spread group spread over the alive nodes on every start, whatever dead or departed
nodes and outgoing members there were.
"""

from __future__ import annotations

import time

import pytest

import cluster._head as head_module
import cluster._head_placement as placement_module
from actors.messages import ActorId, NodeId
from cluster._head import Head
from cluster._scheduler import pick_node

from .test_head import FakeIO, add_node, exit_of, run, settle, spec_of, start_alive


def test_an_event_does_not_scan_the_waiting_actors(monkeypatch: pytest.MonkeyPatch) -> None:
    """The drill: 1,000 queued 1-CPU actors blocked the head for 33 s (every event tried
    every queued actor against every node)."""
    calls = [0]

    def counting(*args, **kwargs):  # type: ignore[no-untyped-def]
        calls[0] += 1
        return pick_node(*args, **kwargs)

    monkeypatch.setattr(head_module, "pick_node", counting)  # create_actor's feasibility check
    monkeypatch.setattr(placement_module, "pick_node", counting)  # the scheduling passes

    async def scenario(head: Head, io: FakeIO) -> None:
        add_node(head, "a", 1.0)
        running = spec_of(num_cpus=1.0)
        await start_alive(head, io, running)
        t0 = time.perf_counter()
        for _ in range(3000):
            await head.create_actor(spec_of(num_cpus=1.0))
        elapsed = time.perf_counter() - t0
        assert len(head.pending) == 3000
        calls[0] = 0
        other = spec_of(num_cpus=0.0)  # an unrelated event: a 0-CPU actor comes and goes
        await start_alive(head, io, other)
        head.worker_exited(exit_of(other.actor_id, 0))
        assert calls[0] <= 6, f"{calls[0]} placement attempts for two events with 3,000 actors waiting"
        head.worker_exited(exit_of(running.actor_id, 0))  # frees the CPU: exactly one waiting actor goes
        await settle(head)
        assert len(head.pending) == 2999
        assert elapsed < 5.0, f"3,000 creations took {elapsed:.1f}s"

    run(scenario)


def test_the_earliest_arrival_that_fits_goes_first_across_shapes() -> None:
    async def scenario(head: Head, io: FakeIO) -> None:
        add_node(head, "a", 2.0)
        blocker = spec_of(num_cpus=2.0)
        await start_alive(head, io, blocker)
        big = spec_of(num_cpus=2.0)
        small1, small2 = spec_of(num_cpus=1.0), spec_of(num_cpus=1.0)
        for s in (big, small1, small2):
            await head.create_actor(s)
        head.worker_exited(exit_of(blocker.actor_id, 0))
        await settle(head)
        assert bool(io.started(big.actor_id)) and not io.started(small1.actor_id)
        head.worker_exited(exit_of(big.actor_id, 0))
        await settle(head)
        assert io.started(small1.actor_id) and io.started(small2.actor_id)

    run(scenario)


def _group_spec(group: str) -> object:
    spec = spec_of(num_cpus=0.1)
    object.__setattr__(spec.options, "spread_group", group)
    return spec


async def _member(head: Head, io: FakeIO, group: str) -> tuple[ActorId, NodeId]:
    spec = _group_spec(group)
    info = await start_alive(head, io, spec)  # type: ignore[arg-type]
    assert info.node_id is not None
    return info.actor_id, info.node_id


def test_a_group_stays_spread_through_rolls_after_a_node_leaves_and_rejoins() -> None:
    """The drill: after a node left and rejoined, rolls put both replicas on one node
    ([.2,.2], [.1,.1], [.2,.2]), so one node loss was a full outage."""

    async def scenario(head: Head, io: FakeIO) -> None:
        one = add_node(head, "n1", 8.0)
        for _ in range(3):  # the head node also hosts the controller, a proxy...
            await start_alive(head, io, spec_of(num_cpus=0.1))
        two = add_node(head, "n2", 8.0)
        members = [await _member(head, io, "serve:Model") for _ in range(2)]
        assert sorted(n.hex for _, n in members) == ["n1", "n2"]
        # n2 leaves: its replica dies and the controller replaces it (on n1, the only node).
        head.node_leaving(two)
        members = [m for m in members if m[1] != two] + [await _member(head, io, "serve:Model")]
        assert [n for _, n in members] == [one, one]
        three = add_node(head, "n2-again", 8.0)  # it rejoins (a new node id)
        for _roll in range(3):  # rolling updates: one new replica up, then one old one down
            new = []
            for old_id, _ in list(members):
                new.append(await _member(head, io, "serve:Model"))
                await head.kill_actor(old_id)
            members = new
            assert sorted(n.hex for _, n in members) == sorted([one.hex, three.hex]), \
                f"a roll placed the replicas on {[n.hex for _, n in members]}"

    run(scenario)


def test_group_counts_ignore_dead_members_and_lost_nodes() -> None:
    async def scenario(head: Head, io: FakeIO) -> None:
        a = add_node(head, "a", 8.0)
        b = add_node(head, "b", 8.0)
        first = await _member(head, io, "g")
        second = await _member(head, io, "g")
        assert {first[1], second[1]} == {a, b}
        await head.kill_actor(first[0])
        await head.kill_actor(second[0])
        assert head.actors.group_on_node("g", a) == (0, -1) and head.actors.group_on_node("g", b) == (0, -1)
        third = await _member(head, io, "g")
        head.node_leaving(third[1])
        assert head.actors.group_on_node("g", third[1]) == (0, -1)
        c = add_node(head, "c", 8.0)
        fourth, fifth = await _member(head, io, "g"), await _member(head, io, "g")
        alive = {a, b, c} - {third[1]}
        assert {fourth[1], fifth[1]} == alive

    run(scenario)
