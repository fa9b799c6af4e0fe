"""Unit tests of the head's durable state (`cluster._head_store`, `cluster._head_state`)
and of what a restarted head does with it: reconcile with the agents' workers, purge
dead records, bound what it stores.

Contract: whatever an RPC changed is in the store when the RPC returns (no debounce, no
later save); a head restored from the store knows every acknowledged actor, and, when a
node registers again, adopts the workers it knows, names the ones it does not (`stale`)
and places again the actors whose worker never came up; dead actors and nodes go after a
bounded time or count; a blob over the cap is refused with a clear error.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from actors.messages import ActorState, NodeId
from cluster._head import Head
from cluster._head_state import HeadLimits, restore
from cluster._head_store import HeadStore
from cluster.exceptions import BlobTooLargeError, TooManyPendingActorsError
from cluster.messages import NodeRegistration

from .test_head import FakeIO, add_node, settle, spec_of, start_alive


def run_with(store_path: Path, scenario: Callable[[Head, FakeIO], Awaitable[Any]],
             limits: HeadLimits | None = None) -> Any:
    async def main() -> Any:
        store = HeadStore(store_path)
        io = FakeIO()
        head = Head(io, "tcp://head:1", store, limits or HeadLimits())
        try:
            return await scenario(head, io)
        finally:
            store.close()

    return asyncio.run(main())


def reopened(path: Path) -> Head:
    """A fresh head restored from the store at `path`, as after a SIGKILL and restart:
    a second connection sees exactly what was committed, nothing the first held back."""
    head = Head(FakeIO(), "tcp://head:1", None, HeadLimits())
    store = HeadStore(path)
    try:
        assert restore(head, store)
    finally:
        store.close()
    return head


def test_every_acknowledged_change_is_in_the_store_when_the_call_returns(tmp_path: Path) -> None:
    path = tmp_path / "head.db"

    async def scenario(head: Head, io: FakeIO) -> None:
        a = add_node(head, "a", 4.0)
        job = head.register_job("tcp://driver:1", "ns", 42)
        named = spec_of(name="keeper", namespace="ops", lifetime="detached")
        await head.create_actor(named)
        # No await, no tick, no sleep between the reply and the look: a SIGKILL here loses nothing.
        seen = reopened(path)
        rec = seen.actors.named("keeper", "ops")
        assert rec is not None and rec.actor_id == named.actor_id and rec.node_id == a
        assert [j.hex for j in seen.jobs] == [job["job_id"]]
        assert a in seen.node_table
        doomed = spec_of()
        await start_alive(head, io, doomed)
        assert await head.kill_actor(doomed.actor_id)
        assert reopened(path).actors.get(doomed.actor_id).state is ActorState.DEAD  # type: ignore[union-attr]
        head.kv_put("k", b"v")
        assert reopened(path).kv == {"k": b"v"}
        head.kv_delete("k")
        assert reopened(path).kv == {}

    run_with(path, scenario)


def test_a_restored_head_reconciles_with_the_workers_an_agent_really_runs(tmp_path: Path) -> None:
    path = tmp_path / "head.db"
    ids: dict[str, Any] = {}

    async def before(head: Head, io: FakeIO) -> None:
        add_node(head, "a", 8.0)
        ids["alive"] = (await start_alive(head, io, spec_of(name="alive"))).actor_id
        ids["gone"] = (await start_alive(head, io, spec_of(max_restarts=1))).actor_id
        never = spec_of()
        await head.create_actor(never)  # placed; the head dies before its worker reports
        ids["never"] = never.actor_id
        await settle(head)

    run_with(path, before)

    async def after(head: Head, io: FakeIO) -> None:
        assert restore(head, HeadStore(path))
        a = NodeId("a")
        assert head.node_heartbeat(a) is False  # not reconciled yet: register again
        orphan = spec_of()
        reply = head.register_node(NodeRegistration(a, "10.0.0.1", "tcp://a:9", {"CPU": 8.0},
                                                    running=((ids["alive"], 0), (orphan.actor_id, 0))))
        assert reply["stale"] == [(orphan.actor_id, 0)]  # unknown to the head: the agent kills it
        assert head.node_heartbeat(a) is True
        assert head.get_actor_info(ids["alive"]).state is ActorState.ALIVE  # type: ignore[union-attr]
        gone = head.get_actor_info(ids["gone"])
        assert gone is not None and gone.state is ActorState.RESTARTING and gone.incarnation == 1
        never = head.get_actor_info(ids["never"])
        assert never is not None and never.state is ActorState.PENDING and never.incarnation == 1
        await settle(head)
        assert io.started(ids["never"]) == [(1, a)]  # placed again, under a new incarnation
        assert io.started(ids["gone"]) == [(1, a)]
        assert not head.actor_started(ids["never"], 0, "tcp://late:1", 9, a)  # a late old worker: refused

    run_with(path, after)


def test_nothing_is_placed_on_a_restored_node_before_it_registers_again(tmp_path: Path) -> None:
    path = tmp_path / "head.db"

    async def before(head: Head, io: FakeIO) -> None:
        add_node(head, "a", 1.0)
        await start_alive(head, io, spec_of(num_cpus=1.0))

    run_with(path, before)

    async def after(head: Head, io: FakeIO) -> None:
        assert restore(head, HeadStore(path))
        waiting = spec_of(num_cpus=0.0)
        info = await head.create_actor(waiting)
        await settle(head)
        assert info.node_id is None and io.starts == []
        head.register_node(NodeRegistration(NodeId("a"), "10.0.0.1", "tcp://a:9", {"CPU": 1.0}))
        await settle(head)
        assert io.started(waiting.actor_id) == [(0, NodeId("a"))]

    run_with(path, after)


def test_dead_actors_and_nodes_are_purged_by_count_and_age(tmp_path: Path) -> None:
    path = tmp_path / "head.db"
    limits = HeadLimits(max_dead_actors=3, dead_actor_ttl_s=60.0, max_dead_nodes=1, dead_node_ttl_s=60.0)

    async def scenario(head: Head, io: FakeIO) -> None:
        add_node(head, "a", 8.0)
        specs = [spec_of() for _ in range(5)]
        for s in specs:
            await start_alive(head, io, s)
            await head.kill_actor(s.actor_id)
        head.purge()
        head.commit()
        kept = [s.actor_id for s in specs if head.get_actor_info(s.actor_id) is not None]
        assert kept == [s.actor_id for s in specs[2:]]  # the 3 most recent dead
        assert len(reopened(path).actors.records) == 3
        head.purge(now=time.time() + 61)
        head.commit()
        assert head.actors.records == {} and reopened(path).actors.records == {}
        for name in ("b", "c", "d"):
            head.node_leaving(add_node(head, name))
        head.purge()
        assert sorted(n.hex for n, e in head.node_table.items() if not e.alive) == ["d"]
        head.purge(now=time.time() + 61)
        head.commit()
        assert sorted(n.hex for n in head.node_table) == ["a"]
        assert sorted(n.hex for n in reopened(path).node_table) == ["a"]

    run_with(path, scenario, limits)


def test_blobs_over_the_cap_are_refused_clearly(tmp_path: Path) -> None:
    async def scenario(head: Head, io: FakeIO) -> None:
        add_node(head, "a")
        big = spec_of()
        object.__setattr__(big, "payload", b"x" * 2000)
        with pytest.raises(BlobTooLargeError, match=r"2,000 bytes.*at most 1,000.*ZEROSERVE_HEAD_MAX_BLOB_BYTES"):
            await head.create_actor(big)
        assert head.get_actor_info(big.actor_id) is None
        with pytest.raises(BlobTooLargeError, match="key 'cfg'"):
            head.kv_put("cfg", b"y" * 1001)
        assert head.kv_get("cfg") is None

    run_with(tmp_path / "head.db", scenario, HeadLimits(max_blob_bytes=1000))


def test_waiting_actors_per_job_are_capped(tmp_path: Path) -> None:
    async def scenario(head: Head, io: FakeIO) -> None:
        add_node(head, "a", 1.0)
        job = head.register_job("tcp://driver:1", None, 1)
        from actors.messages import JobId

        job_id = JobId(job["job_id"])
        for _ in range(4):  # one runs, three wait
            await head.create_actor(spec_of(num_cpus=1.0, job_id=job_id))
        with pytest.raises(TooManyPendingActorsError, match=r"3 actors waiting.*ZEROSERVE_MAX_PENDING_ACTORS_PER_JOB"):
            await head.create_actor(spec_of(num_cpus=1.0, job_id=job_id))
        await head.create_actor(spec_of(num_cpus=1.0))  # another job's are not counted

    run_with(tmp_path / "head.db", scenario, HeadLimits(max_pending_per_job=3))


def test_a_small_write_costs_the_same_whatever_the_store_holds(tmp_path: Path) -> None:
    """The drill: a 100 MB state file made every KV write take 72-622 ms."""
    async def scenario(head: Head, io: FakeIO) -> float:
        add_node(head, "a", 64.0)
        for i in range(6):  # ~90 MB of actor specs and KV values
            big = spec_of(num_cpus=0.0)
            object.__setattr__(big, "payload", bytes(15 * 2**20))
            await head.create_actor(big)
            head.kv_put(f"blob{i}", bytes(2**20))
        t0 = time.perf_counter()
        for i in range(20):
            head.kv_put("small", str(i).encode())
        return (time.perf_counter() - t0) / 20

    per_write = run_with(tmp_path / "head.db", scenario)
    assert per_write < 0.02, f"a small KV write took {per_write * 1000:.1f} ms with ~90 MB stored"
