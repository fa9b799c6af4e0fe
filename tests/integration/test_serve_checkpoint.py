"""The controller's checkpoint under the head's cap on a KV value (issue 16, defect 9), on
an embedded cluster whose head holds at most 300,000 bytes per value
($ZEROSERVE_HEAD_MAX_BLOB_BYTES): two applications with 200 KB user_configs (over the cap
together, under it each) survive a SIGKILL of the controller, since each deployment has its
own record; a deployment whose own record would be over the cap is refused at `serve.run`,
saying which and what to do, and nothing of it is deployed."""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator

import pytest

import actors
import serve
from actors.messages import ActorState
from actors.system import current_runtime
from serve.exceptions import DeploymentTooLargeError

from ..conftest import wait_until

pytestmark = [pytest.mark.usefixtures("fresh_serve"), pytest.mark.timeout(150)]
CAP = 300_000


@pytest.fixture(scope="module", autouse=True)
def small_cap_cluster() -> Iterator[None]:
    before = os.environ.get("ZEROSERVE_HEAD_MAX_BLOB_BYTES")
    os.environ["ZEROSERVE_HEAD_MAX_BLOB_BYTES"] = str(CAP)  # the embedded head inherits it
    try:
        actors.init(num_cpus=4)
        yield
    finally:
        actors.shutdown()
        if before is None:
            os.environ.pop("ZEROSERVE_HEAD_MAX_BLOB_BYTES", None)
        else:
            os.environ["ZEROSERVE_HEAD_MAX_BLOB_BYTES"] = before


@serve.deployment
class Configured:
    def reconfigure(self, config: dict) -> None:
        self.size = len(config["x"])

    def __call__(self) -> tuple[int, int]:
        return self.size, os.getpid()


def _controller_pid() -> int | None:
    rt = current_runtime()
    assert rt is not None
    info = rt.run_threadsafe(lambda: rt.head.get_named_actor("SERVE_CONTROLLER", "serve"))
    return info.pid if info is not None and info.state is ActorState.ALIVE else None


def _apps() -> dict[str, str]:
    try:
        return {name: app["status"] for name, app in serve.status()["applications"].items()}
    except Exception:  # the controller restarting
        return {}


def test_two_applications_with_large_user_configs_survive_a_controller_sigkill() -> None:
    handles = [serve.run(Configured.options(name=f"E{i}", user_config={"x": "a" * 200_000}).bind(), name=f"app{i}",
                         route_prefix=None) for i in range(2)]
    before = [h.remote().result(timeout_s=30) for h in handles]
    assert [size for size, _ in before] == [200_000, 200_000]
    assert _apps() == {"app0": "RUNNING", "app1": "RUNNING"}
    old = _controller_pid()
    assert old is not None
    os.kill(old, signal.SIGKILL)
    wait_until(lambda: _controller_pid() not in (None, old), timeout=30, what="the controller to restart")
    wait_until(lambda: _apps() == {"app0": "RUNNING", "app1": "RUNNING"}, timeout=30, interval=0.2,
               what="both applications back in the restarted controller's status")
    after = [h.remote().result(timeout_s=30) for h in handles]
    assert after == before  # the same replicas, adopted with their user_config
    messages = [d["message"] for app in serve.status()["applications"].values() for d in app["deployments"].values()]
    assert messages == ["", ""]


def test_a_deployment_whose_record_is_over_the_cap_is_refused_at_serve_run() -> None:
    serve.run(Configured.options(name="Small", user_config={"x": "a"}).bind(), name="small", route_prefix=None)
    with pytest.raises(DeploymentTooLargeError, match=r"deployment 'Big' of application 'big': user_config too large: "
                                                      r"400,0\d\d bytes .*at most 300,000 bytes per value "
                                                      r"\(\$ZEROSERVE_HEAD_MAX_BLOB_BYTES\).*Load big data in the "
                                                      r"constructor instead"):
        serve.run(Configured.options(name="Big", user_config={"x": "a" * 400_000}).bind(), name="big",
                  route_prefix=None)
    assert _apps() == {"small": "RUNNING"}  # nothing of it was deployed; the others are untouched
