"""Unit tests of log files: names (`log_name`), rotation by size, the cluster's record
format, reading a node's files (`cluster._log_access`), a worker's output with its
subscribers (`cluster._worker_output`), `zeroserve logs` target resolution, and code
sent by value keeping its file name.

Contract: a log name is a plain, bounded file name (anything else is refused with what to
change; `safe_log_name` makes one from any text); a rotated file never passes its size
and keeps whole lines, with at most `backups` older files, in order; a reader follows a
file across a rotation without losing or repeating bytes; names with paths are refused.
"""

from __future__ import annotations

import asyncio
import logging
import os
import pickle
import re
import types
from pathlib import Path

import pytest

from actors._logfiles import (
    LOG_FORMAT,
    LogRotation,
    RotatingWriter,
    configure_process_logging,
    safe_log_name,
    validate_log_name,
)
from actors._options import validate_actor_options
from actors._serialization import dumps_code
from cluster._log_access import LogDirectory, LogNameError
from cluster._logs import LogFile, select_files
from cluster._worker_output import WorkerOutput
from serve._control.io import replica_log_name

# -- names ----------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["controller", "replica_default_Model_ab12", "proxy_127.0.0.2", "A-1.b_c"])
def test_valid_log_names(name: str) -> None:
    assert validate_log_name(name) == name
    assert validate_actor_options({"log_name": name}, is_async=False).log_name == name


@pytest.mark.parametrize("name", ["", "a/b", "../x", ".hidden", "-dash", "sp ace", "x" * 129, 7, None])
def test_invalid_log_names_are_refused_saying_what_to_change(name: object) -> None:
    with pytest.raises(ValueError, match="log_name must be"):
        validate_log_name(name)
    if name is not None:
        with pytest.raises(ValueError, match="log_name must be"):
            validate_actor_options({"log_name": name}, is_async=False)


def test_safe_log_name_makes_a_valid_name_from_any_text() -> None:
    assert safe_log_name("replica", "my app", "Model/v2", "ab12") == "replica_my-app_Model-v2_ab12"
    assert validate_log_name(safe_log_name("..", "/etc/passwd"))
    assert len(safe_log_name("x" * 500)) == 128
    assert replica_log_name("default", "Model", "ab12") == "replica_default_Model_ab12"


def test_plain_actors_have_no_log_name_by_default() -> None:
    assert validate_actor_options({}, is_async=False).log_name is None


# -- rotation -------------------------------------------------------------------------------


def test_rotation_settings_are_checked(monkeypatch: pytest.MonkeyPatch) -> None:
    assert LogRotation.from_env() == LogRotation(100 * 1024 * 1024, 5)
    monkeypatch.setenv("ZEROSERVE_LOG_MAX_BYTES", "4096")
    monkeypatch.setenv("ZEROSERVE_LOG_BACKUPS", "2")
    assert LogRotation.from_env() == LogRotation(4096, 2)
    assert LogRotation.from_env().env() == {"ZEROSERVE_LOG_MAX_BYTES": "4096", "ZEROSERVE_LOG_BACKUPS": "2"}
    monkeypatch.setenv("ZEROSERVE_LOG_MAX_BYTES", "lots")
    with pytest.raises(ValueError, match=r"\$ZEROSERVE_LOG_MAX_BYTES must be an integer"):
        LogRotation.from_env()
    with pytest.raises(ValueError, match="must be an integer >= 1024 bytes"):
        LogRotation(100, 2)
    with pytest.raises(ValueError, match="must be an integer >= 1"):
        LogRotation(4096, 0)


def test_a_rotated_file_keeps_its_bound_whole_lines_and_order(tmp_path: Path) -> None:
    path = tmp_path / "w.out"
    w = RotatingWriter.open(path, LogRotation(1024, 3))
    lines = [f"line {i:04d} {'x' * (i % 50)}\n".encode() for i in range(400)]
    for i in range(0, len(lines), 7):  # chunks of several lines, as read from a pipe
        w.write(b"".join(lines[i:i + 7]))
    w.close()
    files = sorted(tmp_path.glob("w.out*"))
    assert [f.name for f in files] == ["w.out", "w.out.1", "w.out.2", "w.out.3"]
    assert all(0 < f.stat().st_size <= 1024 for f in files)
    kept = b"".join(f.read_bytes() for f in reversed(files))
    assert kept.endswith(b"".join(lines[-20:]))  # the newest lines, whole and in order
    numbers = [int(ln.split()[1]) for ln in kept.decode().splitlines()]
    assert numbers == list(range(numbers[0], 400))


