"""The chaos suite's cluster: two `zeroserve start` nodes (127.0.0.21 the head, 127.0.0.22
a second agent), Serve with a proxy on each (EveryNode, `host="node"`), and what the drills
check about it.

`ChaosCluster.not_whole()` says why the service is not whole yet ("" once it is): the
deployment HEALTHY with all its replicas RUNNING at the expected version and alive, a
HEALTHY proxy answering the route on every live node and none elsewhere, and the census
of processes exactly right: under each live agent one fork server and one proxy; one head
and one controller in the cluster; one replica process per replica of the status, and no
other worker. `strays(before)` lists processes of the cluster seen before a drill that
still run outside that census (orphans). The drill table is printed at the end of the run.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest

import actors
import serve

from ..conftest import RUN_DIR, free_port, still_running, zeroserve
from ._traffic import ROWS, table

HEAD_IP, NODE_IP = "127.0.0.21", "127.0.0.22"
IPS = (HEAD_IP, NODE_IP)
APP, ROUTE = "chaos", "/drill"


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if ROWS:
        terminalreporter.write_sep("=", "drill table (tests/chaos)")
        terminalreporter.write_line(table(ROWS))


def _role(cmdline: list[str]) -> str:
    line = " ".join(cmdline)
    if "-m cluster head" in line:
        return "head"
    if "-m actors zygote" in line:
        return "zygote"
    for title, role in (("zeroserve::ServeController", "controller"), ("zeroserve::HTTPProxyActor", "proxy"),
                        ("zeroserve::ReplicaActor", "replica")):
        if line.startswith(title):
            return role
    return "other"


class ChaosCluster:
    def __init__(self) -> None:
        self.port = free_port(HEAD_IP)
        self.address = f"{HEAD_IP}:{self.port}"
        self.http_port = int(os.environ["ZEROSERVE_HTTP_PORT"])
        self.urls = {ip: f"http://{ip}:{self.http_port}" for ip in IPS}
        self.alive_ips: tuple[str, ...] = IPS
        self.replicas = 2
        self.version: str | None = None
        self.agents: dict[str, int] = {}

    def start(self) -> None:
        out = zeroserve("start", "--head", "--node-ip", HEAD_IP, "--port", str(self.port), "--num-cpus", "4",
                        "--metrics-port", str(free_port(HEAD_IP))).stdout
        self.token = out.split("the token of this new cluster is ", 1)[1].split()[0]
        zeroserve("start", "--address", self.address, "--node-ip", NODE_IP, "--num-cpus", "4",
                  "--metrics-port", str(free_port(NODE_IP)))
        self.agents = {ip: self.agent_pid(ip) for ip in IPS}
        actors.init(address=self.address, token=self.token)
        serve.start(http_options={"location": "EveryNode", "host": "node", "port": self.http_port})

    def stop(self) -> None:
        try:
            serve.shutdown()
        finally:
            actors.shutdown()
            zeroserve("stop", "--node-ip", NODE_IP, check=False)
            zeroserve("stop", "--node-ip", HEAD_IP, check=False)

    @staticmethod
    def agent_pid(ip: str) -> int:
        return json.loads((Path(RUN_DIR) / "nodes" / f"{ip}.json").read_text())["pids"]["agent"]

    # -- processes ------------------------------------------------------------------------
    def census(self) -> dict[str, list[tuple[str, int]]]:
        """{role: [(node IP, pid)]} of the live agents' descendants (and the agents)."""
        found: dict[str, list[tuple[str, int]]] = {}
        for ip in self.alive_ips:
            try:
                agent = psutil.Process(self.agents[ip])
                found.setdefault("agent", []).append((ip, agent.pid))
                for p in agent.children(recursive=True):
                    if p.status() != psutil.STATUS_ZOMBIE:
                        found.setdefault(_role(p.cmdline()), []).append((ip, p.pid))
            except psutil.NoSuchProcess:
                continue
        return found

    def pids(self, role: str, ip: str | None = None) -> list[int]:
        return [pid for where, pid in self.census().get(role, []) if ip is None or where == ip]

    def all_pids(self) -> set[int]:
        return {pid for procs in self.census().values() for _, pid in procs}

    def strays(self, before: set[int]) -> list[str]:
        """Processes of `before` still running but no longer in the cluster's census."""
        return still_running(before - self.all_pids())

    # -- the service ----------------------------------------------------------------------
    def deployment(self) -> dict[str, Any]:
        return serve.status()["applications"][APP]["deployments"]["Drill"]

    def not_whole(self) -> str:
        """Why the service is not whole ("" when it is)."""
        try:
            status = serve.status()
            dep = status["applications"][APP]["deployments"]["Drill"]
        except Exception as e:  # the controller or head restarting
            return f"no status: {type(e).__name__}: {e}"
        if dep["status"] != "HEALTHY" or dep["replicas"] != {"RUNNING": self.replicas}:
            return f"deployment {dep['status']} {dep['replicas']}"
        # (replicas adopted by a restarted controller are listed without their pid)
        replica_pids = sorted(d["pid"] for d in dep["replica_details"] if "pid" in d)
        if self.version is not None and any(d["version"] != self.version for d in dep["replica_details"]):
            return f"versions {[d['version'] for d in dep['replica_details']]}"
        proxies = {p["node_ip"]: p["state"] for p in status["proxies"].values()}
        if proxies != dict.fromkeys(self.alive_ips, "HEALTHY"):
            return f"proxies {proxies}"
        census = self.census()
        count = {role: len(procs) for role, procs in census.items()}
        expected = {"agent": len(self.alive_ips), "zygote": len(self.alive_ips), "proxy": len(self.alive_ips),
                    "head": 1, "controller": 1, "replica": self.replicas}
        if count != expected:
            return f"processes {count}, expected {expected}: {census}"
        if not set(replica_pids) <= {pid for _, pid in census["replica"]}:
            return f"replica processes {census['replica']} but the status has {replica_pids}"
        for ip in self.alive_ips:
            if len([1 for where, _ in census["proxy"] if where == ip]) != 1:
                return f"proxies per node {census['proxy']}"
            try:
                r = httpx.get(self.urls[ip] + ROUTE, timeout=3)
            except httpx.HTTPError as e:
                return f"{ip}: {type(e).__name__}"
            if r.status_code != 200 or (self.version is not None and not r.text.startswith(self.version)):
                return f"{ip}: {r.status_code} {r.text[:100]}"
        return ""


@pytest.fixture(scope="module")
def chaos_cluster():
    c = ChaosCluster()
    c.start()
    try:
        yield c
    finally:
        c.stop()
