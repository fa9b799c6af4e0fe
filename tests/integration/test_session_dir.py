"""Another local user must not take a driver or `zeroserve stop` over through the
session directory (the drill: a world-writable `/tmp/zeroserve` made first by someone
else, with a node record pointing at their own "head" and token, had the victim's
driver unpickle their reply and `zeroserve stop` kill the PIDs they named).

Each test runs the real commands in a base directory of its own; "another user" is
uid 65534 where the test runs as root (chown, setuid), else the case is simulated by
the mode alone.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from actors.system import base_dir

from ..conftest import ROOT, driver_env, pid_alive

OTHER_UID = 65534
AS_ROOT = os.getuid() == 0


def _run(tmpdir: Path, *args: str, code: str | None = None) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-c", textwrap.dedent(code)] if code else [
        sys.executable, "-c", "import sys; from cluster.cli import main; sys.exit(main())", *args]
    return subprocess.run(cmd, env=driver_env(ZEROSERVE_TMPDIR=str(tmpdir)), capture_output=True, text=True,
                          timeout=60, cwd=str(ROOT))


class Decoy:
    """A TCP listener standing in for the attacker's head: did anyone connect?"""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.sock.setblocking(False)
        self.address = f"tcp://127.0.0.1:{self.sock.getsockname()[1]}"

    def contacted(self) -> bool:
        try:
            conn, _ = self.sock.accept()
        except BlockingIOError:
            return False
        conn.close()
        return True

    def close(self) -> None:
        self.sock.close()


def _plant(base: Path, head_address: str, token_file: str, pids: dict[str, int] | None = None,
           session: str = "") -> None:
    nodes = base / "nodes"
    nodes.mkdir(parents=True, exist_ok=True)
    (nodes / "127.0.0.1.json").write_text(json.dumps({
        "node_ip": "127.0.0.1", "head_address": head_address, "is_head": True, "session": session,
        "token_file": token_file, "pids": pids or {}, "node_id": "x", "started_at": 1.0}))


_AUTO = """
    import actors
    try:
        actors.init(address="auto")
    except Exception as e:
        print(type(e).__name__, e)
    else:
        print("CONNECTED")
"""


@pytest.mark.parametrize("how", ["world-writable", "someone else's"])
def test_a_base_directory_others_can_write_is_refused(tmp_path: Path, how: str) -> None:
    base = tmp_path / "zs"
    base.mkdir()
    decoy = Decoy()
    try:
        evil_token = tmp_path / "evil-token"
        evil_token.write_text("attacker-token")
        _plant(base, decoy.address, str(evil_token))
        if how == "world-writable":
            os.chmod(base, 0o777)
            expected = "writable by others (mode 0777)"
        else:
            if not AS_ROOT:
                pytest.skip("needs root to give the directory to another user")
            os.chown(base, OTHER_UID, OTHER_UID)
            expected = f"belongs to uid {OTHER_UID}"
        driver = _run(base, code=_AUTO)
        assert "InsecureSessionDirError" in driver.stdout and expected in driver.stdout, driver.stdout + driver.stderr
        assert "ZEROSERVE_TMPDIR" in driver.stdout
        for args in (("status",), ("stop",), ("start", "--head", "--port", "0")):
            cli = _run(base, *args)
            assert cli.returncode == 1 and expected in cli.stderr, (args, cli.stdout, cli.stderr)
            assert "Traceback" not in cli.stderr
        assert not decoy.contacted(), "something connected to the planted head address"
    finally:
        decoy.close()


def test_a_record_whose_token_is_not_ours_is_ignored(tmp_path: Path) -> None:
    base = tmp_path / "zs"
    base.mkdir(mode=0o700)
    decoy = Decoy()
    try:
        outside = tmp_path / "elsewhere" / "token"  # ours, 0600, but not in one of our sessions
        outside.parent.mkdir()
        outside.write_text("attacker-token")
        os.chmod(outside, 0o600)
        _plant(base, decoy.address, str(outside))
        driver = _run(base, code=_AUTO)
        assert "found no cluster" in driver.stdout, driver.stdout + driver.stderr
        assert "ignoring the node record" in driver.stderr
        session = base / "session-1"  # in the right place, but readable by others
        session.mkdir(mode=0o700)
        (session / "token").write_text("t")
        os.chmod(session / "token", 0o644)
        _plant(base, decoy.address, str(session / "token"))
        assert "found no cluster" in _run(base, code=_AUTO).stdout
        assert not decoy.contacted(), "the driver connected to the planted head address"
    finally:
        decoy.close()


def test_stop_signals_only_processes_that_are_really_the_records(tmp_path: Path) -> None:
    base = tmp_path / "zs"
    base.mkdir(mode=0o700)
    session = str(base / "session-x")
    # (a shell, so another user can run it too; `; :` keeps it from exec-ing sleep)
    looks_like_ours = ["/bin/sh", "-c", "sleep 120; :", "-m", "cluster", "agent", "--session-dir", session]
    procs = []
    try:
        # Ours and with the right command line, but not the process the record saw start
        # (a reused pid): its start time differs.
        reused = subprocess.Popen(looks_like_ours)
        procs.append(reused)
        # Not ours at all, with the command line copied.
        foreign = subprocess.Popen(looks_like_ours, preexec_fn=(lambda: os.setuid(OTHER_UID)) if AS_ROOT else None)
        procs.append(foreign)
        # Ours, started when recorded, but some other program.
        other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
        procs.append(other)
        import psutil

        pids = {"agent": reused.pid, "head": foreign.pid, "driver": other.pid}
        started = {"agent": psutil.Process(reused.pid).create_time() - 50,
                   "head": psutil.Process(foreign.pid).create_time(), "driver": psutil.Process(other.pid).create_time()}
        nodes = base / "nodes"
        nodes.mkdir(mode=0o700)
        (nodes / "127.0.0.1.json").write_text(json.dumps({
            "node_ip": "127.0.0.1", "head_address": "tcp://127.0.0.1:1", "is_head": True, "session": session,
            "token_file": session + "/token", "pids": pids, "node_id": "x", "started_at": 1.0,
            "pid_started": started}))
        # An older record without start times: nothing in it can be verified.
        (nodes / "127.0.0.2.json").write_text(json.dumps({
            "node_ip": "127.0.0.2", "head_address": "tcp://127.0.0.1:1", "is_head": False, "session": session,
            "token_file": session + "/token", "pids": {"agent": foreign.pid, "head": reused.pid}, "node_id": "y",
            "started_at": 1.0}))
        out = _run(base, "stop")
        assert out.returncode == 0, out.stderr
        assert "nothing to stop" in out.stdout
        assert all(pid_alive(p.pid) for p in procs), "zeroserve stop signalled a process that was not the node's"
    finally:
        for p in procs:
            p.kill()
            p.wait()


def test_the_default_base_directory_is_per_user(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ZEROSERVE_TMPDIR")
    assert base_dir() == Path(f"/tmp/zeroserve-{os.getuid()}")
