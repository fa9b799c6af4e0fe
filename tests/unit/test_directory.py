"""The actor directory (`actors.system.ActorDirectory`) on a plain event loop, against a
fake runtime, and its long poll against a real in-process head.

What is checked: which error a call gets tells whether it could have run
(`ActorUnavailableError`: never sent; plain `ActorDiedError`: sent, in flight when the
actor died), and the directory follows the head's actor table through `head.watch`.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Callable, Coroutine
from typing import Any

import pytest

from actors import ActorDiedError, ActorUnavailableError
from actors.messages import ActorId, ActorInfo, ActorOptions, ActorSpec, ActorState, NodeId
from actors.system import ActorDirectory, CallFuture, HeadClient
from cluster._head import Head
from cluster.messages import NodeRegistration


class FakeRuntime:
    """Records sends; fails a peer's sent calls as the runtime does; the head is in-process."""

    def __init__(self, head: Head | None = None) -> None:
        self.loop = asyncio.get_running_loop()
        self.head_service = head if head is not None else Head(NoAgents())
        self.head = HeadClient(self._call_head)
        self.sent: dict[str, list[CallFuture]] = {}
        self.reached: set[str] = set()  # addresses whose connection came up
        self.tasks: set[asyncio.Task[Any]] = set()

    async def _call_head(self, method: str, args: tuple[Any, ...], timeout: float | None) -> Any:
        result = getattr(self.head_service, method)(*args)
        return await result if inspect.isawaitable(result) else result

    def send_request(self, address: str, route: bytes, payload: bytes, buffers: Any, fut: CallFuture) -> int:
        self.sent.setdefault(address, []).append(fut)
        return 1

    def fail_peer(self, address: str, make_exc: Callable[[], BaseException], close: bool = True, *,
                  make_unsent: Callable[[], BaseException] | None = None) -> int:
        if make_unsent is not None and address not in self.reached:
            make_exc = make_unsent
        futs = self.sent.pop(address, [])
        for fut in futs:
            if not fut.done():
                fut.set_exception(make_exc())
        return len(futs)

    def background(self, coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        task = self.loop.create_task(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)
        return task


async def turns_until(cond: Callable[[], Any], what: str, turns: int = 200) -> None:
    """Let the loop run (no clock involved) until `cond()`; fail after `turns` turns."""
    for _ in range(turns):
        if cond():
            return
        await asyncio.sleep(0)
    raise AssertionError(f"not reached in {turns} loop turns: {what}")

class NoAgents:
    async def start_actor(self, agent_address: str, spec: ActorSpec, incarnation: int, node_id: NodeId,
                          gpu_ids: tuple[str, ...] = ()) -> None:
        pass

    async def kill_worker(self, agent_address: str, actor_id: ActorId, incarnation: int) -> None:
        pass


def info(actor_id: ActorId, state: ActorState, version: int, address: str | None = None) -> ActorInfo:
    return ActorInfo(actor_id, "Worker", state, address=address, version=version, death_cause="it crashed")


def call(directory: ActorDirectory, actor_id: ActorId) -> asyncio.Future[Any]:
    fut = asyncio.get_running_loop().create_future()
    directory.submit(actor_id, None, b"a/work", b"", (), fut)
    return fut


async def outcome(fut: asyncio.Future[Any]) -> BaseException:
    with pytest.raises(ActorDiedError) as caught:
        await asyncio.wait_for(fut, 5)
    return caught.value


def test_a_call_to_a_dead_actor_is_unavailable() -> None:
    async def main() -> None:
        rt = FakeRuntime()
        directory = ActorDirectory(rt)
        a = ActorId.new()
        directory.update(info(a, ActorState.DEAD, 5))
        exc = await outcome(call(directory, a))
        assert type(exc) is ActorUnavailableError
        assert "is dead: it crashed" in str(exc)
        assert rt.sent == {}

    asyncio.run(main())


def test_queued_calls_are_unavailable_when_the_actor_turns_out_dead() -> None:
    async def main() -> None:
        rt = FakeRuntime()
        directory = ActorDirectory(rt)
        a = ActorId.new()
        directory.update(info(a, ActorState.PENDING, 1))
        queued = [call(directory, a) for _ in range(3)]
        directory.update(info(a, ActorState.DEAD, 2))
        for fut in queued:
            assert type(await outcome(fut)) is ActorUnavailableError
        directory.close()

    asyncio.run(main())


def test_queued_calls_to_an_actor_unknown_to_the_head_are_unavailable() -> None:
    async def main() -> None:
        rt = FakeRuntime()
        directory = ActorDirectory(rt)
        exc = await outcome(call(directory, ActorId.new()))
        assert type(exc) is ActorUnavailableError
        assert "unknown to the cluster" in str(exc)
        directory.close()

    asyncio.run(main())


def test_calls_in_flight_when_the_actor_dies_are_plain_actor_died() -> None:
    async def main() -> None:
        rt = FakeRuntime()
        directory = ActorDirectory(rt)
        a = ActorId.new()
        directory.update(info(a, ActorState.ALIVE, 1, "tcp://w:1"))
        rt.reached.add("tcp://w:1")
        sent = call(directory, a)
        assert rt.sent["tcp://w:1"] == [sent]
        directory.update(info(a, ActorState.DEAD, 2))
        exc = await outcome(sent)
        assert type(exc) is ActorDiedError
        assert not isinstance(exc, ActorUnavailableError)

    asyncio.run(main())


def test_calls_sent_on_a_connection_that_never_came_up_are_unavailable() -> None:
    async def main() -> None:
        rt = FakeRuntime()
        directory = ActorDirectory(rt)
        a = ActorId.new()
        directory.update(info(a, ActorState.ALIVE, 1, "tcp://gone:1"))
        sent = call(directory, a)  # handed to a connection that never completed its handshake
        directory.update(info(a, ActorState.DEAD, 2))
        assert type(await outcome(sent)) is ActorUnavailableError

    asyncio.run(main())


def test_queued_calls_are_unavailable_when_the_runtime_shuts_down() -> None:
    async def main() -> None:
        rt = FakeRuntime()
        directory = ActorDirectory(rt)
        a = ActorId.new()
        directory.update(info(a, ActorState.RESTARTING, 3))
        queued = call(directory, a)
        directory.close()
        exc = await outcome(queued)
        assert type(exc) is ActorUnavailableError and "shut down" in str(exc)

    asyncio.run(main())


def test_the_directory_follows_the_head_through_its_long_poll() -> None:
    async def main() -> None:
        head = Head(NoAgents(), "tcp://head:1")
        node = NodeId.new()
        head.register_node(NodeRegistration(node, "10.0.0.1", "tcp://agent:1", {"CPU": 4.0}))
        rt = FakeRuntime(head)
        directory = ActorDirectory(rt)
        spec = ActorSpec(ActorId.new(), "Worker", "tests.fake", b"", ActorOptions(), "tcp://driver:1", None,
                         ("work",))
        await head.create_actor(spec)
        queued = call(directory, spec.actor_id)  # known to the head as PENDING: queued here
        await turns_until(lambda: directory.info(spec.actor_id) is not None, "the directory learns the actor")
        assert rt.sent == {}
        rt.reached.add("tcp://worker:1")
        head.actor_started(spec.actor_id, 0, "tcp://worker:1", 4242, node)  # the watch wakes at once
        await turns_until(lambda: rt.sent, "the queued call is sent")
        assert rt.sent == {"tcp://worker:1": [queued]}
        before = head.actors.version
        # A restarted head: a new epoch, its versions above the old head's; all actors again.
        head.epoch = "restarted"
        await head.kill_actor(spec.actor_id, True)
        await turns_until(queued.done, "the directory hears of the death")
        assert type(await outcome(queued)) is ActorDiedError  # it was in flight
        assert head.actors.version > before
        directory.close()
        await asyncio.gather(*rt.tasks, return_exceptions=True)

    asyncio.run(main())
