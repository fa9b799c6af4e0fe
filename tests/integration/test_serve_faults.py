"""Serve under faults it must answer at once (issue 16): a replica that dies is replaced
when the head learns of it, not at its next health check; a deployment with
num_replicas=0 and no autoscaling fails calls at once and says so; a frozen replica gets no
new requests, and one that stays frozen is reported (the deployment UNHEALTHY, naming it)
and replaced at its health check time-out while requests go on to the other replica."""

from __future__ import annotations

import os
import signal
import threading
import time

import pytest

import serve
from serve._data.router import PING_TIMEOUT_S, STALL_S
from serve.exceptions import ServeError

from ..conftest import pid_alive, wait_until

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


@serve.deployment(num_replicas=2, health_check_period_s=1, health_check_timeout_s=4)
class Quick:
    def __call__(self) -> int:
        return os.getpid()


def test_a_replica_that_stays_frozen_is_reported_unhealthy_then_replaced() -> None:
    handle = serve.run(Quick.bind(), name="stays", route_prefix=None)

    def both() -> set[int] | None:
        found = {handle.remote().result(timeout_s=30) for _ in range(20)}
        return found if len(found) == 2 else None

    victim = min(wait_until(both, timeout=30, what="both replicas answering"))
    victim_id = next(r["replica_id"] for r in _deployment("stays", "Quick")["replica_details"] if r.get("pid") == victim)
    done: list[tuple[float, float, int | None, str]] = []  # (start, end, pid, error) of each request
    stop = threading.Event()

    def traffic() -> None:
        while not stop.is_set():
            start = time.monotonic()
            try:
                pid, error = handle.remote().result(timeout_s=20), ""
            except Exception as e:
                pid, error = None, f"{type(e).__name__}: {e}"
            done.append((start, time.monotonic(), pid, error))

    threads = [threading.Thread(target=traffic, daemon=True) for _ in range(3)]
    for t in threads:
        t.start()
    try:
        wait_until(lambda: len(done) >= 30, timeout=30, what="steady traffic")
        os.kill(victim, signal.SIGSTOP)
        frozen_at = time.monotonic()

        def reported() -> dict | None:
            d = _deployment("stays", "Quick")
            return d if d["status"] == "UNHEALTHY" and f"replica {victim_id} is unresponsive" in d["message"] else None

        seen = wait_until(reported, timeout=10, interval=0.1, what="the status to name the unresponsive replica")
        wait_until(lambda: not pid_alive(victim), timeout=20, what="the frozen replica's process to be killed")

        def healed() -> bool:
            d = _deployment("stays", "Quick")
            ids = {r["replica_id"] for r in d["replica_details"]}
            return d["status"] == "HEALTHY" and d["replicas"] == {"RUNNING": 2} and victim_id not in ids

        wait_until(healed, timeout=30, interval=0.1, what="a replacement running and the deployment HEALTHY")
        healed_at = time.monotonic()
        aside = frozen_at + STALL_S + PING_TIMEOUT_S + 1.0  # by then the routers could set it aside anyway
        wait_until(lambda: sum(1 for r in done if r[0] > max(healed_at, aside) and r[2]) >= 20, timeout=30,
                   what="requests after the replacement")
    finally:
        stop.set()
        for t in threads:
            t.join(30)
        if pid_alive(victim):
            os.kill(victim, signal.SIGKILL)
            os.kill(victim, signal.SIGCONT)
    assert "gone unanswered for" in seen["message"] and "health_check_timeout_s=4 s" in seen["message"]
    assert victim_id in {r["replica_id"] for r in seen["replica_details"]}  # reported before it was replaced
    # Requests went on: those sent once the routers could set the frozen replica aside all
    # succeeded (none on it); the ones it held fail or answer, none hangs.
    later = [r for r in done if r[0] > aside]
    assert later and all(not r[3] and r[2] != victim for r in later), [r for r in later if r[3]][:3]
    assert sum(1 for r in done if frozen_at < r[0] and r[1] < healed_at and not r[3]) >= 10
    assert all(r[1] - r[0] < 15 for r in done)
    assert not pid_alive(victim)
