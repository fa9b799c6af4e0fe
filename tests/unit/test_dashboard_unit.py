"""The dashboard's logic without processes: the sampler's rates and percentiles, the token
gate, and every API endpoint over a fake `Source`."""

from __future__ import annotations

import asyncio
import json
import math
from typing import Any

import pytest

from actors.messages import ActorId, ActorInfo, ActorState, NodeId, NodeInfo
from cluster._dashboard._api import Api
from cluster._dashboard._http import COOKIE, Gate, Request, _parse, needs_token
from cluster._dashboard._sampler import Sampler, quantile
from cluster._log_access import LogNameError
from cluster._logs import LogFile, select_files
from cluster._status import status_of

# -- sampler ---------------------------------------------------------------------------------------

BOUNDS = (1.0, 5.0, 10.0, math.inf)


def _text(requests: dict[str, float], errors: dict[str, float] | None = None,
          buckets: dict[str, list[float]] | None = None, running: float = 2, pid_start: float = 1000.0) -> str:
    """Prometheus text as a node serves it: per replica counters and a latency histogram."""
    lines = []
    for rid, n in requests.items():
        lab = f'application="app",deployment="Dep",replica="{rid}",route="/",component="replica",pid="1"'
        lines.append(f"serve_deployment_request_counter_total{{{lab}}} {n}")
        lines.append(f"serve_deployment_error_counter_total{{{lab}}} {(errors or {}).get(rid, 0)}")
        cum = 0.0
        for le, c in zip(BOUNDS, (buckets or {}).get(rid, [0, 0, 0, 0]), strict=True):
            cum += c
            le_text = "+Inf" if math.isinf(le) else str(le)
            lines.append(f'serve_deployment_processing_latency_ms_bucket{{{lab},le="{le_text}"}} {cum}')
        lines.append(f'serve_replica_processing_queries{{application="app",deployment="Dep",replica="{rid}"}} 3')
    lines.append(f'serve_deployment_running_replicas{{application="app",deployment="Dep"}} {running}')
    lines.append(f'serve_deployment_target_replicas{{application="app",deployment="Dep"}} {running}')
    lines.append(f'process_start_time_seconds{{component="replica",pid="77"}} {pid_start}')
    lines.append("some_other_metric_total 5")
    return "\n".join(lines) + "\n"


def test_quantile_interpolates_within_a_bucket() -> None:
    assert quantile(0.5, {1.0: 0, 5.0: 10, 10.0: 0, math.inf: 0}) == pytest.approx(3.0)
    assert quantile(0.99, {1.0: 100, math.inf: 0}) == pytest.approx(0.99)
    assert quantile(0.5, {1.0: 0, math.inf: 4}) == 1.0  # the open bucket: its lower bound
    assert quantile(0.5, {}) is None and quantile(0.5, {1.0: 0}) is None


def test_rates_percentiles_and_in_flight_from_two_scrapes() -> None:
    s = Sampler()
    s.add(100.0, {"127.0.0.1": _text({"app#Dep#a": 10, "app#Dep#b": 0})})
    assert s.deployment("app", "Dep")["history"] == []  # one scrape: no interval yet
    s.add(102.0, {"127.0.0.1": _text({"app#Dep#a": 30, "app#Dep#b": 20}, errors={"app#Dep#b": 4},
                                     buckets={"app#Dep#a": [0, 20, 0, 0], "app#Dep#b": [0, 20, 0, 0]})})
    point = s.deployment("app", "Dep")["history"][-1]
    assert point["rps"] == pytest.approx(20.0) and point["errors_per_s"] == pytest.approx(2.0)
    assert point["p50_ms"] == pytest.approx(3.0) and point["replicas"] == 2
    a = s.replica("app", "Dep", "app#Dep#a")
    assert a["rps"] == pytest.approx(10.0) and a["in_flight"] == 3 and a["errors_per_s"] == 0
    assert s.started_at("127.0.0.1", 77) == 1000.0 and s.started_at("127.0.0.1", 78) is None


