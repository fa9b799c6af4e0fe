"""Request ids and logs with real processes: the id a client gives (or a new one) comes back
in `X-Request-ID` on every status, and is in the log lines of the proxy, the replica and the
deployment it calls (read from their files); `logging_config` (JSON, access log off) per
deployment and per application."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import threading
import uuid
from pathlib import Path

import httpx
import psutil
import pytest

import actors
import serve
from actors._pipe_thread import LOWEST_NICE
from actors.system import local_cluster

from ..conftest import free_port, wait_until

pytestmark = [pytest.mark.usefixtures("cluster"), pytest.mark.timeout(180)]

log = logging.getLogger("obs.test")


@actors.remote
class Gate:
    def __init__(self) -> None:
        self.event = asyncio.Event()
        self.waiting = 0

    async def wait(self) -> None:
        self.waiting += 1
        await self.event.wait()

    async def open(self) -> None:
        self.event.set()

    async def count(self) -> int:
        return self.waiting


@serve.deployment
class Back:
    def __call__(self, x: int) -> dict:
        ctx = serve.get_request_context()
        log.info("back got %s", x)
        return {"request_id": ctx.request_id, "route": ctx.route, "app": ctx.app_name}


@serve.deployment(route_prefix="/front", max_ongoing_requests=1, max_queued_requests=0)
class Front:
    def __init__(self, back, gate) -> None:
        self.back, self.gate = back, gate

    async def __call__(self, request) -> dict:
        kind = request.query_params.get("kind", "ok")
        log.info("front handling %s", kind)
        if kind == "error":
            raise ValueError("bad input")
        if kind == "wait":
            await self.gate.wait.remote()
        inner = await self.back.remote(1)
        return {"front": serve.get_request_context().request_id, "back": inner}


@pytest.fixture(scope="module")
def http():
    port = free_port()
    serve.start(http_options={"port": port, "request_timeout_s": 5, "max_body_bytes": 1000})
    gate = Gate.remote()
    serve.run(Front.bind(Back.bind(), gate), name="shop")
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
        wait_until(lambda: client.get("/-/routes").json() == {"/front": "Front"}, timeout=30, what="the route")
        yield client, gate
    serve.shutdown()


def _logs() -> Path:
    cluster = local_cluster()
    assert cluster is not None
    return cluster.session.logs


def _files_with(needle: str, pattern: str = "*.log") -> dict[str, list[str]]:
    found = {}
    for path in _logs().glob(pattern):
        lines = [line for line in path.read_text(errors="replace").splitlines() if needle in line]
        if lines:
            found[path.name] = lines
    return found


def test_the_clients_id_is_echoed_and_in_the_proxy_replica_and_downstream_logs(http) -> None:
    client, _ = http
    rid = f"client-{uuid.uuid4().hex[:8]}"
    r = client.get("/front", headers={"X-Request-ID": rid})
    assert r.status_code == 200 and r.headers["x-request-id"] == rid
    assert r.json() == {"front": rid, "back": {"request_id": rid, "route": "/front", "app": "shop"}}

    expected = {  # file -> the lines with the id it must get (each file is written every FLUSH_S)
        "proxy_": [" serve.access: GET /front 200 "],
        "_shop_Front_": [" obs.test: front handling ok", " serve.access: GET /front 200 "],
        "_shop_Back_": [" obs.test: back got 1", " serve.access: CALL __call__ OK "],
    }

    def logged() -> dict[str, list[str]] | None:
        found = _files_with(rid)
        by_part = {part: next((lines for name, lines in found.items() if part in name), []) for part in expected}
        complete = all(any(f" {rid}{text}" in line for line in by_part[part])
                       for part, texts in expected.items() for text in texts)
        return by_part if complete else None

    found = wait_until(logged, timeout=10, what=f"the request id's lines in three log files: {expected}")
    back = found["_shop_Back_"]
    line = next(line for line in back if "back got" in line)
    assert " INFO Back shop#Back#" in line  # time, level, deployment, replica id, request id, logger, message
    writers = _writers_of("replica_shop_Back_")
    assert sorted(writers) == ["agent"]  # the replica ships its lines; its agent writes them
    assert sorted(_writers_of("proxy_")) == ["agent"]
    agent = writers["agent"]  # it writes them in a thread at the lowest priority, and only that thread is
    assert os.getpriority(os.PRIO_PROCESS, agent.pid) == 0
    assert LOWEST_NICE in {os.getpriority(os.PRIO_PROCESS, t.id) for t in agent.threads()}


def _writers_of(prefix: str) -> dict[str, psutil.Process]:
    """The processes that hold a serve log file (named from `prefix`) open, by what they are:
    "agent", or a worker's title."""
    paths = {str(p) for p in _logs().glob(f"{prefix}*.log")}
    assert paths, f"no log file {prefix}*.log"
    holders = {}
    for proc in psutil.process_iter(["cmdline"]):
        try:
            if paths & {f.path for f in proc.open_files()}:
                cmdline = " ".join(proc.info["cmdline"] or [])
                holders["agent" if " agent" in cmdline else cmdline] = proc
        except (psutil.AccessDenied, psutil.NoSuchProcess):
            continue
    return holders


