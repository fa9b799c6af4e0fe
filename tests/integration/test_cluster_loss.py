"""A driver whose embedded cluster dies notices within seconds, says so on stderr and
exits non-zero (the newcomer's run: `make run` went on printing and serving nothing);
`make run`'s example honours $ZEROSERVE_HTTP_PORT and refuses a taken port in one line."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time

import psutil
import pytest

from ..conftest import ROOT, driver_env, free_port, pid_alive, read_json_line, read_until, start_driver, wait_until

_DRIVER = """
    import json, time, actors
    from actors.system import local_cluster

    actors.init()

    @actors.remote
    class Worker:
        def pid(self):
            import os
            return os.getpid()

    w = Worker.remote()
    print(json.dumps(dict(local_cluster().pids(), worker=actors.get(w.pid.remote()))), flush=True)
    time.sleep(600)
    print("still here", flush=True)
"""


@pytest.mark.parametrize("victims", [("head", "agent"), ("head",), ("agent",)])
def test_a_driver_exits_when_its_embedded_cluster_dies(victims: tuple[str, ...]) -> None:
    driver = start_driver(_DRIVER)
    try:
        pids = read_json_line(driver)
        t0 = time.monotonic()
        for v in victims:
            os.kill(pids[v], signal.SIGKILL)
        code = driver.wait(timeout=15)
        took = time.monotonic() - t0
        err = driver.stderr.read() if driver.stderr else ""
        assert code != 0 and took < 5.0, (code, took, err)
        assert "the embedded cluster is gone" in err and "SIGKILL" in err, err
        wait_until(lambda: not any(pid_alive(p) for p in pids.values()), timeout=10,
                   what="the rest of the cluster and its worker to exit")
    finally:
        driver.kill()
        driver.wait()


def _example(port: int, tmpdir: str, *args: str) -> subprocess.Popen:
    env = driver_env(ZEROSERVE_HTTP_PORT=str(port), ZEROSERVE_TMPDIR=tmpdir)
    return subprocess.Popen([sys.executable, "examples/serve_app.py", *args], cwd=str(ROOT), env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_make_runs_example_honours_the_port_and_dies_with_its_cluster(tmp_path) -> None:
    from ..conftest import RUN_DIR

    tmpdir = os.path.join(RUN_DIR, "serve-app-cluster-loss")
    port = free_port()
    app = _example(port, tmpdir)
    try:
        read_until(app, f"Serving on http://127.0.0.1:{port}", timeout=120)
        cluster = [c for c in psutil.Process(app.pid).children() if "cluster" in " ".join(c.cmdline())]
        assert len(cluster) == 2, [c.cmdline() for c in cluster]
        for c in cluster:
            c.kill()
        assert app.wait(timeout=15) != 0
        err = app.stderr.read() if app.stderr else ""
        assert "the embedded cluster is gone" in err, err[-2000:]
    finally:
        app.kill()
        app.wait()


def test_make_runs_example_refuses_a_taken_port_in_one_line(tmp_path) -> None:
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        port = squatter.getsockname()[1]
        app = _example(port, str(tmp_path / "zs"), "--once")
        _, err = app.communicate(timeout=60)
    assert app.returncode == 1
    assert err.strip().count("\n") == 0 and f"127.0.0.1:{port}" in err and "ZEROSERVE_HTTP_PORT" in err, err
    assert "Traceback" not in err


_SLOW_DRAIN = """
    import json, os, signal, sys, time, actors
    from actors.system import local_cluster

    actors.init()

    @actors.remote
    class Stubborn:
        async def __actors_drain__(self, timeout_s):  # would hold its node's drain for the grace period
            import asyncio
            await asyncio.sleep(3600)

        def pid(self):
            return os.getpid()

    w = Stubborn.remote()
    worker = actors.get(w.pid.remote())
    cluster = local_cluster()
    agent = cluster.pids()["agent"]
    os.kill(agent, signal.SIGINT)  # Ctrl-C reached the agent: it drains (30 s grace)...
    log = cluster.session.logs / f"agent-{cluster.node_ip}.log"
    deadline = time.monotonic() + 30
    while "have 30s to finish their work" not in log.read_text():  # the drain began
        assert time.monotonic() < deadline, "the agent did not start draining"
        time.sleep(0.05)
    os.kill(cluster.pids()["head"], signal.SIGINT)  # ...and the head, which exits (nothing kills the worker)
    t0 = time.monotonic()
    actors.shutdown()  # ...and the driver stops: its lifeline closes, so the drain ends now
    print(json.dumps({"stop_s": time.monotonic() - t0, "worker": worker, "agent": agent}), flush=True)
"""


def test_an_embedded_agent_draining_after_ctrl_c_stops_at_once_with_its_driver() -> None:
    """Ctrl-C reaches an embedded cluster's head and agent too; the agent starts a graceful drain
    (`zeroserve start --block` semantics); its driver stopping (lifeline closed) ends that
    drain at once instead of after the grace period (the driver waited, then killed it)."""
    driver = start_driver(_SLOW_DRAIN)
    try:
        out = read_json_line(driver, timeout=90)
        assert driver.wait(timeout=30) == 0
        assert out["stop_s"] < 4.0, out  # LocalCluster.stop kills a child after 5 s
        wait_until(lambda: not pid_alive(out["worker"]) and not pid_alive(out["agent"]), timeout=10,
                   what="the agent and its worker to exit")
    finally:
        driver.kill()
        driver.wait()
