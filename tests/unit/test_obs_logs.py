"""Serve's log files, without processes: formats, request context, levels, access log, rotation."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from serve import LoggingConfig
from serve._data import logs
from serve._data.context import current_request


@pytest.fixture
def restore_root():
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    for h in list(root.handlers):
        if h not in handlers:
            root.removeHandler(h)
    root.setLevel(level)


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
