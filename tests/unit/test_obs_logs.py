"""Serve's log files, without processes: formats, request context, levels, access log, rotation."""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from serve import LoggingConfig
from serve._data import logs
from serve._data.context import current_request


def _lines(path: Path) -> list[str]:
    logs._flusher.flush_all()
    return path.read_text().splitlines()


def test_text_records_carry_time_level_deployment_replica_request_id_and_message(tmp_path, restore_root) -> None:
    who = logs.Who.replica("app", "Model", "ab12cd")
    access = logs.configure(who, LoggingConfig(logs_dir=str(tmp_path)))
    path = tmp_path / "replica_app_Model_ab12cd.log"
    token = current_request.set(("req-1", "/model", "app", "", ""))
    try:
        logging.getLogger("user.code").info("hello %s", "world")
        assert access is not None
        access.write("GET", "/model", 200, 1.25, "req-1", "/model", "app")
    finally:
        current_request.reset(token)
    logging.getLogger("user.code").warning("outside a request")
    record, line, outside = _lines(path)
    date, clock, level, deployment, replica, request_id, logger, *message = record.split(" ")
    assert (level, deployment, replica, request_id, logger) == ("INFO", "Model", "app#Model#ab12cd", "req-1", "user.code:")
    assert " ".join(message) == "hello world" and len(date) == 10 and "," in clock
    assert line.endswith("INFO Model app#Model#ab12cd req-1 serve.access: GET /model 200 1.2ms")
    assert " WARNING Model app#Model#ab12cd - user.code: outside a request" in outside


def test_access_line_latency_reads_as_formatted_to_a_tenth(tmp_path, restore_root) -> None:
    """The text line's latency (from a table below 100 ms) is what `:.1f` writes, halves too."""
    access = logs.configure(logs.Who.replica("app", "Model", "ab12cd"), LoggingConfig(logs_dir=str(tmp_path)))
    assert access is not None
    latencies = [0.0, 0.04, 0.05, 0.15, 0.25, 1.25, 2.35, 9.95, 99.94, 99.95, 99.96, 100.0, 1234.56, 0.1 + 0.2]
    latencies += [i / 997 for i in range(100_000)]
    for latency in latencies:
        access.write("CALL", "m", "OK", latency, "r")
    written = [line.rpartition(" ")[2] for line in _lines(tmp_path / "replica_app_Model_ab12cd.log")]
    assert written == [f"{latency:.1f}ms" for latency in latencies]


def test_json_writes_one_object_per_line_with_the_fields(tmp_path, restore_root) -> None:
    access = logs.configure(logs.Who.replica("app", "Model", "ab12cd"),
                            LoggingConfig(encoding="JSON", logs_dir=str(tmp_path)))
    token = current_request.set(("req-2", "/m", "app", "", ""))
    try:
        logging.getLogger("x").info('quote " and\nnewline')
        try:
            raise ValueError("boom")
        except ValueError:
            logging.getLogger("x").exception("failed")
        assert access is not None
        access.write("CALL", "predict", "OK", 0.5, "req-2", "/m", "app")
    finally:
        current_request.reset(token)
    records = [json.loads(line) for line in _lines(tmp_path / "replica_app_Model_ab12cd.log")]
    assert len(records) == 3
    first, failed, call = records
    for r in records:
        assert {"asctime", "levelname", "deployment", "replica", "request_id", "message", "application"} <= set(r)
        assert (r["deployment"], r["replica"], r["request_id"], r["application"]) == ("Model", "app#Model#ab12cd", "req-2",
                                                                                       "app")
    assert first["message"] == 'quote " and\nnewline' and first["route"] == "/m" and first["logger"] == "x"
    assert failed["levelname"] == "ERROR" and "ValueError: boom" in failed["exc_text"]
    assert (call["method"], call["status"], call["latency_ms"]) == ("CALL", "OK", 0.5)


def test_log_level_drops_records_below_it_and_turns_the_access_log_off(tmp_path, restore_root) -> None:
    access = logs.configure(logs.Who.controller(), LoggingConfig(log_level="WARNING", logs_dir=str(tmp_path)))
    assert access is None  # access lines are INFO
    logging.getLogger("a").info("dropped")
    logging.getLogger("a").warning("kept")
    assert [line.split(" a: ", 1)[1] for line in _lines(tmp_path / "controller.log")] == ["kept"]


