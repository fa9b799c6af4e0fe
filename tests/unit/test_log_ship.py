"""Log batches shipped to the agent (`actors._log_ship`), through a real pipe in one process:
the agent's reader writes what the process would have written, frames split anywhere,
rotation by the node's sizes, and a process whose agent is gone writes its files itself."""

from __future__ import annotations

import logging
import os
import threading
from http import HTTPStatus
from pathlib import Path

import pytest

from actors import _log_ship
from actors._pipe_thread import LOWEST_NICE
from actors.system import LogRotation, ShippedLogReader
from serve import LoggingConfig
from serve._data import logs


class _Pipe:
    """A pipe's two ends (`r, w = pipe`). A test closes an end with `close` (or hands it to a
    reader that closes it: `forget`), so the fixture never closes an fd number twice (a
    second close could hit a file opened since with the same number)."""

    def __init__(self) -> None:
        self.r, self.w = os.pipe()
        self._open = {self.r, self.w}

    def __iter__(self):
        return iter((self.r, self.w))

    def close(self, fd: int) -> None:
        self.forget(fd)
        os.close(fd)

    def forget(self, fd: int) -> None:
        self._open.discard(fd)

    def close_rest(self) -> None:
        for fd in self._open:
            os.close(fd)


@pytest.fixture
def pipe():
    """A pipe installed as this process's log pipe (as a worker's), uninstalled after."""
    ends = _Pipe()
    _log_ship.install(ends.w)
    yield ends
    _log_ship.install(-1)
    ends.close_rest()


def _drain(r: int) -> bytes:
    os.set_blocking(r, False)
    data = b""
    while True:
        try:
            chunk = os.read(r, 65536)
        except BlockingIOError:
            return data
        data += chunk


def _write_some(logs_dir: Path) -> Path:
    """Records and access lines of a replica, as a serving process queues them; the file."""
    access = logs.configure(logs.Who.replica("app", "Model", "ab12cd"), LoggingConfig(logs_dir=str(logs_dir)))
    assert access is not None
    logging.getLogger("user.code").info("hello %s", "world")
    for i in range(50):
        access.append((1765058385.0 + i / 7, "GET", "/model", 200, i / 3, f"rid-{i}", "/model", "app", False, True))
    access.append((1765058390.0, "CALL", "m", "OK", 1.0, "counted-only", "", "app", False, False))
    access.write("CALL", "m", "ERROR", 1234.5, "", extra=object())  # an `extra` marshal cannot write
    access.write("GET", _Text("/sub"), HTTPStatus.NOT_FOUND, 2.0, "rid-enum")  # nor subclasses of str and int
    logs.flush()
    return logs_dir / "replica_app_Model_ab12cd.log"


def test_the_agent_writes_what_the_process_would_have_written(tmp_path, pipe, restore_root) -> None:
    r, _ = pipe
    shipped = _write_some(tmp_path / "shipped")
    assert shipped.read_text() == ""  # made, but nothing written by this process: it all went into the pipe
    data = _drain(r)
    reader = ShippedLogReader(-1, LogRotation())
    reader.receive(data)
    reader.close()
    _log_ship.install(-1)  # no agent: the same records written here
    local = _write_some(tmp_path / "local")
    written, expected = shipped.read_text().splitlines(), local.read_text().splitlines()
    assert written[1:51] == expected[1:51]  # the records of fixed times, whole
    assert [line[23:] for line in written] == [line[23:] for line in expected]  # the rest, after their times
    assert len(written) == 1 + 50 + 2  # the record counted only has no line
    assert written[1].endswith(" INFO Model app#Model#ab12cd rid-0 serve.access: GET /model 200 0.0ms")
    assert written[-2].endswith(" - serve.access: CALL m ERROR 1234.5ms")
    assert written[-1].endswith(" rid-enum serve.access: GET /sub 404 2.0ms")


class _Text(str):
    pass


def test_frames_split_anywhere_are_read_whole(tmp_path, pipe) -> None:
    r, _ = pipe
    path = tmp_path / "split.log"
    for i in range(3):
        assert _log_ship.ship(path, ("", ""), [f"batch {i}\n"])
    data = _drain(r)
    reader = ShippedLogReader(-1, LogRotation())
    for i in range(len(data)):
        reader.receive(data[i:i + 1])
    reader.close()
    assert path.read_text() == "batch 0\nbatch 1\nbatch 2\n" and reader.items == 3


def test_a_bad_frame_costs_only_itself(tmp_path, caplog) -> None:
    good = _frame(tmp_path / "good.log", ["kept\n"])
    bad = len(b"junk").to_bytes(4, "little") + b"junk"
    reader = ShippedLogReader(-1, LogRotation())
    reader.receive(bad + good)
    reader.close()
    assert (tmp_path / "good.log").read_text() == "kept\n"
    assert "could not write a worker's log batch" in caplog.text


def _frame(path: Path, items: list) -> bytes:
    import marshal

    body = marshal.dumps((str(path), ("", ""), items))
    return len(body).to_bytes(4, "little") + body


def test_the_agent_rotates_by_its_nodes_sizes(tmp_path) -> None:
    path = tmp_path / "r.log"
    reader = ShippedLogReader(-1, LogRotation(max_bytes=1024, backups=2))
    for i in range(100):
        reader.receive(_frame(path, [f"line {i:04d} " + "x" * 40 + "\n"]))
    reader.close()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.log", "r.log.1", "r.log.2"]
    assert all(p.stat().st_size <= 1024 for p in tmp_path.iterdir())
    assert path.read_text().splitlines()[-1].startswith("line 0099")


