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