def test_a_new_id_when_the_client_gives_none_or_a_bad_one(http) -> None:
    client, _ = http
    made = client.get("/front")
    bad = client.get("/front", headers={"X-Request-ID": "has spaces in it"})
    long = client.get("/front", headers={"X-Request-ID": "x" * 129})
    ids = {made.headers["x-request-id"], bad.headers["x-request-id"], long.headers["x-request-id"]}
    assert len(ids) == 3 and "has spaces in it" not in ids and "x" * 129 not in ids
    assert made.json()["front"] == made.headers["x-request-id"]  # the replica sees the id the client got


def test_every_status_carries_the_id(http) -> None:
    client, gate = http
    cases = {
        404: lambda h: client.get("/nowhere", headers=h),
        500: lambda h: client.get("/front", params={"kind": "error"}, headers=h),
        413: lambda h: client.post("/front", content=b"x" * 5000, headers=h),
        431: lambda h: client.get("/front", headers={**h, "x-big": "y" * 70_000}),
        200: lambda h: client.get("/-/healthz", headers=h),
    }
    for status, send in cases.items():
        rid = f"s{status}-{uuid.uuid4().hex[:6]}"
        r = send({"X-Request-ID": rid})
        assert (r.status_code, r.headers.get("x-request-id")) == (status, rid), r.text
    assert client.get("/-/routes", headers={"X-Request-ID": "routes-1"}).headers["x-request-id"] == "routes-1"

    # 503 (back-pressure: one request in flight, no queue) and 504 (past request_timeout_s)
    slow: dict[str, httpx.Response] = {}
    waiting = actors.get(gate.count.remote())
    worker = threading.Thread(target=lambda: slow.setdefault("r", client.get(
        "/front", params={"kind": "wait"}, headers={"X-Request-ID": "slow-1"})))
    worker.start()
    wait_until(lambda: actors.get(gate.count.remote()) > waiting, timeout=20, what="a request waiting in Front")
    busy = client.get("/front", headers={"X-Request-ID": "busy-1"})
    assert (busy.status_code, busy.headers["x-request-id"]) == (503, "busy-1")
    worker.join(30)
    assert (slow["r"].status_code, slow["r"].headers["x-request-id"]) == (504, "slow-1")
    actors.get(gate.open.remote())
    errors = wait_until(lambda: _files_with("s500-", "replica_shop_Front_*.log") or None, timeout=10,
                        what="the 500's lines in Front's log")
    (name, lines), = errors.items()
    assert any("Front.__call__ raised" in line for line in lines)  # with its traceback after it
    assert "ValueError: bad input" in (_logs() / name).read_text()


@serve.deployment
class Chatty:
    def __call__(self, x: str) -> str:
        log.info("chatty says %s", x)
        return x


def test_json_logs_parse_line_by_line_and_the_access_log_can_be_off(http) -> None:
    json_handle = serve.run(Chatty.options(name="JsonChatty").bind(), name="json-app", route_prefix=None,
                            logging_config={"encoding": "JSON"})
    quiet = serve.run(Chatty.options(name="QuietChatty", logging_config={"enable_access_log": False}).bind(),
                      name="quiet-app", route_prefix=None)
    assert json_handle.remote("hello-json").result(timeout_s=30) == "hello-json"
    assert quiet.remote("hello-quiet").result(timeout_s=30) == "hello-quiet"

    def json_lines() -> list[dict] | None:
        files = list(_logs().glob("replica_json-app_JsonChatty_*.log"))
        if not files:
            return None
        records = [json.loads(line) for line in files[0].read_text().splitlines()]  # every line is JSON
        return records if any(r.get("logger") == "serve.access" for r in records) else None

    records = wait_until(json_lines, timeout=10, what="JSON records")
    said = next(r for r in records if r["message"] == "chatty says hello-json")
    assert said["levelname"] == "INFO" and said["deployment"] == "JsonChatty" and said["application"] == "json-app"
    assert said["replica"].startswith("json-app#JsonChatty#") and said["request_id"]
    access = next(r for r in records if r.get("logger") == "serve.access")
    assert access["request_id"] == said["request_id"] and access["status"] == "OK" and access["method"] == "CALL"

    quiet_file = wait_until(lambda: _files_with("chatty says hello-quiet", "replica_quiet-app_*.log"), timeout=10,
                            what="the quiet replica's record")
    text = (_logs() / next(iter(quiet_file))).read_text()
    assert "serve.access" not in text