def test_enable_access_log_false_gives_no_access_log(tmp_path, restore_root) -> None:
    assert logs.configure(logs.Who.proxy("127.0.0.9"), LoggingConfig(enable_access_log=False,
                                                                      logs_dir=str(tmp_path))) is None
    assert logs.configure(logs.Who.proxy("127.0.0.9"), LoggingConfig(logs_dir=str(tmp_path))) is not None


def test_a_reconfigure_replaces_the_handlers_instead_of_adding_more(tmp_path, restore_root) -> None:
    who = logs.Who.replica("a", "D", "t")
    before = len(logging.getLogger().handlers)
    logs.configure(who, LoggingConfig(logs_dir=str(tmp_path)))
    logs.configure(who, LoggingConfig(logs_dir=str(tmp_path), encoding="JSON"))
    assert len(logging.getLogger().handlers) == before + 2
    logging.getLogger("z").info("once")
    assert len([line for line in _lines(tmp_path / "replica_a_D_t.log") if "once" in line]) == 1


def test_the_proxy_falls_back_to_its_own_request_id(tmp_path, restore_root) -> None:
    logs.configure(logs.Who.proxy("127.0.0.9"), LoggingConfig(logs_dir=str(tmp_path)), fallback=lambda: "p-77")
    logging.getLogger("uvicorn.error").error("oops")
    assert " ERROR proxy 127.0.0.9 p-77 uvicorn.error: oops" in _lines(tmp_path / "proxy_127.0.0.9.log")[0]


def test_file_names_are_safe() -> None:
    who = logs.Who.replica("my app", "Mo/del", "ab")
    assert logs.log_path(who, LoggingConfig(logs_dir="/x"), None) == Path("/x/replica_my-app_Mo-del_ab.log")


def test_rotation_keeps_the_bound(tmp_path) -> None:
    path = tmp_path / "r.log"
    out = logs.LogFile(path, max_bytes=1000, backups=2)
    for i in range(200):
        out.write(f"line {i:04d} " + "x" * 40 + "\n")
    out.close()
    files = sorted(p.name for p in tmp_path.iterdir())
    assert files == ["r.log", "r.log.1", "r.log.2"]
    assert all(p.stat().st_size <= 1000 for p in tmp_path.iterdir())  # rotated between lines
    assert "line 0199" in path.read_text() or "line 0199" in (tmp_path / "r.log.1").read_text()
    assert "line 0000" not in "".join(p.read_text() for p in tmp_path.iterdir())  # the oldest went


def test_logging_config_validation() -> None:
    assert LoggingConfig(log_level=10).log_level == "DEBUG"
    assert LoggingConfig(log_level="warn").log_level == "WARNING"
    assert LoggingConfig(encoding="json").encoding == "JSON"
    with pytest.raises(ValueError, match="log_level must be a log level"):
        LoggingConfig(log_level="LOUD")
    with pytest.raises(ValueError, match="encoding must be 'TEXT' or 'JSON'"):
        LoggingConfig(encoding="XML")
    with pytest.raises(TypeError, match="unknown logging_config 'additional_log_standard_attrs'"):
        LoggingConfig(additional_log_standard_attrs=["name"])


def _proxy_observer(tmp_path: Path, ip: str, **config: Any) -> tuple[Any, logs.Who]:
    from serve._data.http_proxy import _Observer

    observer = _Observer("node", ip)
    who = logs.Who.proxy(ip)
    observer.access = logs.configure(who, LoggingConfig(logs_dir=str(tmp_path), **config), tally=observer.tally)
    return observer, who


def _count(name: str, **labels: str) -> float | None:
    from prometheus_client import generate_latest

    from actors.system import metrics_registry

    for line in generate_latest(metrics_registry()).decode().splitlines():
        if line.startswith(name + "{") and all(f'{k}="{v}"' in line for k, v in labels.items()):
            return float(line.rsplit(" ", 1)[1])
    return None