def test_a_line_longer_than_a_file_is_split_not_kept_over_the_bound(tmp_path: Path) -> None:
    path = tmp_path / "long.out"
    w = RotatingWriter.open(path, LogRotation(1024, 5))
    w.write(b"y" * 3000 + b"\n")
    w.close()
    sizes = sorted(f.stat().st_size for f in tmp_path.glob("long.out*"))
    assert sizes == [953, 1024, 1024] and sum(sizes) == 3001


def test_workers_sharing_a_log_name_share_one_writer(tmp_path: Path) -> None:
    rotation = LogRotation(2048, 2)
    a = RotatingWriter.open(tmp_path / "proxy_x.out", rotation)
    b = RotatingWriter.open(tmp_path / "proxy_x.out", rotation)
    assert a is b
    a.close()
    a.write(b"still open\n")
    b.close()
    assert (tmp_path / "proxy_x.out").read_text() == "still open\n"
    assert RotatingWriter.open(tmp_path / "proxy_x.out", rotation) is not a


def test_cluster_records_carry_time_level_logger_and_pid(tmp_path: Path) -> None:
    root = logging.getLogger()
    saved = (list(root.handlers), root.level)
    try:
        configure_process_logging(str(tmp_path / "head.log"))
        logging.getLogger("cluster._head").warning("node %s lost", "n1")
        for h in root.handlers:
            h.flush()
    finally:
        for h in list(root.handlers):
            root.removeHandler(h)
            h.close()
        for h in saved[0]:
            root.addHandler(h)
        root.setLevel(saved[1])
    text = (tmp_path / "head.log").read_text()
    assert re.fullmatch(rf"\d{{4}}-\d\d-\d\d \d\d:\d\d:\d\d,\d{{3}} WARNING cluster\._head pid={os.getpid()} "
                        r"node n1 lost\n", text), text
    assert "%(name)s" in LOG_FORMAT and "%(process)d" in LOG_FORMAT


# -- reading a node's files -------------------------------------------------------------------


def test_tail_and_follow_across_a_rotation(tmp_path: Path) -> None:
    logs = LogDirectory(tmp_path)
    w = RotatingWriter.open(tmp_path / "r.out", LogRotation(1024, 2))
    for i in range(10):
        w.write(f"first {i}\n".encode())
    tail = logs.tail("r.out", 3)
    assert tail["data"] == b"first 7\nfirst 8\nfirst 9\n"
    offset, inode = tail["offset"], tail["inode"]
    w.write(b"after the tail\n" + b"z" * 1000 + b"\n")  # rotates: the line is in r.out.1 now
    w.write(b"in the new file\n")
    got = b""
    for _ in range(5):
        chunk = logs.read("r.out", offset, inode)
        got += chunk["data"]
        offset, inode = chunk["offset"], chunk["inode"]
    assert got == b"after the tail\n" + b"z" * 1000 + b"\n" + b"in the new file\n"
    w.close()


def test_only_plain_names_of_existing_files_can_be_read(tmp_path: Path) -> None:
    (tmp_path / "a.out").write_text("x\n")
    logs = LogDirectory(tmp_path / "logs")
    (tmp_path / "logs").mkdir()
    (tmp_path / "logs" / "ok.log").write_text("fine\n")
    assert [f["name"] for f in logs.list()] == ["ok.log"]
    for bad in ("../a.out", "/etc/passwd", "", ".", "missing.log", "sub/ok.log"):
        with pytest.raises(LogNameError):
            logs.tail(bad, 10)


def test_follow_answers_when_the_agent_writes_and_after_its_hold(tmp_path: Path) -> None:
    async def scenario() -> tuple[bytes, bytes, float]:
        logs = LogDirectory(tmp_path)
        w = RotatingWriter.open(tmp_path / "f.out", LogRotation(4096, 2))
        w.write(b"old\n")
        start = logs.tail("f.out", 0)
        loop = asyncio.get_running_loop()
        waiting = loop.create_task(logs.follow("f.out", start["offset"], start["inode"], 20.0))
        await asyncio.sleep(0)
        w.write(b"new line\n")
        logs.touched("f.out")
        got = await asyncio.wait_for(waiting, 5)
        t0 = loop.time()
        empty = await logs.follow("f.out", got["offset"], got["inode"], 0.2)
        w.close()
        return got["data"], empty["data"], loop.time() - t0

    new, empty, held = asyncio.run(scenario())
    assert new == b"new line\n" and empty == b"" and 0.15 <= held < 2


