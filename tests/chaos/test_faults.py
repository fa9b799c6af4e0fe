"""Fault drills under steady HTTP traffic, as an operator would run them.

Six clients send GETs back to back to the two proxies (127.0.0.21 and .22, see conftest),
failing over to the other proxy only on a refused connection, as a load balancer does.
Then one fault each: SIGKILL of a replica, of the controller, of a proxy, of the head; a
rolling update; SIGSTOP of a replica for 20 s, then SIGCONT (its fault window is the
6.5 s after the freeze, the routers' bound to set a frozen replica aside: requests in
flight then may fail or reach the timeout, every later one must succeed in time; it is
whole once the replica runs again and the rest below holds); SIGKILL of the second node's
agent. For each drill:

- no request that was not in flight at the fault fails (for the controller, the head and
  the rolling update: no request fails at all);
- no request hangs: none reaches the clients' 10 s timeout (for the SIGSTOP, none but those
  in flight in its window);
- the service is whole again within the drill's stated bound (see `ChaosCluster.not_whole`:
  status, versions, proxies, every proxy answering, and the exact census of processes);
- no process is left over or doubled: the census above, and no process of the cluster from
  before the fault runs outside it.

Each drill adds a row to the drill table (printed here and at the end of the run;
`benchmarks/drills.py` runs the suite and prints it). Drills run in file order on one
cluster; the agent's is last (it takes a node away).
"""

from __future__ import annotations

import asyncio
import os
import signal
import threading
import time
from collections.abc import Callable

import psutil
import pytest

import serve

from ..conftest import pid_alive, wait_until
from ._traffic import REQUEST_TIMEOUT_S, Row, Traffic, Verdict, record
from .conftest import APP, HEAD_IP, NODE_IP, ROUTE, ChaosCluster

pytestmark = pytest.mark.timeout(150)


@serve.deployment(num_replicas=2)  # health checks and everything else: the defaults
class Drill:
    def __init__(self, label: str = "v1") -> None:
        self.label = label

    async def __call__(self, request) -> str:
        await asyncio.sleep(0.005)  # so that requests are in flight at every moment
        return f"{self.label} {os.getpid()}"


@pytest.fixture(scope="module")
def cluster(chaos_cluster: ChaosCluster) -> ChaosCluster:
    serve.run(Drill.bind("v1"), name=APP, route_prefix=ROUTE)
    chaos_cluster.version = None
    wait_until(lambda: not chaos_cluster.not_whole(), timeout=60, what="the service to be whole before the drills")
    return chaos_cluster


Fault = Callable[[], Callable[[], bool]]  # makes the fault; returns "it has taken effect"


def drill(c: ChaosCluster, name: str, fault: Fault, *, bound_s: float, in_flight_may_fail: bool,
          in_flight_may_hang: bool = False, note: str = "", also: Callable[[], str] = lambda: "") -> Verdict:
    """Run `fault` under traffic, record its row, and assert what every drill asserts
    (`also`: why the service is not whole yet beyond `not_whole`, "" when it is;
    `in_flight_may_hang`: requests in flight at the fault may reach the client's timeout)."""
    deadline = time.monotonic() + 60
    while (reason := c.not_whole()) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not reason, f"the service was not whole before the {name} drill: {reason}"
    before = c.all_pids()
    traffic = Traffic([c.urls[ip] for ip in c.alive_ips], ROUTE)
    try:
        t0 = time.monotonic()
        wait_until(lambda: traffic.ok_since(t0) >= 60, timeout=30, what="steady traffic before the fault")
        t_fault = time.monotonic()
        took_effect = fault()
        wait_until(took_effect, timeout=15, what=f"the {name} to take effect")
        t_effect = time.monotonic()
        deadline = t_fault + bound_s
        while (reason := also() or c.not_whole()) and time.monotonic() < deadline:
            time.sleep(0.1)
        t_whole = time.monotonic()
        if not reason:  # and service goes on through every live proxy afterwards
            wait_until(lambda: all(traffic.ok_since(t_whole, c.urls[ip]) >= 20 for ip in c.alive_ips), timeout=30,
                       what="traffic through every proxy after recovery")
    finally:
        done = traffic.stop()
    v = Verdict(done, t_fault, t_effect, t_whole)
    record(Row(name, len(done), len(v.failed), len(v.in_flight), v.worst_latency,
               t_whole - t_fault, bound_s, note or ("" if not reason else f"NOT WHOLE: {reason[:80]}")))
    assert not reason, f"the service was not whole {bound_s} s after the {name}: {reason}"
    if not in_flight_may_hang:
        assert not v.timed_out, f"requests hung to the {REQUEST_TIMEOUT_S} s timeout: {v.describe(v.timed_out)}"
    assert not v.late_failures, f"requests not in flight at the {name} failed: {v.describe(v.late_failures)}"
    if not in_flight_may_fail:
        assert not v.failed, f"requests failed across the {name}: {v.describe(v.failed)}"
    assert not (strays := c.strays(before)), f"processes left over after the {name}: {strays}"
    return v


def _kill(pid: int, sig: signal.Signals = signal.SIGKILL) -> Callable[[], bool]:
    os.kill(pid, sig)
    return lambda: not pid_alive(pid)


