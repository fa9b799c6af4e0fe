"""Two real hosts: network namespaces joined by a veth pair.

The head runs in one namespace, an agent in the other, each with its own session
directory; a driver in the first creates actors on both and they call each other. Nothing
can lean on shared loopback or a shared file. Needs root and iproute2 (CI has both).
"""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from ..conftest import RUN_DIR, driver_env

pytestmark = pytest.mark.timeout(180)


def _sh(*cmd: str) -> None:
    subprocess.run(cmd, check=True, capture_output=True, text=True)


@pytest.fixture(scope="module")
def hosts():
    if os.geteuid() != 0 or shutil.which("ip") is None:
        pytest.skip("needs root and iproute2 to build network namespaces")
    tag = f"{os.getpid() % 10000}"
    net = random.randint(10, 250)
    a, b = f"zsA{tag}", f"zsB{tag}"
    ip_a, ip_b = f"10.213.{net}.1", f"10.213.{net}.2"
    try:
        _sh("ip", "netns", "add", a)
    except subprocess.CalledProcessError as e:
        pytest.skip(f"cannot create network namespaces here: {e.stderr.strip()}")
    try:
        _sh("ip", "netns", "add", b)
        _sh("ip", "link", "add", f"va{tag}", "netns", a, "type", "veth", "peer", "name", f"vb{tag}", "netns", b)
        for ns, dev, ip in ((a, f"va{tag}", ip_a), (b, f"vb{tag}", ip_b)):
            _sh("ip", "-n", ns, "addr", "add", f"{ip}/24", "dev", dev)
            _sh("ip", "-n", ns, "link", "set", dev, "up")
            _sh("ip", "-n", ns, "link", "set", "lo", "up")
        yield {"a": a, "b": b, "ip_a": ip_a, "ip_b": ip_b}
    finally:
        for ns in (a, b):
            _zs_in(ns, "stop", check=False)
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)


def _tmpdir(ns: str) -> str:
    path = Path(RUN_DIR) / f"host-{ns}"
    path.mkdir(exist_ok=True)
    return str(path)


def _in(ns: str, args: list[str], **kw) -> subprocess.CompletedProcess:
    env = driver_env(ZEROSERVE_TMPDIR=_tmpdir(ns))
    return subprocess.run(["ip", "netns", "exec", ns, sys.executable, *args], env=env, capture_output=True,
                          text=True, timeout=120, **kw)


def _zs_in(ns: str, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    proc = _in(ns, ["-c", "import sys; from cluster.cli import main; sys.exit(main())", *args])
    if check and proc.returncode != 0:
        pytest.fail(f"zeroserve {' '.join(args)} in {ns} failed:\n{proc.stdout}\n{proc.stderr}")
    return proc


def test_actors_across_two_hosts(hosts) -> None:
    out = _zs_in(hosts["a"], "start", "--head", "--node-ip", hosts["ip_a"], "--port", "6380", "--num-cpus", "1",
                 "--resources", '{"near": 1}').stdout
    token = out.split("the token of this new cluster is ", 1)[1].split()[0]
    head = f"{hosts['ip_a']}:6380"
    _zs_in(hosts["b"], "start", "--address", head, "--token", token, "--node-ip", hosts["ip_b"],
           "--num-cpus", "1", "--resources", '{"far": 1}')
    wrong = _zs_in(hosts["b"], "start", "--address", head, "--token", "guess", "--node-ip", hosts["ip_b"], check=False)
    assert wrong.returncode == 1
    driver = textwrap.dedent(f"""
        import json, socket, actors

        actors.init(address={head!r}, token={token!r})

        @actors.remote
        class Host:
            def addresses(self):
                import psutil
                return sorted(a.address for nic in psutil.net_if_addrs().values() for a in nic
                              if a.family == socket.AF_INET)

            def ask(self, other):
                return actors.get(other.addresses.remote())

        near = Host.options(resources={{"near": 1}}).remote()
        far = Host.options(resources={{"far": 1}}).remote()
        print(json.dumps({{
            "near": actors.get(near.addresses.remote()),
            "far": actors.get(far.addresses.remote()),
            "far_via_near": actors.get(near.ask.remote(far)),
            "near_via_far": actors.get(far.ask.remote(near)),
            "nodes": sorted(n["ip"] for n in actors.nodes() if n["alive"]),
        }}), flush=True)
        actors.shutdown()
    """)
    proc = _in(hosts["a"], ["-c", driver])
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["nodes"] == sorted([hosts["ip_a"], hosts["ip_b"]])
    assert hosts["ip_a"] in result["near"] and hosts["ip_b"] not in result["near"]
    assert hosts["ip_b"] in result["far"] and hosts["ip_a"] not in result["far"]
    assert result["far_via_near"] == result["far"] and result["near_via_far"] == result["near"]
    assert "stopped" in _zs_in(hosts["b"], "stop").stdout
    assert "stopped" in _zs_in(hosts["a"], "stop").stdout
