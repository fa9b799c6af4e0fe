"""Tracing with OpenTelemetry's SDK and a file exporter (every process appends its spans as
JSON lines): one HTTP request through a two-deployment composition is one trace whose spans
are parents and children across three processes (proxy, ingress replica, model replica),
under the client's own `traceparent`. `$ZEROSERVE_TRACING_EXPORTER` alone (no
`tracing_config`) turns it on in a driver and every process of its embedded cluster."""

from __future__ import annotations

import json
import os
from pathlib import Path

import httpx
import pytest

import serve
from serve._data import tracing

from ..conftest import free_port, read_json_line, start_driver, wait_until

pytestmark = [pytest.mark.usefixtures("cluster"), pytest.mark.timeout(180)]

CLIENT_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
CLIENT_SPAN = "00f067aa0ba902b7"


@serve.deployment
class Model:
    def predict(self, x: int) -> int:
        return x * 2


@serve.deployment(route_prefix="/traced")
class Ingress:
    def __init__(self, model) -> None:
        self.model = model

    async def __call__(self, request) -> dict:
        return {"y": await self.model.predict.remote(21), "pid": os.getpid()}


def _spans(path: Path) -> list[dict]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def test_one_request_is_one_trace_across_three_processes(tmp_path) -> None:
    spans_file = tmp_path / "spans.jsonl"
    port = free_port()
    serve.start(http_options={"port": port}, tracing_config={"exporter": f"file:{spans_file}"})
    try:
        serve.run(Ingress.bind(Model.bind()), name="traced")
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
            wait_until(lambda: client.get("/-/routes").json().get("/traced") == "Ingress", timeout=30,
                       what="the route")
            r = client.get("/traced", headers={"traceparent": f"00-{CLIENT_TRACE}-{CLIENT_SPAN}-01",
                                               "X-Request-ID": "traced-1"})
            assert r.status_code == 200 and r.json()["y"] == 42

        def trace() -> list[dict] | None:
            mine = [s for s in _spans(spans_file) if s["context"]["trace_id"] == "0x" + CLIENT_TRACE]
            names = {s["name"] for s in mine}
            wanted = {"HTTP GET /traced", "route Ingress", "replica Ingress.__serve_http__",
                      "handle Model.predict", "route Model", "replica Model.predict"}
            return mine if wanted <= names else None

        spans = wait_until(trace, timeout=20, what="the request's spans")
    finally:
        serve.shutdown()
        tracing.disable()  # serve.start turned it on in this (the test) process too
    by_name = {s["name"]: s for s in spans}
    by_id = {s["context"]["span_id"]: s for s in spans}

    def parent(name: str) -> dict:
        return by_id[by_name[name]["parent_id"]]

    proxy = by_name["HTTP GET /traced"]
    assert proxy["parent_id"] == "0x" + CLIENT_SPAN  # the client's span is its parent
    assert proxy["kind"] == "SpanKind.SERVER" and proxy["attributes"]["http.status_code"] == 200
    assert parent("route Ingress") is proxy
    assert parent("replica Ingress.__serve_http__") is proxy
    assert parent("handle Model.predict") is by_name["replica Ingress.__serve_http__"]
    assert parent("route Model") is by_name["handle Model.predict"]
    assert parent("replica Model.predict") is by_name["handle Model.predict"]
    pids = {name: by_name[name]["resource"]["attributes"]["process.pid"] for name in by_name}
    assert pids["HTTP GET /traced"] == pids["route Ingress"]
    assert pids["replica Ingress.__serve_http__"] == pids["handle Model.predict"] == pids["route Model"]
    assert len({pids["HTTP GET /traced"], pids["replica Ingress.__serve_http__"], pids["replica Model.predict"]}) == 3
    assert by_name["route Model"]["attributes"]["serve.replica"].startswith("traced#Model#")
    assert by_name["replica Ingress.__serve_http__"]["attributes"]["serve.request_id"] == "traced-1"


_ENV_DRIVER = """
    import json, os, sys, time, urllib.request, actors, serve

    @serve.deployment(route_prefix="/envtraced")
    class Echo:
        def __call__(self, request):
            return {"pid": os.getpid()}

        def ping(self):
            return os.getpid()

    actors.init()  # an embedded cluster: its processes inherit this environment
    serve.start(http_options={"port": PORT})  # no tracing_config: $ZEROSERVE_TRACING_EXPORTER alone turns it on
    handle = serve.run(Echo.bind(), name="envtraced")
    base = "http://127.0.0.1:PORT"
    deadline = time.monotonic() + 30
    while json.loads(urllib.request.urlopen(base + "/-/routes", timeout=10).read()).get("/envtraced") != "Echo":
        assert time.monotonic() < deadline, "no route /envtraced"
        time.sleep(0.05)
    req = urllib.request.Request(base + "/envtraced", headers={"traceparent": "00-TRACE-SPAN-01"})
    replica = json.loads(urllib.request.urlopen(req, timeout=10).read())["pid"]
    handle.ping.remote().result(timeout_s=30)
    print(json.dumps({"replica": replica, "driver": os.getpid()}), flush=True)
    sys.stdin.readline()
    serve.shutdown()
    actors.shutdown()
"""

ENV_TRACE = "0af7651916cd43dd8448eb211c80319c"
ENV_SPAN = "b7ad6b7169203331"


def test_the_tracing_exporter_environment_variable_alone_turns_tracing_on_in_every_process(tmp_path) -> None:
    spans_file = tmp_path / "env-spans.jsonl"
    port = free_port()
    code = _ENV_DRIVER.replace("PORT", str(port)).replace("TRACE", ENV_TRACE).replace("SPAN", ENV_SPAN)
    driver = start_driver(code, ZEROSERVE_TRACING_EXPORTER=f"file:{spans_file}")
    try:
        pids = read_json_line(driver)

        def spans() -> dict[str, dict] | None:
            by_name = {s["name"]: s for s in _spans(spans_file)}
            wanted = {"HTTP GET /envtraced", "replica Echo.__serve_http__", "handle Echo.ping", "replica Echo.ping"}
            return by_name if wanted <= set(by_name) else None

        by_name = wait_until(spans, timeout=20, what="spans from the proxy, the replica and the driver")
    finally:
        driver.stdin.close()
        try:
            driver.wait(60)
        finally:
            driver.kill()
    proxy, served = by_name["HTTP GET /envtraced"], by_name["replica Echo.__serve_http__"]
    assert proxy["context"]["trace_id"] == served["context"]["trace_id"] == "0x" + ENV_TRACE
    assert proxy["parent_id"] == "0x" + ENV_SPAN and served["parent_id"] == proxy["context"]["span_id"]
    pid = {name: s["resource"]["attributes"]["process.pid"] for name, s in by_name.items()}
    assert pid["replica Echo.__serve_http__"] == pid["replica Echo.ping"] == pids["replica"]
    assert pid["handle Echo.ping"] == pids["driver"]
    assert len({pid["HTTP GET /envtraced"], pids["replica"], pids["driver"]}) == 3  # the proxy's own process
    assert by_name["replica Echo.ping"]["parent_id"] == by_name["handle Echo.ping"]["context"]["span_id"]
