"""`serve.shutdown()` leaves nothing running even when the controller's own shutdown cannot
finish: the controller keeps to a total budget, and past the driver's timeout the driver
kills the controller, the proxies and the replicas itself (found by name in the head's
actor table) and drops the checkpoint. Serve is detached here, as in production, so
nothing would die with the driver."""

from __future__ import annotations

import asyncio
import os
import signal
import time

import httpx
import pytest

import serve
import serve._api.startup as serve_api
from actors.messages import ActorState
from actors.system import current_runtime
from serve._names import CHECKPOINT_KEY, RECORDS_PREFIX

from ..conftest import free_port, pid_alive, wait_until

pytestmark = [pytest.mark.usefixtures("cluster"), pytest.mark.timeout(240)]


@serve.deployment(graceful_shutdown_wait_loop_s=0.1, graceful_shutdown_timeout_s=300)
class Stuck:
    """`hang` never returns, and the replica waits up to 300 s for it when asked to stop."""

    def __init__(self) -> None:
        self.hanging = False

    async def hang(self) -> None:
        self.hanging = True
        await asyncio.Event().wait()

    async def is_hanging(self) -> bool:
        return self.hanging

    async def __call__(self, request) -> str:
        return "ok"


def _head(call):
    """`call(head_client)`, awaited on the runtime's loop: e.g. _head(lambda h: h.list_actors())."""
    rt = current_runtime()
    return rt.run_threadsafe(lambda: call(rt.head))


def _serve_actors() -> dict[str, int | None]:
    """{name: pid} of the live actors in Serve's namespace (controller, proxies, replicas)."""
    return {i.name: i.pid for i in _head(lambda h: h.list_actors())
            if i.namespace == "serve" and i.name and i.state is not ActorState.DEAD}


def _refused(url: str) -> bool:
    try:
        httpx.get(url, timeout=5)
    except httpx.ConnectError:
        return True
    return False


def _start_stuck_serve() -> tuple[int, dict[str, int | None]]:
    port = free_port()
    serve.start(detached=True, http_options={"port": port})
    handle = serve.run(Stuck.bind(), name="stuck")
    assert httpx.get(f"http://127.0.0.1:{port}/Stuck", timeout=30).text == "ok"
    handle.hang.remote()  # in flight until the replica is killed
    wait_until(lambda: handle.is_hanging.remote().result(timeout_s=30), timeout=30, what="hang() to be running")
    running = _serve_actors()
    assert any(n.startswith("SERVE_PROXY::") for n in running), running
    assert any(n.startswith("SERVE_REPLICA::") for n in running), running
    assert "SERVE_CONTROLLER" in running, running
    return port, running


def _assert_nothing_left(port: int, running: dict[str, int | None]) -> None:
    wait_until(lambda: _serve_actors() == {}, timeout=30, what="every Serve actor to be dead")
    for name, pid in running.items():
        if pid is not None:
            wait_until(lambda pid=pid: not pid_alive(pid), timeout=30, what=f"{name}'s process (pid {pid}) to exit")
    assert _refused(f"http://127.0.0.1:{port}/-/healthz")
    assert _head(lambda h: h.kv_get(CHECKPOINT_KEY)) is None  # a later serve.start does not bring "stuck" back
    assert _head(lambda h: h.kv_keys(RECORDS_PREFIX)) == []  # nor any record of the checkpoint


def test_a_controller_that_cannot_shut_down_is_killed_with_its_proxies_and_replicas(monkeypatch, capfd) -> None:
    port, running = _start_stuck_serve()
    controller_pid = running["SERVE_CONTROLLER"]
    assert controller_pid is not None
    monkeypatch.setattr(serve_api, "SHUTDOWN_TIMEOUT_S", 5.0)
    os.kill(controller_pid, signal.SIGSTOP)  # a wedged controller: its shutdown never answers
    try:
        serve.shutdown()
    finally:
        if pid_alive(controller_pid):  # only if the driver did not kill it (the test then fails below)
            os.kill(controller_pid, signal.SIGCONT)
    assert "the controller's shutdown failed (GetTimeoutError" in capfd.readouterr().err
    _assert_nothing_left(port, running)
    # Serve starts again from scratch.
    serve.start(http_options={"port": port})
    try:
        assert serve.status()["applications"] == {}
    finally:
        serve.shutdown()


def test_the_controller_keeps_to_its_budget_and_the_driver_stops_the_replica_still_draining(monkeypatch,
                                                                                          capfd) -> None:
    port, running = _start_stuck_serve()
    monkeypatch.setattr(serve_api, "SHUTDOWN_BUDGET_S", 6.0)
    monkeypatch.setattr(serve_api, "SHUTDOWN_TIMEOUT_S", 120.0)
    began = time.monotonic()
    serve.shutdown()
    took = time.monotonic() - began
    # The replica would wait 300 s for hang(): the controller gives up at its budget (6 s),
    # not after each step's own timeout; the bound is loose for a loaded machine.
    assert took < 25.0, f"serve.shutdown() took {took:.1f}s with a 6 s budget"
    assert "did not delete every deployment in time" in capfd.readouterr().err
    _assert_nothing_left(port, running)