def test_queued_requests_are_counted_by_the_writer_and_before_every_scrape(tmp_path, restore_root) -> None:
    observer, _ = _proxy_observer(tmp_path, "127.0.0.77")
    for status in (200, 200, 404):
        observer.end(None, "GET", "/tally", None, status, time.perf_counter(), "rid-1", "/tally")
    observer.end(None, "GET", "/-/healthz", None, 200, time.perf_counter(), "rid-2", "/-/healthz")
    # Queued for the log's flush: nothing is counted on the request path...
    assert observer._cells == {}
    # ...and a scrape counts what is queued first.
    assert _count("serve_num_http_requests_total", route="/tally", status_code="200") == 2
    assert _count("serve_num_http_requests_total", route="/tally", status_code="404") == 1
    assert _count("serve_num_http_error_requests_total", route="/tally", error_code="404") == 1
    assert _count("serve_num_http_requests_total", route="/-/healthz", status_code="200") == 1
    assert _count("serve_http_request_latency_ms_count", route="/tally", status_code="200") == 2
    # Every request but the internal route has its access line.
    access = [line for line in _lines(tmp_path / "proxy_127.0.0.77.log") if "serve.access" in line]
    assert [line.rsplit(": ", 1)[1].rsplit(" ", 1)[0] for line in access] == ["GET /tally 200", "GET /tally 200",
                                                                                "GET /tally 404"]


def test_turning_the_access_log_off_counts_the_queue_first_then_each_request_at_once(tmp_path, restore_root) -> None:
    observer, who = _proxy_observer(tmp_path, "127.0.0.78")
    observer.end(None, "POST", "/switch", None, 200, time.perf_counter(), "rid-1", "/switch")
    observer.access = logs.configure(who, LoggingConfig(logs_dir=str(tmp_path), enable_access_log=False),
                                     tally=observer.tally)
    assert observer.access is None
    cell = observer._cells[("/switch", "POST", 200)][0]
    assert cell.value == 1  # the queued request, counted at the switch (no two threads count at once)
    observer.end(None, "POST", "/switch", None, 200, time.perf_counter(), "rid-2", "/switch")
    assert cell.value == 2  # counted on the request path
    assert _count("serve_num_http_requests_total", route="/switch", method="POST") == 2


def test_the_tallies_read_the_record_fields_where_access_log_write_puts_them(tmp_path) -> None:
    """The owners' batch tallies name a record's fields by RECORD (`logs.latencies_by`): it
    is the order `write` queues them in, and a batch's latencies group by the fields named."""
    out = logs.LogFile(tmp_path / "x.log")
    access = logs.AccessLog(out, logs._Format(logs.Who.proxy("127.0.0.79"), False, None))
    queued: list = []
    out.prepare = lambda items: queued.extend(items) or []  # what a flush is handed
    access.write("GET", "/p", 404, 2.5, "rid", "/p", "app", "target", False)
    out.flush()
    (record,) = queued
    assert dict(zip(logs.RECORD, record, strict=True)) | {"time": 0} == {
        "time": 0, "method": "GET", "what": "/p", "status": 404, "latency_ms": 2.5, "request_id": "rid",
        "route": "/p", "app": "app", "extra": "target", "line": False}
    batch = ["a text line\n", record, (*record[:3], 200, 1.0, *record[5:]), (*record[:4], 0.5, *record[5:])]
    assert logs.latencies_by(batch, "route", "status") == {("/p", 404): [2.5, 0.5], ("/p", 200): [1.0]}
    out.close()


