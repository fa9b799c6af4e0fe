"""The dashboard's JSON API on a real cluster: the token on a non-loopback bind (401 for
every endpoint without it), `/api/status` = `zeroserve status --json`, the cluster, Serve
and deployment views with rates after real HTTP load, and logs read through the agents.
Also the embedded cluster's `$ZEROSERVE_DASHBOARD_PORT`."""

from __future__ import annotations

import json
from collections.abc import Iterator

import httpx
import pytest
import yaml

import serve

from ..conftest import free_port, read_json_line, start_driver, wait_until, zeroserve
from .dashboard_cluster import HEAD_IP, DashCluster, dash_cluster

ENDPOINTS = [("status", {}), ("cluster", {}), ("serve", {}), ("deployment", {"app": "dash", "name": "Echo"}),
             ("logs", {}), ("logs/tail", {"node": HEAD_IP, "file": "head.log"}),
             ("logs/read", {"node": HEAD_IP, "file": "head.log", "offset": "0"})]


@pytest.fixture(scope="module")
def dash() -> Iterator[DashCluster]:
    yield from dash_cluster()


def test_every_endpoint_and_the_page_answer_401_without_the_token(dash: DashCluster) -> None:
    for path, params in [("", {}), ("app.js", {}), *((f"api/{p}", q) for p, q in ENDPOINTS)]:
        for headers in ({}, {"Authorization": "Bearer not-the-token"}, {"Cookie": "zeroserve_token=nope"}):
            resp = httpx.get(dash.url + path, params=params, headers=headers, timeout=10)
            assert resp.status_code == 401, (path, headers, resp.text)
            assert HEAD_IP not in resp.text and "Echo" not in resp.text  # no data
        ok = httpx.get(dash.url + path, params=params, headers={"Authorization": f"Bearer {dash.token}"}, timeout=10)
        assert ok.status_code == 200, (path, ok.text)


def test_a_query_token_logs_in_with_a_cookie(dash: DashCluster) -> None:
    resp = httpx.get(dash.url, params={"token": dash.token}, timeout=10)
    assert resp.status_code == 303 and resp.headers["location"] == "/"
    cookie = resp.headers["set-cookie"]
    assert "HttpOnly" in cookie
    assert httpx.get(dash.url + "api/status", headers={"Cookie": cookie.split(";")[0]}, timeout=10).status_code == 200
    assert httpx.get(dash.url, params={"token": "wrong"}, timeout=10).status_code == 401


def test_api_status_agrees_with_zeroserve_status(dash: DashCluster) -> None:
    cli = json.loads(zeroserve("status", "--json", "--address", dash.address, "--token", dash.token).stdout)
    api = dash.api("status")
    assert api["dashboard_url"] == cli["dashboard_url"] == dash.url
    assert api["head"] == cli["head"] and api["nodes"] == cli["nodes"] and api["serve"] == cli["serve"]
    assert {a["actor_id"] for a in api["actors"]} == {a["actor_id"] for a in cli["actors"]}
    table = zeroserve("status", "--address", dash.address, "--token", dash.token).stdout
    assert f"Dashboard: {dash.url}" in table


def test_cluster_and_serve_views(dash: DashCluster) -> None:
    cluster = dash.api("cluster")
    (node,) = cluster["nodes"]
    assert node["ip"] == HEAD_IP and node["alive"] and node["is_head"] and node["resources"]["CPU"]["total"] == 4
    assert node["metrics_url"].startswith(f"http://{HEAD_IP}:") and cluster["actors_by_state"]["ALIVE"] >= 4
    served = dash.api("serve")
    (app,) = [a for a in served["applications"] if a["name"] == "dash"]
    (dep,) = app["deployments"]
    assert app["status"] == "RUNNING" and app["route_prefix"] == "/echo"
    assert dep["name"] == "Echo" and dep["status"] == "HEALTHY" and dep["replicas"] == {"RUNNING": 2}
    assert dep["version"] and dep["target"] == 2
    assert [(p["node_ip"], p["state"]) for p in served["proxies"]] == [(HEAD_IP, "ALIVE")]


def test_deployment_view_shows_replicas_rates_latency_and_errors_under_load(dash: DashCluster) -> None:
    replicas = dash.running()
    assert len(replicas) == 2 and all(r["node_ip"] == HEAD_IP and r["pid"] for r in replicas)
    with httpx.Client(timeout=10) as client:
        def load() -> dict:
            for _ in range(20):
                assert client.get(dash.http + "/echo").status_code == 200
            assert client.get(dash.http + "/echo", params={"fail": "1"}).status_code == 500
            d = dash.deployment()
            return d if d["rps"] and d["errors_per_s"] and d["p50_ms"] is not None else {}

        d = wait_until(load, 30, "request and error rates in the deployment view", interval=0.2)
    assert d["p99_ms"] >= d["p50_ms"] > 0
    points = [p for p in d["history"] if p["rps"]]
    assert points and all(p["replicas"] == 2 for p in points)
    busy = [r for r in d["replica_list"] if r["rps"]]
    assert busy and all(r["uptime_s"] and r["uptime_s"] > 0 for r in busy)


