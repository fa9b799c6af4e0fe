"""Nodes run in the foreground (`zeroserve start --block`), as systemd and containers run
them: SIGTERM drains a request in flight and exits 0 within the grace period; a head
SIGKILLed and restarted with its `--state-dir` keeps named actors and Serve's
deployments, and agents that address it by host name rejoin; `--advertise-address`
distinct from `--node-ip`; the token kept off command lines.

Every test has its own ZEROSERVE_TMPDIR under the run's directory, so its processes are
`run_processes(tmpdir)` and `address="auto"` finds its cluster.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import psutil
import pytest
import yaml

from actors.system import new_token

from ..conftest import (
    ROOT,
    RUN_DIR,
    driver_env,
    free_port,
    read_json_line,
    read_until,
    run_processes,
    start_driver,
    wait_until,
)

pytestmark = pytest.mark.timeout(180)

ENTRY = [sys.executable, "-c", "import sys; from cluster.cli import main; sys.exit(main())"]


def _env(tmpdir: str, **extra: str) -> dict[str, str]:
    os.makedirs(tmpdir, exist_ok=True)
    env = driver_env(ZEROSERVE_TMPDIR=tmpdir, **extra)
    env.pop("ZEROSERVE_TOKEN", None)
    env.update(extra)
    return env


def zs(tmpdir: str, *args: str, check: bool = True, **env: str) -> subprocess.CompletedProcess:
    proc = subprocess.run([*ENTRY, *args], env=_env(tmpdir, **env), capture_output=True, text=True, timeout=100,
                          cwd=str(ROOT))
    if check and proc.returncode != 0:
        pytest.fail(f"zeroserve {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc


def block(tmpdir: str, *args: str, **env: str) -> subprocess.Popen:
    """`zeroserve start ... --block`, returned once its node is up (the process runs on)."""
    proc = subprocess.Popen([*ENTRY, "start", *args, "--block"], env=_env(tmpdir, **env), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, cwd=str(ROOT), start_new_session=True)
    read_until(proc, " up on ", timeout=60)
    assert proc.poll() is None, "a --block node returned"
    return proc


def _stop(*procs: subprocess.Popen) -> None:
    for p in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
    for p in procs:
        try:
            p.wait(timeout=40)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def _fetch(url: str, timeout: float = 30) -> tuple[int, Any]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode(errors="replace")


def _answers(url: str) -> bool:
    try:
        return _fetch(url, timeout=5)[0] == 200
    except OSError:
        return False


def _health(http_port: int, host: str = "127.0.0.1") -> int | None:
    """The status /-/healthz answers on that proxy; None if it takes no connection."""
    try:
        with urllib.request.urlopen(f"http://{host}:{http_port}/-/healthz", timeout=5) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code
    except OSError:
        return None


def _config(path: Path, http_port: int, location: str, host: str, num_cpus: float) -> str:
    path.write_text(yaml.safe_dump({
        "http_options": {"host": host, "port": http_port, "location": location},
        "applications": [{"name": "slow", "route_prefix": "/slow", "import_path": "tests.integration.foreground_app:app",
                          "deployments": [{"name": "Slow", "num_replicas": 1,
                                           "ray_actor_options": {"num_cpus": num_cpus}}]}],
    }))
    return str(path)


def _gone(tmpdir: str) -> None:
    wait_until(lambda: not run_processes(tmpdir), timeout=20, what=f"the processes of {tmpdir} to exit")


def test_flags_are_checked_before_anything_starts() -> None:
    tmpdir = os.path.join(RUN_DIR, "fg-flags")
    version = zs(tmpdir, "--version").stdout
    assert version.startswith("zeroserve ") and version.split()[1][0].isdigit()
    bind_all = zs(tmpdir, "start", "--head", "--node-ip", "0.0.0.0", check=False)
    assert bind_all.returncode == 1 and "give the address other nodes reach this one at with --advertise-address" \
        in bind_all.stderr
    agent_state = zs(tmpdir, "start", "--address", "127.0.0.1:1", "--state-dir", "/tmp/x", check=False)
    assert agent_state.returncode == 1 and "--state-dir is where the head keeps its state" in agent_state.stderr
    no_file = zs(tmpdir, "start", "--head", "--token-file", "/nonexistent/token", check=False)
    assert no_file.returncode == 1 and "--token-file /nonexistent/token: no such file" in no_file.stderr
    unhealthy = zs(tmpdir, "health", check=False)
    assert unhealthy.returncode == 1 and "no node was started on this machine" in unhealthy.stderr
    assert not run_processes(tmpdir)


def test_a_state_dir_others_can_write_is_refused(tmp_path: Path) -> None:
    """The head's state holds actors' pickled classes: a --state-dir another user can write
    is a way to run code as us, refused before anything starts (like the session dirs)."""
    tmpdir = os.path.join(RUN_DIR, "fg-state-dir")
    open_to_all = tmp_path / "open"
    open_to_all.mkdir()
    os.chmod(open_to_all, 0o777)
    refused = zs(tmpdir, "start", "--head", "--port", str(free_port()), "--state-dir", str(open_to_all), check=False)
    assert refused.returncode == 1 and "is writable by every user (mode 0777)" in refused.stderr, refused.stderr
    if os.getuid() == 0:  # a directory of another user
        theirs = tmp_path / "theirs"
        theirs.mkdir(mode=0o700)
        os.chown(theirs, 65534, 65534)
        refused = zs(tmpdir, "start", "--head", "--port", str(free_port()), "--state-dir", str(theirs), check=False)
        assert refused.returncode == 1 and "belongs to uid 65534" in refused.stderr, refused.stderr
    assert not run_processes(tmpdir)


def test_sigterm_finishes_the_request_in_flight_and_exits_0_within_the_grace_period(tmp_path: Path) -> None:
    tmpdir = os.path.join(RUN_DIR, "fg-drain")
    port, http_port = free_port(), free_port()
    node = block(tmpdir, "--head", "--port", str(port), "--num-cpus", "2", "--grace-period-s", "15")
    try:
        assert zs(tmpdir, "health").stdout.startswith("ok: node")
        for who, on in (("head", "on"), ("agent", "of")):  # without --log-files they log to stdout only
            no_file = zs(tmpdir, "logs", who, check=False)
            assert no_file.returncode == 1 and no_file.stderr.strip() == (
                f"zeroserve: error: the {who} {on} 127.0.0.1 runs in the foreground (`zeroserve start --block`) and "
                "logs to its stdout; start it with --log-files to keep files (`zeroserve logs` reads files)"), \
                no_file.stderr
        zs(tmpdir, "serve", "deploy", _config(tmp_path / "c.yaml", http_port, "HeadOnly", "127.0.0.1", 0.5))
        url = f"http://127.0.0.1:{http_port}/slow"
        wait_until(lambda: _answers(url), timeout=30, what="the app to answer")
        marker = tmp_path / "in-flight"
        answer: dict[str, Any] = {}
        client = threading.Thread(target=lambda: answer.update(r=_fetch(f"{url}?s=2&marker={marker}")))
        client.start()
        wait_until(marker.exists, timeout=15, what="the request to reach the replica")
        assert _health(http_port) == 200
        t0 = time.monotonic()
        node.send_signal(signal.SIGTERM)
        # While the request in flight finishes, the node's proxy tells load balancers (and a
        # Kubernetes readiness probe) to send no more: /-/healthz answers 503.
        health: list[int | None] = []
        wait_until(lambda: health.append(_health(http_port)) or health[-1] == 503 or node.poll() is not None,
                   timeout=15, what="the draining node's /-/healthz to answer")
        assert health[-1] == 503, f"/-/healthz while draining: {health}"
        assert "r" not in answer, "the request finished before the drain was seen"
        code = node.wait(timeout=30)
        took = time.monotonic() - t0
        client.join(timeout=30)
        out = read_until(node, "node stopped", timeout=5)
        assert answer.get("r", (None,))[0] == 200 and answer["r"][1]["done"] is True, (answer, out)
        assert code == 0, out
        assert took < 15, f"the node took {took:.1f}s to stop"
        assert "SIGTERM: stopping the node" in out and "is draining" in out
        _gone(tmpdir)
        assert not list((Path(tmpdir) / "nodes").glob("*.json")), "the node record outlived the node"
    finally:
        _stop(node)


def test_a_failed_node_exits_non_zero() -> None:
    tmpdir = os.path.join(RUN_DIR, "fg-fail")
    node = block(tmpdir, "--head", "--port", str(free_port()), "--num-cpus", "1")
    try:
        agent_pid = json.loads(next((Path(tmpdir) / "nodes").glob("*.json")).read_text())["pids"]["agent"]
        os.kill(agent_pid, signal.SIGKILL)
        assert node.wait(timeout=20) == 1
        out = read_until(node, "stopped unexpectedly", timeout=5)
        assert "killed by SIGKILL" in out
        _gone(tmpdir)
    finally:
        _stop(node)


KEEPER_DRIVER = """
import json, sys, actors
actors.init(address=ADDRESS, namespace="fg")

