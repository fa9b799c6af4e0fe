"""Records of embedded clusters (`<base>/embedded/<pid>.json`, read by `zeroserve status`
and `logs`) pass the same trust checks as `zeroserve start`'s node records: a private
directory of ours, and a token file inside one of our sessions."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

from actors import InsecureSessionDirError
from actors.system import Session, find_local_head


@pytest.fixture
def base(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "zs"
    monkeypatch.setenv("ZEROSERVE_TMPDIR", str(path))
    return path


def _plant(base: Path, token_file: str, name: str = "1.json") -> None:
    folder = base / "embedded"
    folder.mkdir(mode=0o700, exist_ok=True)
    me = os.getpid()  # alive: the record counts as a running cluster
    (folder / name).write_text(json.dumps({"head_address": "tcp://127.0.0.1:1", "token_file": token_file,
                                           "pids": {"driver": me, "head": me}, "started_at": time.time()}))


def test_an_embedded_record_with_a_token_of_ours_is_found(base: Path) -> None:
    session = Session.create("a-token")
    _plant(base, str(session.token_file))
    found = find_local_head(include_embedded=True)
    assert found is not None and found["token_file"] == str(session.token_file)
    assert find_local_head() is None  # address="auto" joins only `zeroserve start`'s clusters


def test_an_embedded_record_whose_token_is_not_in_our_sessions_is_ignored(base: Path, tmp_path: Path) -> None:
    Session.create("a-token")  # makes the base directory, ours and private
    outside = tmp_path / "elsewhere-token"
    outside.write_text("attacker-token")
    os.chmod(outside, 0o600)
    _plant(base, str(outside))
    assert find_local_head(include_embedded=True) is None


def test_an_embedded_directory_others_can_write_is_refused(base: Path) -> None:
    session = Session.create("a-token")
    _plant(base, str(session.token_file))
    os.chmod(base / "embedded", 0o777)
    with pytest.raises(InsecureSessionDirError, match="writable by others"):
        find_local_head(include_embedded=True)


def test_stopping_after_the_watcher_closed_its_wake_pipe_is_quiet(base: Path) -> None:
    """Ctrl-C reaches the whole group: the head and agent may exit first, and the watcher,
    seeing the driver stopping, closes its end of the wake pipe before `stop` writes to it.
    That write finds no reader; `stop` must not fail on it (it did: BrokenPipeError)."""
    from actors._local import LocalCluster

    cluster = LocalCluster()
    os.close(cluster._wake_r)  # what the watcher does once it sees `_stopped`
    cluster.stop()
    assert cluster._wake_w == -1
