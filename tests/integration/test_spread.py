"""Replicas spread over the nodes (issue 16, item 8): a deployment whose replicas all run
on one node gets one moved onto a node that joins, rolled like an update (the replacement
serves before the old one drains), so one node's loss is no longer a full outage."""

from __future__ import annotations

import pytest

import actors
import serve
from actors.system import current_runtime

from ..conftest import free_port, wait_until, zeroserve

pytestmark = pytest.mark.timeout(300)


@serve.deployment(num_replicas=2, ray_actor_options={"num_cpus": 1})
class Where:
    def __call__(self) -> str:
        rt = current_runtime()
        assert rt is not None
        return rt.node_ip


def test_a_node_that_joins_takes_a_replica_off_the_crowded_node() -> None:
    port = free_port()
    zeroserve("start", "--head", "--port", str(port), "--num-cpus", "4")
    try:
        actors.init(address="auto")
        try:
            handle = serve.run(Where.bind(), name="spread", route_prefix=None)
            assert {handle.remote().result(timeout_s=30) for _ in range(20)} == {"127.0.0.1"}
            zeroserve("start", "--address", f"127.0.0.1:{port}", "--node-ip", "127.0.0.6", "--num-cpus", "2")
            try:
                def spread() -> bool:
                    d = serve.status()["applications"]["spread"]["deployments"]["Where"]
                    if d["status"] != "HEALTHY":
                        return False
                    return {handle.remote().result(timeout_s=30) for _ in range(20)} == {"127.0.0.1", "127.0.0.6"}

                wait_until(spread, timeout=60, what="one replica on each node")
                d = serve.status()["applications"]["spread"]["deployments"]["Where"]
                assert d["replicas"] == {"RUNNING": 2}
            finally:
                serve.shutdown()
                zeroserve("stop", "--node-ip", "127.0.0.6")
        finally:
            actors.shutdown()
    finally:
        zeroserve("stop")
