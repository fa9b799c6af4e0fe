"""Scale to zero (issue 14, item 18) in the logic alone: the controller keeps publishing the
route of a deployment that autoscales with min_replicas=0 while it runs no replica, and a
router with no replica reports its waiting request at once (not at its next report). One
that cannot start a replica (UNHEALTHY) is published as unavailable, and callers fail
rather than wait forever."""

from __future__ import annotations

import asyncio
import random

import pytest

from actors.system import Update
from serve._config import DeploymentConfig
from serve._data.http_proxy import ROUTES_KEY
from serve._data.router import Router, replica_set_key
from serve.exceptions import DeploymentUnavailableError
from serve.messages import DeploymentStatus, DeploymentTarget, ReplicaInfo, ReplicaSet

from .test_controller import D, FakeIO, controller_on, step
from .test_router import DEPLOYMENT, FakeController, FakeReplica, settle, until


def _autoscaling_target(min_replicas: int) -> DeploymentTarget:
    config = DeploymentConfig(autoscaling_config={"min_replicas": min_replicas, "max_replicas": 2,
                                                  "metrics_interval_s": 0.1})
    return DeploymentTarget("d", "app", "v1", b"code", config, "/d", False, True)


def test_the_route_of_a_deployment_at_zero_replicas_stays_published() -> None:
    async def main() -> None:
        io = FakeIO()
        c = await controller_on(io)
        await c.deploy([_autoscaling_target(0)])
        await step(c)
        assert io.replicas.started == []  # nothing runs while idle
        assert (await c.listen(ROUTES_KEY, -1, 0.0)).value.routes == {"/d": D}
        # load arrives: the controller starts a replica at once (0 -> 1 has no delay)
        c.record_load("router-1", D, 1.0)
        await step(c)
        assert len(io.replicas.started) == 1

    asyncio.run(main())


def test_a_deployment_with_replicas_to_keep_is_routed_only_once_one_runs() -> None:
    async def main() -> None:
        io = FakeIO()
        c = await controller_on(io)
        await c.deploy([_autoscaling_target(1)])
        await step(c)
        assert (await c.listen(ROUTES_KEY, -1, 0.0)).value.routes == {}  # its replica is still starting

    asyncio.run(main())


def test_a_router_with_no_replica_reports_a_waiting_request_at_once() -> None:
    async def main() -> None:
        controller = FakeController()
        # reports every 1000 s: only the immediate report can arrive within this test
        controller.push(Update(1, ReplicaSet(DEPLOYMENT, (), metrics_interval_s=1000.0)))
        router = Router(DEPLOYMENT, controller, rng=random.Random(0))
        call = asyncio.get_running_loop().create_task(router.call("m", (), {}))
        await until(lambda: controller.reports, "a load report")
        assert controller.reports[-1][1:] == (DEPLOYMENT, 1.0)
        # a replica arrives: the waiting request goes to it
        replica = FakeReplica("a")
        controller.push(Update(2, ReplicaSet(DEPLOYMENT, (ReplicaInfo("a", replica, 1),),  # type: ignore[arg-type]
                                             metrics_interval_s=1000.0)))
        await until(lambda: replica.requests, "the request at the new replica")
        replica.requests[0].succeed("served")
        assert await asyncio.wait_for(call, 5) == "served"
        router.close()
        await settle()

    asyncio.run(main())




def test_a_deployment_at_zero_that_cannot_start_is_published_as_unavailable() -> None:
    async def main() -> None:
        io = FakeIO()
        c = await controller_on(io)
        await c.deploy([_autoscaling_target(0)])
        c.record_load("router-1", D, 1.0)
        for _ in range(200):  # every start fails (its constructor raises), with back-offs between
            for p in io.replicas.pending("ready"):
                p._done, p._error = True, RuntimeError("the model file is missing")
            await step(c, 1.0)
            st = (await c.status())["applications"]["app"]["deployments"]["d"]
            if st["status"] == DeploymentStatus.UNHEALTHY:
                break
        rs = (await c.listen(replica_set_key(D), -1, 0.0)).value
        assert rs.replicas == () and "the model file is missing" in rs.unavailable

    asyncio.run(main())


def test_calls_waiting_at_a_router_fail_when_the_deployment_becomes_unavailable() -> None:
    async def main() -> None:
        controller = FakeController()
        controller.push(Update(1, ReplicaSet(DEPLOYMENT, (), metrics_interval_s=1000.0)))
        router = Router(DEPLOYMENT, controller, rng=random.Random(0))
        waiting = asyncio.get_running_loop().create_task(router.call("m", (), {}))
        await until(lambda: controller.reports, "the call to wait")
        controller.push(Update(2, ReplicaSet(DEPLOYMENT, (), metrics_interval_s=1000.0,
                                             unavailable="its constructor failed 3 times: boom")))
        with pytest.raises(DeploymentUnavailableError, match="constructor failed 3 times: boom"):
            await asyncio.wait_for(waiting, 5)
        with pytest.raises(DeploymentUnavailableError):  # and a new call fails at once
            await asyncio.wait_for(router.call("m", (), {}), 5)
        router.close()
        await settle()

    asyncio.run(main())
