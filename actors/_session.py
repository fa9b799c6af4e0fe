"""Session directories: where a cluster keeps its token, logs and the address files that
let `address="auto"` find it.

Layout under the base directory (`$ZEROSERVE_TMPDIR`, default `/tmp/zeroserve-<uid>`,
one per user)::

    session-<time>-<pid>/token          the cluster token, mode 0600
    session-<time>-<pid>/logs/          head.log, agent-<ip>.log, <log name>.out/.err (see _logfiles)
    nodes/<ip>.json                     written by `zeroserve start` for that node
    embedded/<driver pid>.json          written by an embedded cluster while it runs

Trust: what is read from here decides which address a driver connects to and which
token it presents, so another local user must not be able to plant anything in it.
- The base directory, `nodes/` and `embedded/` must be real directories (not symbolic
  links) owned by this user and writable by no one else; otherwise
  `InsecureSessionDirError` says so and nothing in them is read or written. A missing
  base is created mode 0700.
- A node or embedded-cluster record is used only if its file is a regular file we own and
  its token file is `<base>/session-*/token`, a regular file we own with mode 0600 in a
  directory we own.
"""

from __future__ import annotations

import json
import logging
import os
import stat
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ._security import new_token
from .exceptions import InsecureSessionDirError

__all__ = ["Session", "base_dir", "read_token", "node_files", "embedded_files", "find_local_head", "secure_base",
           "secure_dir", "trusted_token_file", "write_token"]

log = logging.getLogger(__name__)


def base_dir() -> Path:
    """`$ZEROSERVE_TMPDIR`, else `/tmp/zeroserve-<uid>` (not checked: see `secure_dir`)."""
    configured = os.environ.get("ZEROSERVE_TMPDIR")
    return Path(configured) if configured else Path(f"/tmp/zeroserve-{os.getuid()}")


def _unsafe(st: os.stat_result, what: str, path: Path) -> str | None:
    me = os.getuid()
    if stat.S_ISLNK(st.st_mode):
        return f"{what} {path} is a symbolic link"
    if not stat.S_ISDIR(st.st_mode):
        return f"{what} {path} is not a directory"
    if st.st_uid != me:
        return f"{what} {path} belongs to uid {st.st_uid}, not to you (uid {me})"
    if st.st_mode & 0o022:
        return f"{what} {path} is writable by others (mode {stat.S_IMODE(st.st_mode):04o})"
    return None


def secure_dir(path: Path, what: str = "the zeroserve directory", create: bool = True) -> Path:
    """`path`, checked (and created 0700 if missing and `create`): ours, a real
    directory, writable by no one else. Raises InsecureSessionDirError otherwise."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        if not create:
            return path
        try:
            os.makedirs(path, mode=0o700, exist_ok=False)
        except FileExistsError:
            pass  # another process of ours made it just now; checked below
        st = os.lstat(path)
    problem = _unsafe(st, what, path)
    if problem is not None:
        raise InsecureSessionDirError(
            f"{problem}: another local user could plant node records or tokens there and take over "
            f"your drivers and `zeroserve stop`. Remove it (or fix its owner and mode: chmod 700), "
            f"or set $ZEROSERVE_TMPDIR to a directory only you can write")
    return path


def secure_base(create: bool = True) -> Path:
    return secure_dir(base_dir(), "the zeroserve base directory", create)


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
    def create(cls, token: str | None = None) -> Session:
        base = secure_base()
        stamp = time.strftime("%Y%m%d-%H%M%S")
        path = base / f"session-{stamp}-{os.getpid()}-{os.urandom(2).hex()}"
        path.mkdir(mode=0o700)
        (path / "logs").mkdir(mode=0o700)
        session = cls(path)
        write_token(session.token_file, token or new_token())
        return session


def write_token(path: Path, token: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(token)
    os.chmod(path, 0o600)


def read_token(path: str | Path) -> str:
    token = Path(path).read_text().strip()
    if not token:
        raise ValueError(f"the token file {path} is empty")
    return token


def trusted_token_file(path: str | Path) -> Path | None:
    """`path` if it is a token file a session of ours wrote under our base directory:
    `<base>/session-*/token`, a regular file we own, mode 0600, in a directory we own
    that no one else can write. None otherwise."""
    p = Path(path)
    base = base_dir()
    session = p.parent
    if p.name != "token" or session.parent != base or not session.name.startswith("session-"):
        return None
    try:
        secure_dir(session, "the session directory", create=False)
        st = os.lstat(p)
    except (OSError, InsecureSessionDirError):
        return None
    if not stat.S_ISREG(st.st_mode) or st.st_uid != os.getuid() or stat.S_IMODE(st.st_mode) & 0o077:
        return None
    return p


def _record_files(sub: str, what: str) -> list[Path]:
    """The regular files we own in `<base>/<sub>/*.json` (raises if a directory is not safe)."""
    base = base_dir()
    if not os.path.lexists(base):
        return []
    secure_base(create=False)
    d = base / sub
    if not os.path.lexists(d):
        return []
    secure_dir(d, what, create=False)
    out = []
    for f in sorted(d.glob("*.json")):
        try:
            st = os.lstat(f)
        except OSError:
            continue
        if stat.S_ISREG(st.st_mode) and st.st_uid == os.getuid():
            out.append(f)
    return out


def node_files() -> list[Path]:
    """The node records under our base directory (raises if the directory is not safe)."""
    return _record_files("nodes", "the node records directory")


def _load(f: Path, what: str = "node record") -> dict[str, Any] | None:
    try:
        rec = json.loads(f.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(rec, dict) or not isinstance(rec.get("head_address"), str):
        return None
    token = rec.get("token_file")
    if not isinstance(token, str) or trusted_token_file(token) is None:
        log.warning("ignoring the %s %s: its token file %r is not a private token file of one of "
                    "your sessions under %s", what, f, token, base_dir())
        return None
    return rec


def embedded_files() -> list[Path]:
    """The embedded clusters' records under our base directory (raises if not safe)."""
    return _record_files("embedded", "the embedded cluster records directory")


def pid_alive(pid: object) -> bool:
    """Whether `pid` (anything: a record's field) names a live process, ours or not."""
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
    """Trusted records of embedded clusters whose driver and head still run, newest first."""
    found = []
    for f in embedded_files():
        rec = _load(f, "embedded cluster record")
        if rec is not None and all(pid_alive(rec.get("pids", {}).get(k)) for k in ("driver", "head")):
            found.append(rec)
    found.sort(key=lambda r: r.get("started_at", 0), reverse=True)
    return found


def find_local_head(*, include_embedded: bool = False) -> dict | None:
    """The record of the cluster started on this machine by `zeroserve start`, if any;
    with `include_embedded`, else the newest embedded cluster still running here (for
    tools such as `zeroserve status` and `logs`; `address="auto"` joins only the former).
    Only records that pass the trust checks above."""
    heads = [rec for f in node_files() if (rec := _load(f)) is not None]
    heads.sort(key=lambda r: (not r.get("is_head", False), r.get("started_at", 0)))
    if heads:
        return heads[0]
    if include_embedded:
        embedded = _live_embedded()
        return embedded[0] if embedded else None
    return None