@actors.remote
class Keeper:
    def __init__(self):
        self.n = 0

    def incr(self):
        self.n += 1
        return self.n

k = Keeper.options(name="keeper", lifetime="detached").remote()
print(json.dumps({"n": actors.get(k.incr.remote())}), flush=True)
for line in sys.stdin:  # each line: call the actor by its name again
    print(json.dumps({"n": actors.get(actors.get_actor("keeper").incr.remote(), timeout=30)}), flush=True)
"""


def _keeper_driver(address: str, tmpdir: str, token: str) -> subprocess.Popen:
    """A driver that makes the detached named actor "keeper" (printing its first count) and
    then, for each line on its stdin, finds it by name and prints its next count."""
    return start_driver(f"ADDRESS = {address!r}\n{KEEPER_DRIVER}", ZEROSERVE_TMPDIR=tmpdir, ZEROSERVE_TOKEN=token)


def _keeper_again(driver: subprocess.Popen) -> int:
    driver.stdin.write("again\n")
    driver.stdin.flush()
    return read_json_line(driver)["n"]


def test_a_killed_head_restarted_with_its_state_dir_keeps_actors_and_deployments(tmp_path: Path) -> None:
    """The head node (no CPUs: work goes to the agent) is SIGKILLed whole, like a pod, and
    started again with the same --state-dir; the agent, which addresses it by host name,
    keeps its workers and rejoins; the named actor keeps its state, the app keeps serving."""
    tmpdir = os.path.join(RUN_DIR, "fg-state")
    port, http_port = free_port(), free_port()
    token = new_token()
    state = str(tmp_path / "state")
    head_args = ("--head", "--port", str(port), "--num-cpus", "0", "--state-dir", state)
    assert socket.gethostbyname("localhost") == "127.0.0.1"
    head = block(tmpdir, *head_args, ZEROSERVE_TOKEN=token)
    agent = block(tmpdir, "--address", f"localhost:{port}", "--node-ip", "127.0.0.2", "--num-cpus", "2",
                  ZEROSERVE_TOKEN=token)
    driver = None
    try:
        for p in run_processes(tmpdir):
            assert token not in " ".join(p.cmdline()), f"the token is on a command line: {p.cmdline()}"
        zs(tmpdir, "serve", "deploy", _config(tmp_path / "c.yaml", http_port, "EveryNode", "node", 1),
           ZEROSERVE_TOKEN=token)
        url = f"http://127.0.0.2:{http_port}/slow"
        wait_until(lambda: _answers(url), timeout=30, what="the app to answer on the agent's proxy")
        driver = _keeper_driver("auto", tmpdir, token)
        assert read_json_line(driver)["n"] == 1
        replica_pid = _fetch(url)[1]["pid"]

        os.killpg(head.pid, signal.SIGKILL)  # the whole head node at once, as a pod dies
        head.wait(timeout=10)
        assert _fetch(url)[1]["pid"] == replica_pid  # the agent's proxy serves on while the head is gone
        head = block(tmpdir, *head_args, ZEROSERVE_TOKEN=token)

        assert _keeper_again(driver) == 2  # same worker, same state, found by its name
        status = json.loads(zs(tmpdir, "status", "--json", ZEROSERVE_TOKEN=token).stdout)
        alive = sorted(n["ip"] for n in status["nodes"] if n["alive"])
        assert alive == ["127.0.0.1", "127.0.0.2"], status["nodes"]
        assert _fetch(url)[1]["pid"] == replica_pid

        def serve_running() -> bool:
            st = zs(tmpdir, "serve", "status", "--json", check=False, ZEROSERVE_TOKEN=token)
            return st.returncode == 0 and json.loads(st.stdout)["applications"].get("slow", {}).get("status") == "RUNNING"

        wait_until(serve_running, timeout=30, what="serve status to show the app running again")
    finally:
        if driver is not None:
            driver.kill()
            driver.wait()
        _stop(agent, head)
    _gone(tmpdir)


def test_a_head_restarted_on_a_new_address_is_rejoined_by_name(tmp_path: Path) -> None:
    """What a Kubernetes head pod's restart does: the head binds every interface and
    advertises its pod IP (127.0.0.1 here); it is SIGKILLed and comes back with the same
    --state-dir on a NEW address (127.0.0.4). The agent and a driver address it by host name
    (`localhost:PORT`, as pods use the head's Service name), so they reach the new head: the
    agent rejoins with its workers, the driver finds the named actor with its state, the
    deployment (its replica on the agent) answers through the new head node's proxy. (The
    proxy is HeadOnly: the head binds every interface, so an agent's proxy on the same port
    could not bind here.)"""
    tmpdir = os.path.join(RUN_DIR, "fg-new-ip")
    port, http_port = free_port(), free_port()
    token = new_token()
    state = str(tmp_path / "state")
    head_args = ("--head", "--port", str(port), "--node-ip", "0.0.0.0", "--num-cpus", "0", "--state-dir", state)
    assert socket.gethostbyname("localhost") == "127.0.0.1"
    head = block(tmpdir, *head_args, "--advertise-address", "127.0.0.1", ZEROSERVE_TOKEN=token)
    agent = block(tmpdir, "--address", f"localhost:{port}", "--node-ip", "127.0.0.2", "--num-cpus", "2",
                  ZEROSERVE_TOKEN=token)
    driver = None
    try:
        zs(tmpdir, "serve", "deploy", _config(tmp_path / "c.yaml", http_port, "HeadOnly", "node", 1),
           "--address", f"localhost:{port}", ZEROSERVE_TOKEN=token)
        url = f"http://127.0.0.1:{http_port}/slow"
        wait_until(lambda: _answers(url), timeout=30, what="the app to answer on the head's proxy")
        driver = _keeper_driver(f"localhost:{port}", tmpdir, token)
        assert read_json_line(driver)["n"] == 1
        replica_pid = _fetch(url)[1]["pid"]

        os.killpg(head.pid, signal.SIGKILL)  # the head pod dies...
        head.wait(timeout=10)
        head = block(tmpdir, *head_args, "--advertise-address", "127.0.0.4", ZEROSERVE_TOKEN=token)  # ...and moves
        out = read_until(head, "To stop:")
        assert "head restored from" in out and "Cluster address: 127.0.0.4:" in out, out

        def nodes_alive() -> list[str]:
            st = zs(tmpdir, "status", "--json", "--address", f"localhost:{port}", check=False, ZEROSERVE_TOKEN=token)
            return sorted(n["ip"] for n in json.loads(st.stdout)["nodes"] if n["alive"]) if st.returncode == 0 else []

        wait_until(lambda: nodes_alive() == ["127.0.0.2", "127.0.0.4"], timeout=30,
                   what="the agent to rejoin the head at its new address (and the old head node to be gone)")
        assert _keeper_again(driver) == 2  # the same worker, its state kept, found by its name
        again = subprocess.run([sys.executable, "-c", (
            "import actors; "
            f"actors.init(address='localhost:{port}', namespace='fg'); "
            "print(actors.get(actors.get_actor('keeper').incr.remote(), timeout=30))")],
            env=_env(tmpdir, ZEROSERVE_TOKEN=token), capture_output=True, text=True, timeout=60, cwd=str(ROOT))
        assert again.returncode == 0 and again.stdout.split()[-1] == "3", again.stderr  # a new driver, by name
        new_proxy = f"http://127.0.0.4:{http_port}/slow"
        wait_until(lambda: _answers(new_proxy), timeout=60, what="the new head node's proxy to serve the app")
        assert _fetch(new_proxy)[1]["pid"] == replica_pid  # the same replica, on the agent all along
    finally:
        if driver is not None:
            driver.kill()
            driver.wait()
        _stop(agent, head)
    _gone(tmpdir)


def test_advertise_address_distinct_from_node_ip(tmp_path: Path) -> None:
    """An agent binds every interface (0.0.0.0, as in a pod) and is reached at the address
    it advertises; the token comes from a file."""
    tmpdir = os.path.join(RUN_DIR, "fg-advertise")
    port = free_port()
    token_file = tmp_path / "token"
    token_file.write_text(new_token() + "\n")
    token_file.chmod(0o600)
    head = block(tmpdir, "--head", "--port", str(port), "--num-cpus", "0", "--token-file", str(token_file))
    agent = block(tmpdir, "--address", f"127.0.0.1:{port}", "--node-ip", "0.0.0.0", "--advertise-address",
                  "127.0.0.3", "--num-cpus", "1", "--token-file", str(token_file))
    driver = None
    try:
        status = json.loads(zs(tmpdir, "status", "--json", "--token-file", str(token_file)).stdout)
        assert sorted(n["ip"] for n in status["nodes"]) == ["127.0.0.1", "127.0.0.3"]
        assert zs(tmpdir, "health", "--node-ip", "127.0.0.3").stdout.startswith("ok: node")
        # Its metrics endpoint listens on every interface too, and is reported at the advertised address.
        url = next(n["metrics_url"] for n in status["nodes"] if n["ip"] == "127.0.0.3")
        assert url.startswith("http://127.0.0.3:") and url.endswith("/metrics"), url
        with urllib.request.urlopen(url, timeout=10) as r:
            assert b'component="agent"' in r.read()
        driver = start_driver("""
            import json, os, actors
            from actors.system import current_runtime
            actors.init(address="auto")

            @actors.remote(num_cpus=1)
            class Where:
                def where(self):
                    return {"address": current_runtime().address, "pid": os.getpid()}

            w = Where.remote()
            print(json.dumps(actors.get(w.where.remote())), flush=True)
            input()
        """, ZEROSERVE_TMPDIR=tmpdir, ZEROSERVE_TOKEN=token_file.read_text().strip())
        where = read_json_line(driver)
        address, pid = where["address"], where["pid"]
        assert address.startswith("tcp://127.0.0.3:")
        listening = [c.laddr for c in psutil.Process(pid).net_connections("tcp") if c.status == psutil.CONN_LISTEN]
        assert [(ip, port) for ip, port in listening] == [("0.0.0.0", int(address.rsplit(":", 1)[1]))]
    finally:
        if driver is not None:
            driver.kill()
            driver.wait()
        _stop(agent, head)
    _gone(tmpdir)


def test_block_logs_to_stdout_and_with_log_files_to_the_session_too(tmp_path: Path) -> None:
    """In the foreground the head's and agent's records go to stdout (for the supervisor's
    journal); with --log-files also to the session's rotated files; both in the cluster's
    log format (time, level, logger name, pid)."""
    tmpdir = os.path.join(RUN_DIR, "fg-log-files")
    head = block(tmpdir, "--head", "--port", str(free_port()), "--num-cpus", "0", "--log-files")
    try:
        record = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d+ INFO cluster\S* pid=\d+ ", re.M)
        out = read_until(head, "To stop:")
        assert record.search(out), out
        logs = next(Path(tmpdir).glob("session-*/logs"))
        head_log, agent_log = logs / "head.log", logs / "agent-127.0.0.1.log"
        wait_until(lambda: head_log.exists() and agent_log.exists(), timeout=10, what="the session's log files")
        assert record.search(head_log.read_text()) and "head listening at" in head_log.read_text()
        assert record.search(agent_log.read_text())
        shown = zs(tmpdir, "logs", "head")  # with --log-files, `zeroserve logs` reads them
        assert "head listening at" in shown.stdout and "foreground" not in shown.stderr, shown.stderr
    finally:
        _stop(head)
    assert head.returncode == 0
    _gone(tmpdir)
