"""Failure semantics with real processes: dead workers, restarts, broken constructors,
and drivers that die in every way without leaving a process behind."""

from __future__ import annotations

import asyncio
import os
import signal
import time

import pytest

import actors

from ..conftest import pid_alive, read_json_line, start_driver, wait_until


@actors.remote(max_restarts=1)
class Victim:
    def __init__(self) -> None:
        self.calls = 0
        self.forever = asyncio.Event()

    async def pid(self) -> int:
        return os.getpid()

    async def count(self) -> int:
        self.calls += 1
        return self.calls

    async def hang(self) -> None:
        await self.forever.wait()


@pytest.mark.usefixtures("cluster")
def test_kill9_fails_pending_and_later_calls_within_a_second() -> None:
    v = Victim.options(max_restarts=0).remote()
    pid = actors.get(v.pid.remote())
    pending = [v.hang.remote() for _ in range(5)]
    ready, _ = actors.wait(pending, num_returns=1, timeout=0.2)
    assert ready == []  # they really are pending on the live worker
    t0 = time.monotonic()
    os.kill(pid, signal.SIGKILL)
    for ref in pending:
        with pytest.raises(actors.ActorDiedError):
            actors.get(ref, timeout=5)
    assert time.monotonic() - t0 < 1.0, "pending calls took over 1 s to fail"
    t1 = time.monotonic()
    with pytest.raises(actors.ActorDiedError, match="SIGKILL"):
        actors.get(v.count.remote(), timeout=5)
    assert time.monotonic() - t1 < 1.0


@pytest.mark.usefixtures("cluster")
def test_max_restarts_restarts_with_fresh_state_behind_the_same_handle() -> None:
    v = Victim.remote()
    assert actors.get([v.count.remote() for _ in range(3)]) == [1, 2, 3]
    first_pid = actors.get(v.pid.remote())
    os.kill(first_pid, signal.SIGKILL)

    def restarted() -> int | None:
        try:
            return actors.get(v.count.remote(), timeout=10)
        except actors.ActorDiedError:
            return None  # a call that raced the death report; the next one queues

    assert wait_until(restarted, timeout=20, what="the restarted actor to answer") == 1
    second_pid = actors.get(v.pid.remote())
    assert second_pid != first_pid
    os.kill(second_pid, signal.SIGKILL)  # no restarts left
    wait_until(lambda: _died(v), timeout=10, what="the actor to be dead for good")


def _died(handle: actors.ActorHandle) -> bool:
    try:
        actors.get(handle.count.remote(), timeout=10)
    except actors.ActorDiedError as e:
        return "dead" in str(e)
    return False


@pytest.mark.usefixtures("cluster")
def test_constructor_error_marks_the_actor_dead_with_its_traceback() -> None:
    @actors.remote(max_restarts=3)
    class Broken:
        def __init__(self) -> None:
            raise RuntimeError("cannot load the model weights")

        def ping(self) -> int:
            return 1

    b = Broken.remote()
    with pytest.raises(actors.ActorDiedError, match="cannot load the model weights") as info:
        actors.get(b.ping.remote(), timeout=20)
    assert "constructor of Broken raised" in str(info.value)


_DRIVER = """
    import json, os, sys, time, actors
    from actors.system import local_cluster

    actors.init()

    @actors.remote
    class Sleeper:
        def pid(self):
            return os.getpid()

    workers = [Sleeper.remote() for _ in range(2)]
    pids = dict(local_cluster().pids(), workers=actors.get([w.pid.remote() for w in workers]))
    print(json.dumps(pids), flush=True)
    how = sys.stdin.readline().strip()
    if how == "exit":
        sys.exit(0)
    if how == "raise":
        raise SystemExit("bye")
    time.sleep(600)
"""


@pytest.mark.parametrize("how", ["SIGKILL", "SIGTERM", "SIGINT", "exit", "raise"])
def test_no_process_outlives_its_driver(how: str) -> None:
    driver = start_driver(_DRIVER)
    try:
        pids = read_json_line(driver)
        everyone = [pids["head"], pids["agent"], *pids["workers"]]
        assert all(pid_alive(p) for p in everyone)
        if how.startswith("SIG"):
            driver.send_signal(getattr(signal, how))
        else:
            assert driver.stdin is not None
            driver.stdin.write(how + "\n")
            driver.stdin.flush()
        driver.wait(timeout=30)
        wait_until(lambda: not any(pid_alive(p) for p in everyone), timeout=10,
                   what=f"head, agent and workers to exit after the driver's {how}")
    finally:
        driver.kill()
        driver.wait()


def test_a_worker_whose_agent_died_before_answering_exits(tmp_path) -> None:
    """A worker first asks its agent what to host. If the agent is gone before it answers
    (its lifeline closes), the worker exits: it does not wait on a call nobody will answer
    (a connection that never came up does not fail by itself)."""
    import subprocess
    import sys

    import psutil

    from actors.system import write_token

    from ..conftest import free_port

    token = tmp_path / "token"
    write_token(token, "a-token-for-this-test-only")
    lifeline_r, lifeline_w = os.pipe()
    nobody = f"tcp://127.0.0.1:{free_port()}"  # an agent that never answers
    worker = subprocess.Popen([sys.executable, "-m", "actors", "worker", "--agent", nobody, "--node-ip", "127.0.0.1",
                               "--worker-id", "orphan-1", "--token-file", str(token), "--parent-fd", str(lifeline_r)],
                              pass_fds=(lifeline_r,), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    os.close(lifeline_r)
    try:
        # up and waiting for the agent: its runtime's socket listens
        wait_until(lambda: any(c.status == psutil.CONN_LISTEN for c in psutil.Process(worker.pid).net_connections()),
                   timeout=30, what="the worker's runtime to listen")
        assert worker.poll() is None
        os.close(lifeline_w)  # the agent dies
        lifeline_w = -1
        assert worker.wait(timeout=10) == 0
    finally:
        if lifeline_w >= 0:
            os.close(lifeline_w)
        if worker.poll() is None:
            worker.kill()
        worker.wait()
        assert worker.stderr is not None
        worker.stderr.close()