def test_logs_are_listed_tailed_filtered_and_followed(dash: DashCluster) -> None:
    rid = "dash-api-test-1"
    resp = httpx.get(dash.http + "/echo", headers={"X-Request-ID": rid}, timeout=10)
    replica = resp.json()["replica"]
    files = dash.api("logs", target=replica)["files"]
    assert files and all(f["node_ip"] == HEAD_IP and f["name"].startswith("replica_dash_Echo_") for f in files)

    def tail_with_line() -> dict | None:
        for f in files:
            t = dash.api("logs/tail", node=HEAD_IP, file=f["name"], lines=500, filter=rid)
            if f"echo line {rid}" in t["text"]:
                return t
        return None

    tail = wait_until(tail_with_line, 15, "the replica's line in its log")
    assert all(rid in line for line in tail["text"].splitlines())
    # Follow: the bytes written since the tail's offset hold the next request's line.
    name = tail["file"]
    start = dash.api("logs/tail", node=HEAD_IP, file=name, lines=0)

    def followed() -> str | None:
        httpx.get(dash.http + "/echo", headers={"X-Request-ID": "dash-api-test-2"}, timeout=10)
        text = dash.api("logs/read", node=HEAD_IP, file=name, offset=start["offset"], inode=start["inode"])["text"]
        return text if "echo line dash-api-test-2" in text else None

    wait_until(followed, 15, "a new line read from the tail's offset", interval=0.2)
    assert dash.api("logs", target="head")["files"]


def test_bad_parameters_are_400_and_unknown_ones_404(dash: DashCluster) -> None:
    headers = {"Authorization": f"Bearer {dash.token}"}
    for path, params, code in [("api/deployment", {"app": "dash"}, 400), ("api/deployment", {"app": "dash",
                               "name": "Nope"}, 404), ("api/logs/tail", {"node": HEAD_IP, "file": "../etc"}, 400),
                               ("api/logs/read", {"node": HEAD_IP, "file": "head.log", "offset": "x"}, 400),
                               ("api/nothing", {}, 404)]:
        resp = httpx.get(dash.url + path, params=params, headers=headers, timeout=10)
        assert resp.status_code == code and resp.json()["error"], (path, resp.text)


def test_a_config_deploy_shows_its_import_path_and_serve_run_its_ingress(dash: DashCluster, tmp_path) -> None:
    """Last of the module's tests on `dash`: a config deploy replaces the applications it does
    not name (as Ray's), so the `dash` application is deployed again at the end."""
    config = tmp_path / "greet.yaml"
    config.write_text(yaml.safe_dump({"applications": [
        {"name": "greet", "route_prefix": "/greet", "import_path": "tests.integration.serve_cli_app:build",
         "args": {"greeting": "hi"}}]}))
    try:
        zeroserve("serve", "deploy", str(config), "--address", dash.address, "--token", dash.token, timeout=120)
        apps = {a["name"]: a for a in dash.api("serve")["applications"]}
        assert apps["greet"]["import_path"] == "tests.integration.serve_cli_app:build"
        assert apps["greet"]["status"] == "RUNNING" and [d["name"] for d in apps["greet"]["deployments"]] == ["Greeter"]
        summary = dash.api("status")["serve"]  # `zeroserve status --json` says the same
        assert summary["greet#Greeter"]["import_path"] == "tests.integration.serve_cli_app:build"
        st = json.loads(zeroserve("serve", "status", "--json", "--address", dash.address, "--token",
                                  dash.token).stdout)
        assert st["applications"]["greet"]["import_path"] == "tests.integration.serve_cli_app:build"
    finally:
        serve.delete("greet")
        dash.deploy(2)  # `serve.run(app)` from Python: the ingress's module:QualName
    apps = {a["name"]: a for a in dash.api("serve")["applications"]}
    assert "greet" not in apps and apps["dash"]["import_path"] == "tests.integration.dashboard_cluster:Echo"
    assert serve.status().applications["dash"].import_path == "tests.integration.dashboard_cluster:Echo"


def test_embedded_cluster_serves_it_on_loopback_without_a_token() -> None:
    port = free_port()
    driver = start_driver("""
        import json, sys, urllib.request, actors
        from actors.system import local_cluster
        actors.init()
        url = local_cluster().dashboard_url
        page = urllib.request.urlopen(url, timeout=10).read().decode()
        status = json.loads(urllib.request.urlopen(url + "api/status", timeout=10).read())
        print(json.dumps({"url": url, "page": "zeroserve dashboard" in page, "status_url": status["dashboard_url"]}))
        sys.stdout.flush()
        actors.shutdown()
    """, ZEROSERVE_DASHBOARD_PORT=str(port))
    try:
        info = read_json_line(driver)
        assert info == {"url": f"http://127.0.0.1:{port}/", "page": True, "status_url": f"http://127.0.0.1:{port}/"}
    finally:
        driver.kill()
        driver.wait()