def test_sigkill_of_a_replica(cluster: ChaosCluster) -> None:
    victim = cluster.pids("replica", NODE_IP)[0]
    drill(cluster, "SIGKILL replica", lambda: _kill(victim), bound_s=30, in_flight_may_fail=True)
    assert victim not in cluster.pids("replica")


def test_sigkill_of_the_controller(cluster: ChaosCluster) -> None:
    victim = cluster.pids("controller")[0]
    drill(cluster, "SIGKILL controller", lambda: _kill(victim), bound_s=30, in_flight_may_fail=False)
    assert cluster.pids("controller") != [victim]


def test_sigkill_of_a_proxy(cluster: ChaosCluster) -> None:
    victim = cluster.pids("proxy", NODE_IP)[0]
    drill(cluster, "SIGKILL proxy (127.0.0.22)", lambda: _kill(victim), bound_s=30, in_flight_may_fail=True,
          note="the restarted proxy listens once it has its routes")
    assert cluster.pids("proxy", NODE_IP) != [victim]


def test_sigkill_of_the_head(cluster: ChaosCluster) -> None:
    victim = cluster.pids("head")[0]
    drill(cluster, "SIGKILL head", lambda: _kill(victim), bound_s=45, in_flight_may_fail=False)
    assert cluster.pids("head") != [victim]


def test_rolling_update(cluster: ChaosCluster) -> None:
    old = set(cluster.pids("replica"))
    errors: list[BaseException] = []

    def roll() -> Callable[[], bool]:
        def run() -> None:
            try:
                serve.run(Drill.options(version="v2").bind("v2"), name=APP, route_prefix=ROUTE)
            except BaseException as e:
                errors.append(e)

        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        cluster.version = "v2"
        return lambda: True

    drill(cluster, "rolling update v1 -> v2", roll, bound_s=60, in_flight_may_fail=False)
    assert not errors, errors
    assert not old & set(cluster.pids("replica")), "old replicas still run after the roll"


def test_sigstop_of_a_replica_for_20_s(cluster: ChaosCluster) -> None:
    victim = cluster.pids("replica", NODE_IP)[0]
    resume = threading.Timer(20.0, lambda: os.kill(victim, signal.SIGCONT))
    t_freeze: list[float] = []

    def freeze() -> Callable[[], bool]:
        os.kill(victim, signal.SIGSTOP)
        t_freeze.append(time.monotonic())
        resume.start()

        def noticed() -> bool:  # the fault window: the freeze, and the routers' bound to set it aside
            # (no request finished for 3 s, then a ping unanswered for 2 s; 1 s ticks)
            return time.monotonic() - t_freeze[0] >= 6.5

        return noticed

    def still_frozen() -> str:
        return "the frozen replica still runs frozen" if _stopped(victim) else ""

    try:
        # Requests in flight on the frozen replica wait for it (it may still answer them);
        # every later one must go to the other replica.
        drill(cluster, "SIGSTOP replica 20 s", freeze, bound_s=45, in_flight_may_fail=True, in_flight_may_hang=True,
              note="in flight on it: wait for the thaw", also=still_frozen)
    finally:
        resume.cancel()
        if pid_alive(victim):
            os.kill(victim, signal.SIGCONT)


def _stopped(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_STOPPED
    except psutil.NoSuchProcess:
        return False


@serve.deployment(health_check_period_s=600)
class Lonely:
    async def __call__(self, request) -> int:
        return os.getpid()


def test_a_killed_replica_leaves_the_status_within_2_s(cluster: ChaosCluster) -> None:
    """Without traffic and with health checks 10 minutes apart: only the death event can
    tell the controller."""
    serve.run(Lonely.bind(), name="lonely", route_prefix="/lonely")
    try:
        [replica] = serve.status()["applications"]["lonely"]["deployments"]["Lonely"]["replica_details"]
        os.kill(replica["pid"], signal.SIGKILL)
        t = time.monotonic()

        def gone() -> bool:
            details = serve.status()["applications"]["lonely"]["deployments"]["Lonely"]["replica_details"]
            return not any(d["replica_id"] == replica["replica_id"] and d["state"] == "RUNNING" for d in details)

        while not gone() and time.monotonic() - t <= 2.0:
            time.sleep(0.05)
        assert gone(), "the dead replica was still shown RUNNING 2 s after its death"
    finally:
        serve.delete("lonely")


def test_sigkill_of_the_second_nodes_agent(cluster: ChaosCluster) -> None:
    agent = cluster.agents[NODE_IP]
    doomed = cluster.pids("replica", NODE_IP) + cluster.pids("proxy", NODE_IP) + cluster.pids("zygote", NODE_IP)
    assert doomed

    def kill_agent() -> Callable[[], bool]:
        os.kill(agent, signal.SIGKILL)
        cluster.alive_ips = (HEAD_IP,)  # what "whole" means from now on: everything on the head node
        return lambda: not any(pid_alive(p) for p in [agent, *doomed])

    drill(cluster, "SIGKILL agent (node 127.0.0.22)", kill_agent, bound_s=60, in_flight_may_fail=True)
