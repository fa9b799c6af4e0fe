"""A replica's control methods (ready, reconfigure, check_health, prepare_for_shutdown)
never wait behind requests: a replica sent more requests than its actor runs at once
(each caller bounds itself separately) keeps answering its health checks and is not
replaced; its requests all complete."""

from __future__ import annotations

import asyncio
import os

import pytest

import actors
import serve

from ..conftest import wait_until

pytestmark = [pytest.mark.usefixtures("cluster", "fresh_serve"), pytest.mark.timeout(180)]


@actors.remote
class Board:
    """A gate the requests wait on, and a log of what the replica did."""

    def __init__(self) -> None:
        self.gate = asyncio.Event()
        self.log: list[str] = []

    async def wait(self) -> None:
        await self.gate.wait()

    async def open(self) -> None:
        self.gate.set()

    async def record(self, what: str) -> None:
        self.log.append(what)

    async def recorded(self) -> list[str]:
        return list(self.log)


@serve.deployment(max_ongoing_requests=1, health_check_period_s=0.3, health_check_timeout_s=3,
                  graceful_shutdown_wait_loop_s=0, graceful_shutdown_timeout_s=5)
class Busy:
    def __init__(self, board: actors.ActorHandle) -> None:
        self.board = board

    async def __call__(self, i: int) -> int:
        await self.board.record.remote(f"start {i}")
        await self.board.wait.remote()
        return i

    async def check_health(self) -> None:
        await self.board.record.remote(f"health {os.getpid()}")

    def where(self) -> tuple[str, int]:
        ctx = serve.get_replica_context()
        return f"SERVE_REPLICA::{ctx.app_name}#{ctx.deployment}#{ctx.replica_tag}", os.getpid()


def test_a_replica_with_more_requests_than_its_actor_runs_keeps_answering_health_checks() -> None:
    board = Board.remote()
    handle = serve.run(Busy.bind(board))
    name, pid = handle.where.remote().result(timeout_s=30)
    replica = actors.get_actor(name, namespace="serve")

    def log() -> list[str]:
        return actors.get(board.recorded.remote(), timeout=10)

    def health_checks() -> int:
        return log().count(f"health {pid}")

    # Callers that each keep to max_ongoing_requests, together far over the replica actor's
    # max_concurrency (max_ongoing_requests + 16): the extras wait in the actor's queue.
    direct = [replica.handle_request.remote("__call__", (i,), {}) for i in range(40)]
    via_handle = [handle.remote(100 + i) for i in range(3)]
    wait_until(lambda: any(line.startswith("start") for line in log()), timeout=30, what="a request to run")
    before = health_checks()
    # At a 0.3 s period, 8 more checks span over the 3 s timeout; a check stuck behind the
    # queued requests would never run here (and the replica would be replaced after 3 s).
    wait_until(lambda: health_checks() >= before + 8, timeout=30, what="health checks while the replica is busy")
    assert actors.get(replica.check_health.remote(), timeout=10) is True
    deployment = serve.status()["applications"]["default"]["deployments"]["Busy"]
    assert deployment["replicas"] == {"RUNNING": 1}

    actors.get(board.open.remote(), timeout=10)
    assert actors.get(direct, timeout=60) == list(range(40))  # none dropped with a replaced replica
    assert [r.result(timeout_s=60) for r in via_handle] == [100, 101, 102]
    assert handle.where.remote().result(timeout_s=30) == (name, pid)  # the same replica all along
