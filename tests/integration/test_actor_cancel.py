"""Cancellation crosses processes: a caller that stops waiting for a call (a cancelled ref,
a timed-out await in another actor) cancels the async method running at the callee."""

from __future__ import annotations

import asyncio
import concurrent.futures

import pytest

import actors

from ..conftest import wait_until

pytestmark = [pytest.mark.usefixtures("cluster"), pytest.mark.timeout(60)]


@actors.remote
class Hanger:
    """Its `hang` waits until cancelled and records how it ended."""

    def __init__(self) -> None:
        self.started = 0
        self.cancelled = 0
        self.finished = 0

    async def hang(self) -> str:
        self.started += 1
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            self.cancelled += 1
            raise
        finally:
            self.finished += 1
        return "never"

    async def counts(self) -> dict:
        return {"started": self.started, "cancelled": self.cancelled, "finished": self.finished}


@actors.remote
class Caller:
    async def with_timeout(self, other: actors.ActorHandle, timeout_s: float) -> str:
        try:
            return await asyncio.wait_for(other.hang.remote(), timeout_s)
        except asyncio.TimeoutError:
            return "timed out"


def _counts(h: actors.ActorHandle) -> dict:
    return actors.get(h.counts.remote(), timeout=10)


def test_cancelling_a_ref_cancels_the_method_at_the_actor() -> None:
    h = Hanger.remote()
    ref = h.hang.remote()
    wait_until(lambda: _counts(h)["started"] == 1, timeout=20, what="the call to start")
    ref.cancel()
    wait_until(lambda: _counts(h)["cancelled"] == 1, timeout=20, what="the callee to be cancelled")
    assert _counts(h) == {"started": 1, "cancelled": 1, "finished": 1}
    with pytest.raises((asyncio.CancelledError, concurrent.futures.CancelledError)):
        actors.get(ref, timeout=5)
    assert actors.get(h.counts.remote(), timeout=10)["started"] == 1  # the actor keeps serving


def test_a_timed_out_await_in_another_actor_cancels_the_callee() -> None:
    h = Hanger.remote()
    c = Caller.remote()
    assert actors.get(c.with_timeout.remote(h, 0.5), timeout=30) == "timed out"
    wait_until(lambda: _counts(h)["cancelled"] == 1, timeout=20, what="the callee to be cancelled")


def test_a_cancelled_task_on_an_async_driver_cancels_the_callee() -> None:
    h = Hanger.remote()

    async def main() -> None:
        task = asyncio.ensure_future(_await(h.hang.remote()))
        await asyncio.sleep(0)  # the task runs up to its await of the ref
        while _started(h) == 0:
            await asyncio.sleep(0.02)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(main())
    wait_until(lambda: _counts(h)["cancelled"] == 1, timeout=20, what="the callee to be cancelled")


async def _await(ref: actors.ObjectRef) -> object:
    return await ref


def _started(h: actors.ActorHandle) -> int:
    return _counts(h)["started"]
