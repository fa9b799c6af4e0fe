"""The reconcile loop's cost grows with what changes, not with the number of deployments.

The real controller on fake replica IO (tests/unit/test_controller.py's): with every
deployment settled, a tick at 1,000 deployments costs about what it costs at 10 (asserted
as a ratio of the two, measured in the same run, never as an absolute time); a change wakes
only its own deployment; a settled deployment still gets its health checks on time.
"""

from __future__ import annotations

import asyncio
import time

from serve._config import DeploymentConfig
from serve.messages import DeploymentId, DeploymentStatus, DeploymentTarget

from . import test_controller as tc


def _target(i: int, period_s: float = 1000.0, user_config: object = None) -> DeploymentTarget:
    return DeploymentTarget("d", f"app{i}", "v1", b"code",
                            DeploymentConfig(num_replicas=1, health_check_period_s=period_s, user_config=user_config),
                            f"/app{i}", False, True)


async def _settled(n: int, period_s: float = 1000.0) -> tuple[tc.ServeController, tc.FakeIO]:
    io = tc.FakeIO()
    c = await tc.controller_on(io)
    await c.deploy_apps({f"app{i}": [_target(i, period_s)] for i in range(n)})
    await tc.healthy(c, io)
    await tc.step(c)
    return c, io


async def _idle_tick_s(n: int) -> float:
    c, _ = await _settled(n)
    best = float("inf")
    for _ in range(60):  # the least of many: other processes on the machine only add time
        t0 = time.perf_counter()
        await tc.step(c, 0.0)
        best = min(best, time.perf_counter() - t0)
    return best


def test_a_settled_tick_costs_the_same_at_10_and_1000_deployments() -> None:
    small = asyncio.run(_idle_tick_s(10))
    large = asyncio.run(_idle_tick_s(1000))
    assert large / small < 4.0, f"idle tick: {large * 1e6:.0f} µs at 1000 deployments, {small * 1e6:.0f} µs at 10"


def test_a_tick_steps_only_what_is_under_way() -> None:
    async def main() -> None:
        c, io = await _settled(50)
        assert c.schedule.active == 0 and len(c.deployments) == 50  # all settled, nothing stepped
        await c.deploy_apps({"app7": [_target(7, user_config={"x": 1})]})  # a change wakes only its deployment
        assert c.schedule.active == 1
        for p in io.replicas.pending("reconfigure"):
            p.succeed(None)
        for _ in range(3):
            await tc.step(c)
        assert c.schedule.active == 0
        st = await c.status()
        assert st["applications"]["app7"]["deployments"]["d"]["status"] == DeploymentStatus.HEALTHY
    asyncio.run(main())


def test_a_replica_slow_to_start_settles_once_running() -> None:
    async def main() -> None:
        io = tc.FakeIO()
        c = await tc.controller_on(io)
        await c.deploy_apps({"app0": [_target(0)]})
        for _ in range(15):  # 1.5 s without an answer: its placement is asked (and never answered)
            await tc.step(c)
        assert all(r.probe is not None for r in c.deployments[DeploymentId("app0", "d")].replicas.values())
        await tc.healthy(c, io)
        await tc.step(c)
        assert c.schedule.active == 0  # the unanswered placement question keeps nothing awake
    asyncio.run(main())


def test_a_settled_deployment_is_still_health_checked_on_time() -> None:
    async def main() -> None:
        c, io = await _settled(3, period_s=2.0)
        del io.replicas.auto["check_health"]  # answered here from now on
        io.replicas.calls.clear()
        for _ in range(25):  # 2.5 s: every replica's next check came due and went out
            await tc.step(c)
        asked = io.replicas.pending("check_health")
        assert len(asked) == 3 and c.schedule.active == 3  # waiting for the answers
        for p in asked:
            p._done, p._error = True, RuntimeError("unwell")
        await tc.step(c)
        rs = c.deployments[DeploymentId("app0", "d")].replicas.values()
        assert [r.health_failures for r in rs] == [1]
    asyncio.run(main())


def test_a_mass_deploy_starts_a_few_replicas_at_a_time() -> None:
    async def main() -> None:
        io = tc.FakeIO()
        c = tc.ServeController(http_options={"location": "HeadOnly"}, io=io, clock=tc._Clock(), run_loop=False,
                               max_starting=3)
        await c.ready()
        await c.deploy_apps({f"app{i}": [_target(i)] for i in range(10)})
        for _ in range(3):
            await tc.step(c)
        assert len(io.replicas.pending("ready")) == 3  # the others wait for a slot
        first = io.replicas.pending("ready")[0]
        first._done, first._error = True, RuntimeError("boom in __init__")  # a failed start frees its slot too
        await tc.step(c)
        assert len(io.replicas.pending("ready")) == 3
        await tc.healthy(c, io)  # all ten get there, three at a time
        assert len(c.deployments) == 10 and c.starts is not None and c.starts.starting == 0
    asyncio.run(main())