def test_a_restarted_counter_counts_from_zero_and_a_missing_series_is_not_counted_twice() -> None:
    s = Sampler()
    s.add(0.0, {"n": _text({"r": 100})})
    s.add(2.0, {"n": _text({"r": 4})})  # the process restarted: 4 new requests, not -96
    assert s.deployment("app", "Dep")["history"][-1]["rps"] == pytest.approx(2.0)
    s.add(4.0, {"n": _text({})})  # the replica did not answer this scrape
    s.add(6.0, {"n": _text({"r": 10})})  # back: 6 more since it was last seen, not 10
    assert s.deployment("app", "Dep")["history"][-1]["rps"] == pytest.approx(3.0)


def test_history_is_a_ring_of_fifteen_minutes() -> None:
    s = Sampler(history_s=10.0, min_interval_s=2.0)
    for i in range(30):
        s.add(float(i * 2), {"n": _text({"r": i})})
    hist = s.deployment("app", "Dep")["history"]
    assert len(hist) <= 6 and hist[-1]["t"] == 58.0 and hist[0]["t"] >= 48.0


# -- the token gate --------------------------------------------------------------------------------


def _req(path: str = "/", query: dict[str, str] | None = None, **headers: str) -> Request:
    return Request("GET", path, query or {}, {k.replace("_", "-"): v for k, v in headers.items()})


def test_only_127_0_0_1_and_ipv6_loopback_go_without_the_token() -> None:
    assert not needs_token("127.0.0.1") and not needs_token("::1")
    assert needs_token("127.0.0.2") and needs_token("10.0.0.5") and needs_token("0.0.0.0")


def test_gate_takes_a_bearer_header_a_token_header_or_the_cookie() -> None:
    gate = Gate("sekrit", required=True)
    assert gate.check(_req("/api/status", authorization="Bearer sekrit")) is None
    assert gate.check(_req("/api/status", x_zeroserve_token="sekrit")) is None
    assert gate.check(_req("/api/status", cookie=f"a=b; {COOKIE}=sekrit")) is None
    for bad in (_req("/api/status"), _req("/api/status", authorization="Bearer wrong"),
                _req("/api/status", query={"token": "sekrit"}), _req("/", cookie=f"{COOKIE}=nope")):
        resp = gate.check(bad)
        assert resp is not None and resp.status == 401 and b"sekrit" not in resp.body
    assert Gate("sekrit", required=False).check(_req("/api/status")) is None


def test_gate_logs_in_from_the_query_and_drops_the_token_from_the_url() -> None:
    resp = Gate("sekrit", required=True).check(_req("/", {"token": "sekrit", "x": "1"}))
    assert resp is not None and resp.status == 303
    headers = dict(resp.headers)
    assert headers["Location"] == "/?x=1" and f"{COOKIE}=sekrit" in headers["Set-Cookie"]
    assert "HttpOnly" in headers["Set-Cookie"]


def test_request_head_parsing() -> None:
    req = _parse(b"GET /api/logs/tail?node=127.0.0.1&file=a.log&filter=p%20q HTTP/1.1\r\nHost: x\r\n"
                 b"Cookie: zeroserve_token=t\r\n\r\n")
    assert req is not None and req.path == "/api/logs/tail" and req.query["filter"] == "p q"
    assert req.cookies == {"zeroserve_token": "t"}
    assert _parse(b"garbage\r\n\r\n") is None


# -- the API over a fake source ---------------------------------------------------------------------

def _node_id(h: str) -> NodeId:
    return NodeId(h)


def _actor_id(h: str) -> ActorId:
    return ActorId(h)


