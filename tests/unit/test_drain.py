"""Draining, the pure parts: an actor host lets its work in flight finish (not its control
calls, and by the actor's own `__actors_drain__` when it has one), the head places nothing on
a draining node, and an actor placed by the head node's resource waits for a head node
instead of dying when its own goes. (End to end: tests/integration/test_foreground.py.)
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

import actors
from actors.messages import ActorState, NodeId
from actors.system import HEAD_NODE_RESOURCE
from cluster._head import Head
from cluster.messages import NodeRegistration, WorkerExit

from .test_head import FakeIO, add_node, run, settle, spec_of


class Call:
    """Stands in for the runtime's `Inbound` (the host needs only these)."""

    _ids = 0

    def __init__(self, method: str, *args: Any) -> None:
        Call._ids += 1
        self.identity, self.req_id, self.method, self._args = b"caller", Call._ids, method, args
        self.outcome: asyncio.Future[Any] = asyncio.get_running_loop().create_future()

    def args(self) -> tuple[tuple[Any, ...], dict[str, Any] | None]:
        return self._args, None

    def reply(self, value: Any) -> None:
        self.outcome.set_result(value)

    def fail(self, exc: BaseException) -> None:
        self.outcome.set_exception(exc)


class Worky:
    def __init__(self) -> None:
        self.release = asyncio.Event()

    async def work(self) -> str:
        await self.release.wait()
        return "done"

    @actors.unqueued
    async def listen(self) -> str:  # a long poll: never finishes by itself
        await asyncio.Event().wait()
        return "never"


def _host(instance: Any) -> Any:
    from actors._host import ActorHost

    return ActorHost(instance, 10, ("work", "listen"))


def test_a_drain_waits_for_the_work_in_flight_but_not_for_control_calls() -> None:
    async def main() -> None:
        instance = Worky()
        host = _host(instance)
        work, poll = Call("work"), Call("listen")
        host.handle(work)
        host.handle(poll)
        drain = asyncio.ensure_future(host.drain(5.0))
        await asyncio.sleep(0)
        assert not drain.done() and not work.outcome.done()
        instance.release.set()
        await asyncio.wait_for(drain, 2.0)  # the long poll did not hold it
        assert work.outcome.result() == "done" and host.drained
        host.close()

    asyncio.run(main())


def test_a_drain_ends_at_its_timeout() -> None:
    async def main() -> None:
        host = _host(Worky())
        host.handle(Call("work"))
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        await host.drain(0.2)
        assert 0.15 < loop.time() - t0 < 1.0
        host.close()

    asyncio.run(main())


def test_an_actor_says_what_draining_means_for_it() -> None:
    class Own(Worky):
        def __init__(self) -> None:
            super().__init__()
            self.drained_with: float | None = None

        async def __actors_drain__(self, timeout_s: float) -> None:
            self.drained_with = timeout_s

    async def main() -> None:
        instance = Own()
        host = _host(instance)
        host.handle(Call("work"))  # the hook decides: this call does not hold the drain
        await asyncio.wait_for(host.drain(3.0), 1.0)
        assert instance.drained_with == 3.0
        host.close()

    asyncio.run(main())


def test_nothing_is_placed_on_a_draining_node_and_its_actors_restart_elsewhere() -> None:
    async def scenario(head: Head, io: FakeIO) -> None:
        a, b = add_node(head, "a"), add_node(head, "b")
        first = await head.create_actor(spec_of(max_restarts=1))
        await settle(head)
        (_, on), = io.started(first.actor_id)
        other = b if on == a else a
        head.node_draining(on)
        later = [await head.create_actor(spec_of()) for _ in range(3)]
        await settle(head)
        assert all(io.started(info.actor_id)[0][1] == other for info in later)
        head.worker_exited(WorkerExit(first.actor_id, 0, 0, "stopped: its node is shutting down"))
        await settle(head)
        assert io.started(first.actor_id)[-1] == (1, other)

    run(scenario)


def test_a_node_that_registers_while_draining_gets_nothing_placed() -> None:
    """A head that restarts while a node drains learns of the drain from the node's new
    registration (the set of draining nodes is not in the head's state file)."""

    async def scenario(head: Head, io: FakeIO) -> None:
        steady = add_node(head, "steady")
        leaving = NodeId("leaving")
        head.register_node(NodeRegistration(leaving, "10.0.0.9", "tcp://leaving:9", {"CPU": 64.0}, draining=True))
        placed = [await head.create_actor(spec_of()) for _ in range(3)]
        await settle(head)
        assert all(io.started(info.actor_id)[0][1] == steady for info in placed)
        assert leaving in head.draining

    run(scenario)


def test_an_actor_of_the_head_node_waits_for_the_next_head_node() -> None:
    async def scenario(head: Head, io: FakeIO) -> None:
        old = add_node(head, "old-head", **{HEAD_NODE_RESOURCE: 1.0})
        add_node(head, "worker")
        info = await head.create_actor(spec_of(num_cpus=0, max_restarts=-1, resources=((HEAD_NODE_RESOURCE, 0.001),)))
        await settle(head)
        assert io.started(info.actor_id) == [(0, old)]
        head.node_leaving(old)  # the head node's pod is gone
        await settle(head)
        assert head.get_actor_info(info.actor_id).state is ActorState.RESTARTING
        new = NodeId("new-head")
        head.register_node(NodeRegistration(new, "10.0.0.9", "tcp://new-head:9", {"CPU": 1.0, HEAD_NODE_RESOURCE: 1.0},
                                            True))
        await settle(head)
        assert io.started(info.actor_id)[-1] == (1, new)

    run(scenario)


def test_a_call_cancelled_before_its_task_starts_is_answered_and_frees_its_slot() -> None:
    """A caller that cancels right after calling (a proxy whose client hung up) gets the
    cancel to the host before the call's task has run a step: the task never enters its
    coroutine. Each such call used to keep one of the `max_concurrency` slots for good, and
    at the limit every later call waited forever."""
    from actors._host import ActorHost

    async def main() -> None:
        worky = Worky()
        host = ActorHost(worky, 2, ("work", "listen"))
        for _ in range(5):  # more than the limit: a leak would fill it
            call = Call("work")
            host.handle(call)
            host.cancel(call.identity, call.req_id)  # before the loop runs the task
            with pytest.raises(asyncio.CancelledError):
                await asyncio.wait_for(call.outcome, 5)
        assert host._running == 0 and not host._tasks
        worky.release.set()
        after = Call("work")
        host.handle(after)
        assert await asyncio.wait_for(after.outcome, 5) == "done"

    asyncio.run(main())
