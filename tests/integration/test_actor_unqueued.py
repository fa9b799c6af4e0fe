"""`@actors.unqueued` methods start at once even when max_concurrency calls already run;
other calls keep waiting their turn."""

from __future__ import annotations

import asyncio

import pytest

import actors

pytestmark = [pytest.mark.usefixtures("cluster"), pytest.mark.timeout(60)]


@actors.remote(max_concurrency=1)
class Busy:
    def __init__(self) -> None:
        self.gate = asyncio.Event()
        self.blocked = 0

    async def block(self) -> str:
        self.blocked += 1
        await self.gate.wait()
        return "released"

    async def queued_peek(self) -> int:
        return self.blocked

    @actors.unqueued
    async def peek(self) -> int:
        return self.blocked

    @actors.unqueued
    async def release(self) -> None:
        self.gate.set()


def test_an_unqueued_method_runs_while_the_actor_is_at_max_concurrency() -> None:
    b = Busy.remote()
    blocked = b.block.remote()
    queued = b.queued_peek.remote()  # waits behind `block`
    assert actors.get(b.peek.remote(), timeout=20) == 1  # the unqueued one answers meanwhile
    assert not queued.done() and not blocked.done()
    actors.get(b.release.remote(), timeout=20)
    assert actors.get(blocked, timeout=20) == "released"
    assert actors.get(queued, timeout=20) == 1