class FakeSource:
    head_address = "tcp://127.0.0.2:6380"
    dashboard_url = "http://127.0.0.2:8265/"

    def __init__(self) -> None:
        n1 = _node_id("aa" * 6)
        self._nodes = [NodeInfo(n1, "127.0.0.2", "tcp://127.0.0.2:1", True, True, {"CPU": 4.0, "GPU": 1.0},
                                {"CPU": 3.0, "GPU": 1.0}, "vm", "http://127.0.0.2:8080/metrics")]
        self._actors = [
            ActorInfo(_actor_id("01" * 8), "ReplicaActor", ActorState.ALIVE, node_id=n1, pid=77,
                      name="SERVE_REPLICA::app#Dep#a", namespace="serve"),
            ActorInfo(_actor_id("02" * 8), "ReplicaActor", ActorState.DEAD, node_id=n1, pid=78,
                      name="SERVE_REPLICA::app#Dep#old", namespace="serve", death_cause="killed"),
            ActorInfo(_actor_id("03" * 8), "ProxyActor", ActorState.ALIVE, node_id=n1, pid=79,
                      name="SERVE_PROXY::aaaaaaaaaaaa::1", namespace="serve"),
        ]
        self.summary = {"app#Dep": {"name": "Dep", "app": "app", "status": "HEALTHY", "replicas": {"RUNNING": 1},
                                    "target": 1, "route_prefix": "/", "message": "", "version": "v1",
                                    "replica_states": {"app#Dep#a": "RUNNING"}, "autoscaling": None}}
        self.calls: list[tuple[Any, ...]] = []

    def nodes(self) -> list[NodeInfo]:
        return self._nodes

    def actors(self) -> list[ActorInfo]:
        return self._actors

    def kv_get(self, key: str) -> bytes | None:
        return json.dumps(self.summary).encode() if key == "serve/status.json" else None

    async def call_agent(self, address: str, method: str, *args: Any, timeout: float) -> Any:
        self.calls.append((address, method, *args))
        if method == "list_logs":
            return {"files": [{"name": "replica_app_Dep_a.log", "size": 10, "mtime": 1.0},
                              {"name": "head.log", "size": 5, "mtime": 1.0}]}
        if args and args[0] == "nope.log":
            raise LogNameError("there is no log file 'nope.log' on this node")
        if method == "tail_log":
            return {"data": b"one p1\ntwo p2\nthree p1\n", "offset": 22, "inode": 9}
        return {"data": b"four\n", "offset": 27, "inode": 9}


def _get(api: Api, path: str, **query: str) -> tuple[int, Any]:
    resp = asyncio.run(api.handle(Request("GET", path, query, {})))
    return resp.status, (json.loads(resp.body) if resp.content_type == "application/json" else resp.body)


@pytest.fixture
def api() -> Api:
    return Api(FakeSource(), Sampler(), clock=lambda: 1100.0)


def test_status_is_what_zeroserve_status_json_prints(api: Api) -> None:
    src = api.source
    status, body = _get(api, "/api/status")
    expected = status_of(src.head_address, src.nodes(), src.actors(), src.kv_get("serve/status.json"),
                         src.dashboard_url)
    assert status == 200 and body == json.loads(json.dumps(expected))
    assert body["dashboard_url"] == "http://127.0.0.2:8265/"


def test_cluster_view_has_resources_used_of_total_and_actors_by_state(api: Api) -> None:
    status, body = _get(api, "/api/cluster")
    assert status == 200
    node = body["nodes"][0]
    assert node["resources"]["CPU"] == {"used": 1.0, "total": 4.0} and node["resources"]["GPU"]["used"] == 0
    assert node["metrics_url"] == "http://127.0.0.2:8080/metrics" and node["actors"] == 2
    assert body["actors_by_state"] == {"ALIVE": 2, "DEAD": 1}


def test_serve_view_groups_deployments_by_application_with_proxies(api: Api) -> None:
    status, body = _get(api, "/api/serve")
    assert status == 200
    (app,) = body["applications"]
    assert app["name"] == "app" and app["status"] == "RUNNING" and app["route_prefix"] == "/"
    assert app["deployments"][0]["version"] == "v1" and app["deployments"][0]["replicas"] == {"RUNNING": 1}
    assert body["proxies"] == [{"node_id": "aa" * 6, "node_ip": "127.0.0.2", "state": "ALIVE", "pid": 79,
                                "actor_id": "03" * 8}]