# -- a worker's output --------------------------------------------------------------------------


def test_worker_output_goes_to_files_owner_and_subscribers_with_a_backlog(tmp_path: Path) -> None:
    sent: list[tuple[str, tuple]] = []
    out = WorkerOutput(logs_dir=tmp_path, log_name="replica_a_M_t1", prefix="(replica_a_M_t1 pid=7)",
                       owner="tcp://owner", rotation=LogRotation(4096, 2),
                       send=lambda addr, route, args: sent.append((addr, args)))
    out.write("out", b"constructed\npart")
    out.write("err", b"a warning\n")
    assert sent == [("tcp://owner", ("(replica_a_M_t1 pid=7)", "out", ["constructed"])),
                    ("tcp://owner", ("(replica_a_M_t1 pid=7)", "err", ["a warning"]))]
    sent.clear()
    out.subscribe("tcp://driver")
    out.subscribe("tcp://owner")  # the owner gets everything already: never twice
    assert sent == [("tcp://driver", ("(replica_a_M_t1 pid=7)", "out", ["constructed"])),
                    ("tcp://driver", ("(replica_a_M_t1 pid=7)", "err", ["a warning"]))]
    sent.clear()
    out.write("out", b"ial line\n")
    assert sorted(a for a, _ in sent) == ["tcp://driver", "tcp://owner"]
    assert all(args[2] == ["partial line"] for _, args in sent)
    out.unsubscribe("tcp://driver")
    sent.clear()
    out.write("out", b"later\n")
    assert [a for a, _ in sent] == ["tcp://owner"]
    out.close()
    assert (tmp_path / "replica_a_M_t1.out").read_text() == "constructed\npartial line\nlater\n"
    assert (tmp_path / "replica_a_M_t1.err").read_text() == "a warning\n"


# -- `zeroserve logs` targets ---------------------------------------------------------------------


def _files() -> list[LogFile]:
    names = ["head.log", "head.out", "agent-127.0.0.1.log", "controller.out", "proxy_127.0.0.1.out",
             "replica_app1_Model_aa11.out", "replica_app1_Model_aa11.err", "replica_app1_Pre_bb22.out",
             "replica_app2_Other_cc33.out", "replica_app1_Model_aa11.out.1", "Counter-0123abcd.out", "mine.out"]
    out = [LogFile("127.0.0.1", "tcp://a", n, 1, 0.0) for n in names]
    out.append(LogFile("127.0.0.2", "tcp://b", "named_actor_file.out", 1, 0.0, actor_id="feed", class_name="Kv",
                       actor_name="store"))
    return out


SUMMARY = {"Model": {"app": "app1"}, "Pre": {"app": "app1"}, "Other": {"app": "app2"}}


@pytest.mark.parametrize(("target", "ids", "expected"), [
    ("head", set(), ["head.log", "head.out"]),
    ("agent", set(), ["agent-127.0.0.1.log"]),
    ("controller", set(), ["controller.out"]),
    ("proxy", set(), ["proxy_127.0.0.1.out"]),
    ("app1", set(), ["replica_app1_Model_aa11.out", "replica_app1_Model_aa11.err", "replica_app1_Pre_bb22.out"]),
    ("Model", set(), ["replica_app1_Model_aa11.out", "replica_app1_Model_aa11.err"]),
    ("Pre#bb22", set(), ["replica_app1_Pre_bb22.out"]),
    ("store", {"feed"}, ["named_actor_file.out"]),
    ("0123abcd", set(), ["Counter-0123abcd.out"]),
    ("mine", set(), ["mine.out"]),
    ("nothing", set(), []),
])
def test_targets_select_their_current_files(target: str, ids: set[str], expected: list[str]) -> None:
    assert [f.name for f in select_files(target, _files(), SUMMARY, ids)] == expected


# -- code sent by value --------------------------------------------------------------------------


def test_code_sent_by_value_keeps_its_file_name() -> None:
    namespace: dict = {"__name__": "__main__"}
    exec(compile("def boom():\n    raise ValueError('x')\n", "/home/me/script.py", "exec"), namespace)
    fn = namespace["boom"]
    assert isinstance(fn, types.FunctionType)
    clone = pickle.loads(dumps_code(fn))
    assert clone is not fn and clone.__code__.co_filename == "/home/me/script.py"
    with pytest.raises(ValueError) as e:
        clone()
    assert str(e.traceback[-1].path) == "/home/me/script.py"
