"""zeroserve in real containers: the image `make image` builds, a head container and two
agent containers on the host network (each node on its own loopback address, 127.0.0.1/.2/.3,
so all traffic stays on loopback), an app deployed with `zeroserve serve deploy`, answers
from the proxy in every container (EveryNode), an agent container killed and its replicas
back on the other nodes, then `docker stop` (SIGTERM: the nodes drain and exit 0) and
nothing left behind.

Needs a Docker daemon (root: deploy/docker/start-dockerd.sh starts one; .ci/run does). It is
skipped, loudly, only when docker cannot run here; with ZEROSERVE_REQUIRE_DOCKER=1 (CI) it
fails instead. The image is built (or found up to date in Docker's cache) by
deploy/docker/build_image.py before the test.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
import warnings
from pathlib import Path
from typing import Any

import pytest
import yaml

from actors.system import new_token

from ..conftest import ROOT, free_port, run_processes, wait_until

pytestmark = [pytest.mark.timeout(900), pytest.mark.slow]  # a cold image build takes minutes

IMAGE = "zeroserve:examples"
DOCKER = shutil.which("docker")


def _why_docker_cannot_run() -> str | None:
    if DOCKER is None:
        return "there is no `docker` command"
    info = subprocess.run([DOCKER, "info", "--format", "{{.ServerVersion}}"], capture_output=True, text=True,
                          timeout=30)
    if info.returncode != 0:
        return f"the Docker daemon does not answer ({info.stderr.strip()[:200]})"
    return None


@pytest.fixture(scope="module")
def image() -> str:
    reason = _why_docker_cannot_run()
    if reason is not None:
        message = (f"THE CONTAINER TEST DID NOT RUN: {reason}. Start a daemon as root with "
                   "deploy/docker/start-dockerd.sh")
        if os.environ.get("ZEROSERVE_REQUIRE_DOCKER") == "1":
            pytest.fail(message + " (ZEROSERVE_REQUIRE_DOCKER=1: it must run here)")
        print(f"\n{'!' * 100}\n{message}\n{'!' * 100}", file=sys.__stderr__, flush=True)
        warnings.warn(message, stacklevel=1)
        pytest.skip(message)
    t0 = time.monotonic()
    build = subprocess.run([sys.executable, str(ROOT / "deploy" / "docker" / "build_image.py")], capture_output=True,
                           text=True, timeout=840)
    if build.returncode != 0:
        pytest.fail(f"the image build failed:\n{build.stdout[-3000:]}\n{build.stderr[-3000:]}")
    print(f"\nimage build (make image): {time.monotonic() - t0:.1f}s", file=sys.__stderr__, flush=True)
    return IMAGE


def docker(*args: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess:
    assert DOCKER is not None
    proc = subprocess.run([DOCKER, *args], capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        pytest.fail(f"docker {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc


def _state(name: str, field: str) -> str:
    return docker("inspect", "--format", "{{" + field + "}}", name, check=False).stdout.strip()


def _wait_healthy(name: str, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while _state(name, ".State.Health.Status") != "healthy":
        if time.monotonic() > deadline or _state(name, ".State.Running") != "true":
            logs = docker("logs", name, check=False)
            pytest.fail(f"{name} is not healthy after {timeout}s: {_state(name, 'json .State')}\n"
                        f"{logs.stdout[-3000:]}\n{logs.stderr[-3000:]}")
        time.sleep(0.5)  # polling docker's view of the health check


def _label_of(url: str) -> str | None:
    try:
        with urllib.request.urlopen(url, timeout=10) as r:
            return json.loads(r.read())["label"]
    except (OSError, ValueError, KeyError):
        return None


def _status(head: str) -> dict[str, Any]:
    return json.loads(docker("exec", head, "zeroserve", "status", "--json").stdout)


def _replica_ips(head: str, deployment: str) -> list[str]:
    st = _status(head)
    ip = {n["node_id"]: n["ip"] for n in st["nodes"]}
    return sorted(ip[a["node_id"]] for a in st["actors"]
                  if a["state"] == "ALIVE" and (a["name"] or "").startswith("SERVE_REPLICA::")
                  and f"#{deployment}#" in a["name"])  # SERVE_REPLICA::<app>#<deployment>#<tag>


def test_a_head_and_two_agents_in_containers_serve_and_heal(image: str, tmp_path: Path) -> None:
    run = uuid.uuid4().hex[:8]
    label = f"zeroserve-test={run}"
    inside_tmp = f"/tmp/zs-ct-{run}"  # on every node process's command line: the host finds them by it
    port, http_port = free_port(), free_port()
    head, agents = f"zs-ct-{run}-head", {ip: f"zs-ct-{run}-{ip.rsplit('.', 1)[1]}" for ip in ("127.0.0.2", "127.0.0.3")}
    config_dir = tmp_path / "config"
    config_dir.mkdir(mode=0o755)
    tmp_path.chmod(0o755)  # the containers' user (10001) reads the config through a bind mount
    config = yaml.safe_load((ROOT / "examples" / "serve_config.yaml").read_text())
    config["http_options"] = {"host": "node", "port": http_port, "location": "EveryNode"}
    (config_dir / "app.yaml").write_text(yaml.safe_dump(config))
    (config_dir / "app.yaml").chmod(0o644)
    common = ["run", "-d", "--network", "host", "--label", label, "--health-interval", "1s",
              "-e", f"ZEROSERVE_TOKEN={new_token()}", "-e", f"ZEROSERVE_TMPDIR={inside_tmp}"]
    t0 = time.monotonic()
    try:
        docker(*common, "--name", head, "-v", f"{config_dir}:/config:ro", image, "start", "--head", "--block",
               "--port", str(port), "--num-cpus", "0", "--state-dir", "/var/lib/zeroserve/state")
        for ip, name in agents.items():
            docker(*common, "--name", name, image, "start", "--block", "--address", f"127.0.0.1:{port}",
                   "--node-ip", ip, "--num-cpus", "2")
        for name in (head, *agents.values()):
            _wait_healthy(name)
        started = time.monotonic() - t0

        deploy = docker("exec", head, "zeroserve", "serve", "deploy", "/config/app.yaml", timeout=180)
        assert "sentiment" in deploy.stdout + deploy.stderr
        for ip in ("127.0.0.1", "127.0.0.2", "127.0.0.3"):
            url = f"http://{ip}:{http_port}/sentiment?text=I+love+it"
            assert wait_until(lambda url=url: _label_of(url), timeout=60, what=f"the proxy on {ip}") == "positive"
        placed = wait_until(lambda: (ips := _replica_ips(head, "Sentiment")) and len(ips) == 2 and ips, timeout=30,
                            what="two Sentiment replicas")
        assert set(placed) <= set(agents), placed  # the head offers no CPU
        doomed = placed[0]

        t_kill = time.monotonic()
        docker("kill", agents[doomed])  # SIGKILL, every process of the container at once

        def healed() -> bool:
            ips = _replica_ips(head, "Sentiment")
            return len(ips) == 2 and doomed not in ips

        wait_until(healed, timeout=60, interval=0.5, what=f"the replicas of {doomed} to come back on the other node")
        healed_in = time.monotonic() - t_kill
        for ip in ("127.0.0.1", *(a for a in agents if a != doomed)):
            assert wait_until(lambda ip=ip: _label_of(f"http://{ip}:{http_port}/sentiment?text=I+hate+it"),
                              timeout=30, what=f"answers from {ip}") == "negative"
        dead = [n for n in _status(head)["nodes"] if n["ip"] == doomed]
        assert dead and not any(n["alive"] for n in dead)

        t_stop = time.monotonic()
        survivors = [head, *(n for ip, n in agents.items() if ip != doomed)]
        docker("stop", "--time", "40", *survivors, timeout=120)
        stopped_in = time.monotonic() - t_stop
        for name in survivors:  # SIGTERM drained the node: exit 0
            assert _state(name, ".State.ExitCode") == "0", docker("logs", name, check=False).stdout[-3000:]
        assert "node stopped" in docker("logs", head).stdout
        print(f"\ncontainers: 3 nodes healthy in {started:.1f}s, replicas healed in {healed_in:.1f}s, "
              f"stopped in {stopped_in:.1f}s, test {time.monotonic() - t0:.1f}s", file=sys.__stderr__, flush=True)
    finally:
        left = docker("ps", "-aq", "--filter", f"label={label}", check=False).stdout.split()
        if left:
            docker("rm", "-f", *left, check=False)
    assert not docker("ps", "-aq", "--filter", f"label={label}").stdout.strip()
    wait_until(lambda: not run_processes(inside_tmp), timeout=20, what="the containers' processes to be gone")