def test_deployment_view_lists_live_and_recently_dead_replicas(api: Api) -> None:
    api.sampler.add(1000.0, {"127.0.0.2": _text({"app#Dep#a": 0}, pid_start=1000.0)})
    api.sampler.add(1002.0, {"127.0.0.2": _text({"app#Dep#a": 8})})
    status, body = _get(api, "/api/deployment", app="app", name="Dep")
    assert status == 200
    live, dead = body["replica_list"]
    assert live["replica_id"] == "app#Dep#a" and live["state"] == "RUNNING" and live["pid"] == 77
    assert live["node_ip"] == "127.0.0.2" and live["rps"] == pytest.approx(4.0) and live["uptime_s"] == 100.0
    assert dead["state"] == "DEAD" and dead["death_cause"] == "killed"
    assert len(body["history"]) == 1 and body["rps"] == pytest.approx(4.0)


def test_bad_or_unknown_parameters_are_400_and_404(api: Api) -> None:
    assert _get(api, "/api/deployment", app="app")[0] == 400
    status, body = _get(api, "/api/deployment", app="app", name="Nope")
    assert status == 404 and "Nope" in body["error"]
    assert _get(api, "/api/nothing")[0] == 404
    assert _get(api, "/api/logs/read", node="127.0.0.2", file="a.log", offset="x")[0] == 400
    assert _get(api, "/api/logs/tail", node="127.0.0.2", file="nope.log")[0] == 400
    assert _get(api, "/api/logs/tail", node="10.9.9.9", file="a.log")[0] == 404


def test_logs_list_select_tail_filter_and_read(api: Api) -> None:
    status, body = _get(api, "/api/logs")
    assert status == 200
    assert [f["name"] for f in body["files"]] == ["head.log", "replica_app_Dep_a.log"]
    assert [f["name"] for f in _get(api, "/api/logs", target="Dep")[1]["files"]] == ["replica_app_Dep_a.log"]
    assert [f["name"] for f in _get(api, "/api/logs", target="app#Dep#a")[1]["files"]] == ["replica_app_Dep_a.log"]
    tail = _get(api, "/api/logs/tail", node="127.0.0.2", file="head.log", filter="p1")[1]
    assert tail["text"] == "one p1\nthree p1\n" and tail["offset"] == 22
    read = _get(api, "/api/logs/read", node="127.0.0.2", file="head.log", offset="22", inode="9")[1]
    assert read["text"] == "four\n" and read["offset"] == 27
    assert ("tcp://127.0.0.2:1", "follow_log", "head.log", 22, 9, 0.0) in api.source.calls


def test_the_page_and_its_files_are_served(api: Api) -> None:
    for path, kind in (("/", b"<!doctype html>"), ("/app.js", b"use strict"), ("/app.css", b"zeroserve")):
        status, body = _get(api, path)
        assert status == 200 and kind in body


def test_log_targets_with_app_scoped_summary_keys() -> None:
    files = [LogFile("127.0.0.1", "tcp://a", n, 1, 0.0) for n in
             ("replica_app1_Model_aa11.log", "replica_app1_Pre_bb22.log", "replica_app2_Model_cc33.log")]
    summary = {"app1#Model": {"name": "Model", "app": "app1"}, "app1#Pre": {"name": "Pre", "app": "app1"}}
    assert [f.name for f in select_files("Model", files, summary, set())] == ["replica_app1_Model_aa11.log"]
    assert [f.name for f in select_files("app1#Pre#bb22", files, summary, set())] == ["replica_app1_Pre_bb22.log"]
    assert [f.name for f in select_files("Pre#bb22", files, summary, set())] == ["replica_app1_Pre_bb22.log"]


def test_dashboard_port_flags_are_checked_before_anything_starts(capsys: pytest.CaptureFixture[str]) -> None:
    from cluster._cli import main

    assert main(["start", "--address", "127.0.0.1:1", "--dashboard-port", "9000"]) == 1
    assert "--dashboard-port is for the head" in capsys.readouterr().err
    assert main(["start", "--head", "--dashboard-port", "70000"]) == 1
    assert "--dashboard-port must be a port number" in capsys.readouterr().err
