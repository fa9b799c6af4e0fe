"""A cluster for the dashboard's tests: a head node on 127.0.0.2 (not 127.0.0.1, so its
dashboard asks for the token), started with `zeroserve start --head --dashboard-port`, and
a Serve application `dash` whose replicas log a line per request with its request id."""

from __future__ import annotations

import logging
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx

import actors
import serve

from ..conftest import free_port, wait_until, zeroserve

HEAD_IP = "127.0.0.2"


@serve.deployment(num_replicas=2)
class Echo:
    def __call__(self, request: Any) -> dict[str, str]:
        rid = serve.get_request_context().request_id
        logging.getLogger("echo").warning("echo line %s", rid)
        if request.query_params.get("fail"):
            raise ValueError("asked to fail")
        return {"replica": serve.get_replica_context().replica_id, "request_id": rid}


@dataclass
class DashCluster:
    address: str
    token: str
    url: str  # the dashboard's, ending in /
    http: str  # Serve's proxy

    def api(self, path: str, **params: Any) -> Any:
        resp = httpx.get(self.url + "api/" + path, params=params, headers={"Authorization": f"Bearer {self.token}"},
                         timeout=10)
        resp.raise_for_status()
        return resp.json()

    def deployment(self) -> dict[str, Any]:
        return self.api("deployment", app="dash", name="Echo")

    def running(self) -> list[dict[str, Any]]:
        return [r for r in self.deployment()["replica_list"] if r["state"] == "RUNNING"]

    def deploy(self, replicas: int) -> None:
        serve.run(Echo.options(num_replicas=replicas).bind(), name="dash", route_prefix="/echo")


def dash_cluster() -> Iterator[DashCluster]:
    port, mport, dport, hport = (free_port(HEAD_IP) for _ in range(4))
    token = secrets.token_hex(16)
    zeroserve("start", "--head", "--node-ip", HEAD_IP, "--port", str(port), "--num-cpus", "4", "--token", token,
              "--metrics-port", str(mport), "--dashboard-port", str(dport))
    try:
        address = f"{HEAD_IP}:{port}"
        actors.init(address=address, token=token)
        serve.start(http_options={"host": HEAD_IP, "port": hport})
        cluster = DashCluster(address, token, f"http://{HEAD_IP}:{dport}/", f"http://{HEAD_IP}:{hport}")
        cluster.deploy(2)
        wait_until(lambda: len(cluster.running()) == 2, 30, "two running replicas in the dashboard")
        yield cluster
    finally:
        try:
            serve.shutdown()
        finally:
            actors.shutdown()
            zeroserve("stop")
