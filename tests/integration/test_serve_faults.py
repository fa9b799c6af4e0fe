"""Serve under faults it must answer at once (issue 16): a replica that dies is replaced
when the head learns of it, not at its next health check; a deployment with
num_replicas=0 and no autoscaling fails calls at once and says so."""

from __future__ import annotations

import os
import signal
import time

import pytest

import serve
from serve.exceptions import ServeError

from ..conftest import wait_until

pytestmark = [pytest.mark.usefixtures("cluster", "fresh_serve"), pytest.mark.timeout(120)]


@serve.deployment(num_replicas=2, health_check_period_s=60)
class Pid:
    def __call__(self) -> int:
        return os.getpid()


def _deployment(app: str, name: str) -> dict:
    return serve.status()["applications"][app]["deployments"][name]


def test_a_killed_replica_is_replaced_when_the_head_says_it_died() -> None:
    handle = serve.run(Pid.bind(), name="faults", route_prefix=None)

    def both() -> set[int] | None:
        found = {handle.remote().result(timeout_s=30) for _ in range(20)}
        return found if len(found) == 2 else None

    pids = wait_until(both, timeout=30, what="both replicas answering")
    victim = min(pids)
    killed_at = time.monotonic()
    os.kill(victim, signal.SIGKILL)
    # The health check period is 60 s: only the death event can make this quick.
    wait_until(lambda: "died" in (_deployment("faults", "Pid")["message"] or ""), timeout=10,
               what="the status to say the replica died")
    noticed = time.monotonic() - killed_at
    wait_until(lambda: _deployment("faults", "Pid")["replicas"].get("RUNNING") == 2
               and _deployment("faults", "Pid")["status"] == "HEALTHY", timeout=30, what="a replacement running")
    answers = {handle.remote().result(timeout_s=30) for _ in range(30)}
    assert victim not in answers and len(answers) == 2
    assert noticed < 10, f"the death was noticed after {noticed:.1f} s"


def test_num_replicas_zero_fails_calls_at_once_and_the_status_says_why() -> None:
    handle = serve.run(Pid.options(num_replicas=0).bind(), name="none", route_prefix=None)
    d = _deployment("none", "Pid")
    assert d["status"] == "HEALTHY" and "num_replicas is 0" in d["message"]
    started = time.monotonic()
    with pytest.raises(ServeError, match="is unavailable: num_replicas is 0 and there is no autoscaling_config"):
        handle.remote().result(timeout_s=30)
    assert time.monotonic() - started < 5
    serve.run(Pid.options(num_replicas=1).bind(), name="none", route_prefix=None)  # scaled up: served
    assert handle.remote().result(timeout_s=30) > 0


def test_a_frozen_replica_gets_no_new_requests_until_it_thaws() -> None:
    handle = serve.run(Pid.bind(), name="frozen", route_prefix=None)

    def both() -> set[int] | None:
        found = {handle.remote().result(timeout_s=30) for _ in range(20)}
        return found if len(found) == 2 else None

    frozen, alive = sorted(wait_until(both, timeout=30, what="both replicas answering"))
    os.kill(frozen, signal.SIGSTOP)
    try:
        stuck = [handle.remote() for _ in range(10)]  # some land on the stopped replica
        started = time.monotonic()

        def only_alive_answers() -> bool:
            answers = [handle.remote() for _ in range(10)]
            return all(r.result(timeout_s=2) == alive for r in answers)

        def settled() -> bool:
            try:
                return only_alive_answers()
            except TimeoutError:
                return False

        wait_until(settled, timeout=30, what="new requests to go to the live replica only")
        set_aside_after = time.monotonic() - started
        assert all(handle.remote().result(timeout_s=5) == alive for _ in range(20))
    finally:
        os.kill(frozen, signal.SIGCONT)
    assert sorted({r.result(timeout_s=30) for r in stuck}) == sorted({frozen, alive})  # nothing was lost
    wait_until(lambda: frozen in {handle.remote().result(timeout_s=30) for _ in range(20)}, timeout=30,
               what="the thawed replica to be routed to again")
    assert set_aside_after < 15, set_aside_after
