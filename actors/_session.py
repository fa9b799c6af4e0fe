"""Session directories: where a cluster keeps its token, logs and the address files that
let `address="auto"` find it.

Layout under the base directory (`$ZEROSERVE_TMPDIR`, default `/tmp/zeroserve`)::

    session-<time>-<pid>/token          the cluster token, mode 0600
    session-<time>-<pid>/logs/          head.log, agent-<ip>.log, <log name>.out/.err (see _logfiles)
    nodes/<ip>.json                     written by `zeroserve start` for that node
    embedded/<driver pid>.json          written by an embedded cluster while it runs
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

from ._security import new_token

__all__ = ["Session", "base_dir", "read_token", "node_files", "find_local_head", "embedded_files"]


def base_dir() -> Path:
    return Path(os.environ.get("ZEROSERVE_TMPDIR", "/tmp/zeroserve"))


@dataclass(frozen=True, slots=True)
class Session:
    path: Path

    @property
    def token_file(self) -> Path:
        return self.path / "token"

    @property
    def logs(self) -> Path:
        return self.path / "logs"

    @classmethod
    def create(cls, token: str | None = None) -> "Session":
        base = base_dir()
        base.mkdir(mode=0o700, parents=True, exist_ok=True)
        stamp = time.strftime("%Y%m%d-%H%M%S")
        path = base / f"session-{stamp}-{os.getpid()}-{os.urandom(2).hex()}"
        path.mkdir(mode=0o700)
        (path / "logs").mkdir(mode=0o700)
        session = cls(path)
        write_token(session.token_file, token or new_token())
        return session


def write_token(path: Path, token: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(token)
    os.chmod(path, 0o600)


def read_token(path: str | Path) -> str:
    token = Path(path).read_text().strip()
    if not token:
        raise ValueError(f"the token file {path} is empty")
    return token


def node_files() -> list[Path]:
    d = base_dir() / "nodes"
    return sorted(d.glob("*.json")) if d.is_dir() else []


def embedded_files() -> list[Path]:
    d = base_dir() / "embedded"
    return sorted(d.glob("*.json")) if d.is_dir() else []


def _pid_alive(pid: object) -> bool:
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _live_embedded() -> list[dict]:
    """Records of embedded clusters whose driver and head still run, newest first."""
    found = []
    for f in embedded_files():
        try:
            rec = json.loads(f.read_text())
        except (OSError, ValueError):
            continue
        if isinstance(rec, dict) and all(_pid_alive(rec.get("pids", {}).get(k)) for k in ("driver", "head")):
            found.append(rec)
    found.sort(key=lambda r: r.get("started_at", 0), reverse=True)
    return found


def find_local_head(*, include_embedded: bool = False) -> dict | None:
    """The record of the cluster started on this machine by `zeroserve start`, if any;
    with `include_embedded`, else the newest embedded cluster still running here (for
    tools such as `zeroserve status` and `logs`; `address="auto"` joins only the former)."""
    heads = []
    for f in node_files():
        try:
            rec = json.loads(f.read_text())
        except (OSError, ValueError):
            continue
        heads.append(rec)
    heads.sort(key=lambda r: (not r.get("is_head", False), r.get("started_at", 0)))
    if heads:
        return heads[0]
    if include_embedded:
        embedded = _live_embedded()
        return embedded[0] if embedded else None
    return None