def test_the_reader_follows_the_pipe_in_its_background_thread_until_it_closes(tmp_path, pipe) -> None:
    r, w = pipe
    path = tmp_path / "bg.log"
    written: list[tuple[Path, str, int]] = []  # (path, thread, its nice) of each append
    closed = threading.Event()

    def on_write(p: Path) -> None:
        written.append((p, threading.current_thread().name, os.getpriority(os.PRIO_PROCESS, threading.get_native_id())))

    reader = ShippedLogReader(r, LogRotation(), on_write)
    pipe.forget(r)  # the reader closes it
    real_close = reader._close
    reader._close = lambda: (real_close(), closed.set())  # type: ignore[method-assign]
    reader.start()
    assert _log_ship.ship(path, ("", ""), ["one\n"])
    assert _log_ship.ship(path, ("", ""), ["two\n"])
    pipe.close(w)  # the worker is gone: EOF
    assert closed.wait(10)
    assert path.read_text() == "one\ntwo\n"
    assert {(p, thread) for p, thread, _ in written} == {(path, "background-pipes")}
    assert {nice for _, _, nice in written} == {LOWEST_NICE}  # it yields the CPU to the serving processes
    assert os.getpriority(os.PRIO_PROCESS, threading.get_native_id()) < LOWEST_NICE  # only it


def test_the_agent_stopping_closes_a_reader_its_thread_reads(tmp_path, pipe) -> None:
    r, _ = pipe
    path = tmp_path / "stop.log"
    written = threading.Event()
    reader = ShippedLogReader(r, LogRotation(), lambda p: written.set())
    pipe.forget(r)  # the reader closes it
    reader.start()
    assert _log_ship.ship(path, ("", ""), ["before the stop\n"])
    assert written.wait(10)
    assert reader.close(wait_s=10)  # its thread closed it: the pipe has no reader left
    assert not _log_ship.ship(path, ("", ""), ["after\n"])  # the process writes its files itself now
    assert path.read_text() == "before the stop\n"


def test_a_process_whose_agent_is_gone_writes_its_files_itself(tmp_path, pipe, restore_root) -> None:
    r, _ = pipe
    pipe.close(r)  # the agent's end closed: the next batch cannot be shipped
    path = _write_some(tmp_path)
    assert not _log_ship.shipping()
    lines = path.read_text().splitlines()
    assert len(lines) == 53 and "hello world" in lines[0]


def test_a_full_pipe_never_blocks_the_process_and_loses_nothing(tmp_path, pipe) -> None:
    """An agent that is behind (or stopped): batches wait in the process's backlog, in order."""
    r, _ = pipe
    path = tmp_path / "backlog.log"
    line = "x" * 1000
    for i in range(300):  # about 300 KB: far more than a pipe holds
        assert _log_ship.ship(path, ("", ""), [f"{i:04d} {line}\n"])
    assert _log_ship._backlog  # what the pipe could not take
    reader = ShippedLogReader(-1, LogRotation())
    while True:
        data = _drain(r)
        if not data and not _log_ship._backlog:
            break
        reader.receive(data)
        _log_ship.push()  # as serve's log flush does every time
    reader.close()
    assert [int(text[:4]) for text in path.read_text().splitlines()] == list(range(300))


def test_past_the_backlog_bound_the_process_writes_itself(tmp_path, pipe, monkeypatch) -> None:
    monkeypatch.setattr(_log_ship, "MAX_BACKLOG", 1)
    shipped = [_log_ship.ship(tmp_path / "full.log", ("", ""), ["y" * 1000 + "\n"]) for _ in range(100)]
    assert shipped[0] and not all(shipped)  # once the pipe is full, the next batch is the caller's to write


def test_a_relative_path_is_the_processs_not_the_agents(tmp_path, pipe, monkeypatch) -> None:
    """`logs_dir="logs"` means the serving process's ./logs, whatever the agent's directory."""
    r, _ = pipe
    monkeypatch.chdir(tmp_path)
    assert _log_ship.ship(Path("logs/rel.log"), ("", ""), ["here\n"])
    monkeypatch.chdir("/")
    reader = ShippedLogReader(-1, LogRotation())
    reader.receive(_drain(r))
    reader.close()
    assert (tmp_path / "logs" / "rel.log").read_text() == "here\n"


def test_drain_waits_for_the_agent_to_take_the_last_lines(tmp_path, pipe) -> None:
    """A process about to stop: `drain` returns once the pipe took the whole backlog."""
    r, w = pipe
    path = tmp_path / "last.log"
    for i in range(200):
        _log_ship.ship(path, ("", ""), [f"{i:04d} {'z' * 1000}\n"])
    assert not _log_ship.drain(0.05)  # nobody reads: the backlog stays (a bounded wait)
    reader = ShippedLogReader(-1, LogRotation())

    def read() -> None:  # the agent, reading until the worker's end closes
        while data := os.read(r, 1 << 16):
            reader.receive(data)

    thread = threading.Thread(target=read)
    thread.start()
    assert _log_ship.drain(10) and not _log_ship._backlog
    _log_ship.install(-1)
    pipe.close(w)
    thread.join(10)
    reader.close()
    assert [int(line[:4]) for line in path.read_text().splitlines()] == list(range(200))