def test_a_replica_counts_its_queued_requests_and_errors_at_the_scrape(tmp_path, restore_root) -> None:
    import pickle

    from serve._data.replica import ReplicaActor

    replica = ReplicaActor("Tally", "t1", "app-tally", pickle.dumps((object, (), {})), None, False, 10,
                           LoggingConfig(logs_dir=str(tmp_path)))
    ctx, other = ("rid-3", "/r", "app-tally", "", ""), ("rid-4", "/s", "app-tally", "", "")
    for error in (None, None, ValueError("boom")):
        replica._observe("__call__", (1,), ctx, "ok", error, time.perf_counter())
    replica._observe("other", (1,), other, "ok", asyncio.CancelledError(), time.perf_counter())  # not an error
    replica._observe("other", (1,), other, "ok", None, time.perf_counter())
    assert replica._cells == {}
    labels = {"deployment": "Tally", "route": "/r", "application": "app-tally"}
    assert _count("serve_deployment_request_counter_total", **labels) == 3
    assert _count("serve_deployment_error_counter_total", **labels) == 1
    assert _count("serve_deployment_processing_latency_ms_count", **labels) == 3
    assert _count("serve_deployment_request_counter_total", route="/s") == 2
    assert _count("serve_deployment_error_counter_total", route="/s") == 0
    assert _count("serve_deployment_processing_latency_ms_bucket", route="/s", le="+Inf") == 2
    calls = [line.rsplit(": ", 1)[1].rsplit(" ", 1)[0] for line in _lines(tmp_path / "replica_app-tally_Tally_t1.log")
             if "serve.access" in line]
    assert calls == ["CALL __call__ OK", "CALL __call__ OK", "CALL __call__ ERROR", "CALL other CANCELLED",
                     "CALL other OK"]


def test_a_proxy_json_access_line_names_its_routes_application(tmp_path, restore_root) -> None:
    from serve._data.http_proxy import _Observer
    from serve.messages import DeploymentId

    observer = _Observer("node", "127.0.0.79")
    observer.targets = {"Model": DeploymentId("shop", "Model")}
    observer.access = logs.configure(logs.Who.proxy("127.0.0.79"), LoggingConfig(logs_dir=str(tmp_path),
                                                                                 encoding="JSON"),
                                     tally=observer.tally, app_of=observer.app_of)
    observer.end(None, "GET", "/shop", "Model", 200, time.perf_counter(), "rid-j", "/shop/x")
    observer.end(None, "GET", "", None, 404, time.perf_counter(), "rid-k", "/nowhere")
    lines = [json.loads(line) for line in _lines(tmp_path / "proxy_127.0.0.79.log")]
    access = [(line["message"].rsplit(" ", 1)[0], line["application"]) for line in lines
              if line["logger"] == "serve.access"]
    assert access == [("GET /shop 200", "shop"), ("GET /nowhere 404", "")]
    assert _count("serve_num_http_requests_total", route="/shop", application="shop") == 1


@pytest.fixture
def flusher_loop() -> Any:
    """The flusher as it was (no loop driving it) after a test that gives it one."""
    yield
    logs._flusher._loop = None


def _tally_in(threads: list[int], done: Any) -> logs.Tally:
    """A tally that notes the thread it runs in, and sets `done` once it has a record."""

    def tally(batch: list) -> None:
        if any(type(item) is tuple for item in batch):
            threads.append(threading.get_ident())
            done.set()

    return tally


def test_a_process_configured_on_its_loop_flushes_there(tmp_path, restore_root, flusher_loop) -> None:
    threads: list[int] = []

    async def main() -> int:
        done = asyncio.Event()
        access = logs.configure(logs.Who.replica("app", "Looped", "l1"), LoggingConfig(logs_dir=str(tmp_path)),
                                tally=_tally_in(threads, done))
        assert access is not None
        access.write("CALL", "m", "OK", 1.0, "rid-l")
        await asyncio.wait_for(done.wait(), timeout=10)  # the loop's own flush, within FLUSH_S
        return threading.get_ident()

    assert threads == [asyncio.run(main())]
    assert [line for line in _lines(tmp_path / "replica_app_Looped_l1.log") if "rid-l" in line]


def test_the_thread_flushes_for_a_loop_that_is_stuck(tmp_path, restore_root, flusher_loop, monkeypatch) -> None:
    monkeypatch.setattr(logs, "STALE_S", 0.3)
    threads: list[int] = []
    released = threading.Event()

    async def main() -> tuple[int, bool]:
        access = logs.configure(logs.Who.replica("app", "Stuck", "s1"), LoggingConfig(logs_dir=str(tmp_path)),
                                tally=_tally_in(threads, released))
        assert access is not None
        access.write("CALL", "m", "OK", 1.0, "rid-s")
        # User code holds the loop: only the backstop thread can flush, and its tally releases it.
        return threading.get_ident(), released.wait(timeout=10)

    loop_thread, released_in_time = asyncio.run(main())
    assert released_in_time and threads and threads[0] != loop_thread
