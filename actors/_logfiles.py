"""Log files of a node: their names, their rotation, and the format of the cluster's own logs.

Every log file of a node lives in its session's `logs/` directory:

    head.log, agent-<ip>.log      the head's and the agent's records (time, level, logger, pid)
    head.out, agent-<ip>.out      their raw stdout/stderr (start-up failures, stray prints)
    <log name>.out / .err         a worker's stdout / stderr, written by its agent
    zygote-<ip>.log               the fork server's output

A worker's log name is its actor's `log_name` option (the serving layer names replicas
`replica_<app>_<deployment>_<tag>`, proxies `proxy_<node ip>` and the controller
`controller`), else `<Class>-<actor id>`; incarnations of one actor, and actors sharing a
log name, append to the same files.

Invariants: a log name is a plain file name (`validate_log_name`); every file is rotated
by size — at `max_bytes` it becomes `<file>.1`, `.1` becomes `.2`, ... and the oldest past
`backups` is deleted — so a node keeps at most (backups + 1) * max_bytes per log (only a
head or agent record longer than max_bytes by itself goes over). Sizes come from
`$ZEROSERVE_LOG_MAX_BYTES` (default 100 MiB) and `$ZEROSERVE_LOG_BACKUPS` (default 5),
which `zeroserve start --log-max-bytes / --log-backups` set for the node's processes.
"""

from __future__ import annotations

import logging
import logging.handlers
import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "LOG_FORMAT",
    "LogRotation",
    "RotatingWriter",
    "configure_process_logging",
    "safe_log_name",
    "validate_log_name",
]

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s pid=%(process)d %(message)s"
MAX_BYTES_ENV = "ZEROSERVE_LOG_MAX_BYTES"
BACKUPS_ENV = "ZEROSERVE_LOG_BACKUPS"
DEFAULT_MAX_BYTES = 100 * 1024 * 1024
DEFAULT_BACKUPS = 5
MIN_MAX_BYTES = 1024
MAX_LOG_NAME = 128
_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*")
_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]+")


def validate_log_name(name: object) -> str:
    """`name` if it can name log files (letters, digits, `_`, `.`, `-`; not starting with
    `.` or `-`; at most 128 characters); else a ValueError saying what to change."""
    if not isinstance(name, str) or not name:
        raise ValueError(f"actor option log_name must be a non-empty string, got {name!r}")
    if len(name) > MAX_LOG_NAME or not _NAME.fullmatch(name):
        raise ValueError(f"actor option log_name must be at most {MAX_LOG_NAME} characters of letters, digits, "
                         f"'_', '.' and '-', not starting with '.' or '-' (it names files), got {name!r}; "
                         "actors.system.safe_log_name(text) makes one from any text")
    return name


def safe_log_name(*parts: str) -> str:
    """A valid log name from any texts: joined by `_`, other characters replaced by `-`."""
    text = "_".join(_UNSAFE.sub("-", p) for p in parts).lstrip(".-") or "_"
    return text[:MAX_LOG_NAME]


@dataclass(frozen=True, slots=True)
class LogRotation:
    """How a log file is rotated: at `max_bytes`, keeping `backups` older files."""

    max_bytes: int = DEFAULT_MAX_BYTES
    backups: int = DEFAULT_BACKUPS

    def __post_init__(self) -> None:
        check_rotation(self.max_bytes, self.backups)

    @classmethod
    def from_env(cls) -> "LogRotation":
        """From `$ZEROSERVE_LOG_MAX_BYTES` / `$ZEROSERVE_LOG_BACKUPS` (ValueError if malformed)."""
        return cls(_env_int(MAX_BYTES_ENV, DEFAULT_MAX_BYTES), _env_int(BACKUPS_ENV, DEFAULT_BACKUPS))

    def env(self) -> dict[str, str]:
        """The environment that gives a node's processes this rotation."""
        return {MAX_BYTES_ENV: str(self.max_bytes), BACKUPS_ENV: str(self.backups)}


def check_rotation(max_bytes: object, backups: object) -> None:
    if isinstance(max_bytes, bool) or not isinstance(max_bytes, int) or max_bytes < MIN_MAX_BYTES:
        raise ValueError(f"the log size limit (--log-max-bytes, ${MAX_BYTES_ENV}) must be an integer >= "
                         f"{MIN_MAX_BYTES} bytes, got {max_bytes!r}")
    if isinstance(backups, bool) or not isinstance(backups, int) or backups < 1:
        raise ValueError(f"the number of rotated log files kept (--log-backups, ${BACKUPS_ENV}) must be an "
                         f"integer >= 1, got {backups!r}")


def _env_int(name: str, default: int) -> int:
    text = os.environ.get(name, "").strip()
    if not text:
        return default
    try:
        return int(text)
    except ValueError:
        raise ValueError(f"${name} must be an integer, got {text!r}") from None


def rotate_files(path: Path, backups: int) -> None:
    """`path` -> `path.1` -> ... -> `path.<backups>`; the oldest is dropped."""
    for i in range(backups - 1, 0, -1):
        src = path.with_name(f"{path.name}.{i}")
        if src.exists():
            os.replace(src, path.with_name(f"{path.name}.{i + 1}"))
    if path.exists():
        os.replace(path, path.with_name(f"{path.name}.1"))


class RotatingWriter:
    """Appends bytes to one log file, rotating it by size (for worker output, which the
    agent writes as it arrives). Writers are shared per path (`open`/`close` count the
    users), so workers that share a log name rotate one file, not two."""

    _open: dict[Path, "RotatingWriter"] = {}

    def __init__(self, path: Path, rotation: LogRotation) -> None:
        self.path = path
        self.rotation = rotation
        self.users = 0
        self._file = open(path, "ab", buffering=0)
        self._size = self._file.tell()

    @classmethod
    def open(cls, path: Path, rotation: LogRotation) -> "RotatingWriter":
        w = cls._open.get(path)
        if w is None:
            w = cls._open[path] = cls(path, rotation)
        w.users += 1
        return w

    def write(self, data: bytes) -> None:
        """Append `data`, rotating first where it would pass `max_bytes`: whole lines stay
        in one file (a line longer than `max_bytes` is split), so no file passes the limit."""
        limit = self.rotation.max_bytes
        while data:
            room = limit - self._size
            if len(data) <= room:
                self._append(data)
                return
            cut = data.rfind(b"\n", 0, room) + 1  # the whole lines that fit
            if cut == 0:
                if self._size:
                    self._rotate()
                    continue
                cut = room  # a line longer than a whole file
            self._append(data[:cut])
            data = data[cut:]
            self._rotate()

    def _append(self, data: bytes) -> None:
        self._file.write(data)
        self._size += len(data)

    def _rotate(self) -> None:
        self._file.close()
        rotate_files(self.path, self.rotation.backups)
        self._file = open(self.path, "ab", buffering=0)
        self._size = 0

    def close(self) -> None:
        self.users -= 1
        if self.users <= 0:
            self._file.close()
            if self._open.get(self.path) is self:
                del self._open[self.path]


def configure_process_logging(log_file: str | None, level: int = logging.INFO, *, also_stdout: bool = False) -> None:
    """The root logger of a cluster process (head, agent): records with time, level,
    logger name and pid, to `log_file` rotated by `LogRotation.from_env()` (and to stdout
    too if `also_stdout`: a node in the foreground), or to stdout."""
    handlers: list[logging.Handler] = []
    if log_file:
        rotation = LogRotation.from_env()
        handlers.append(logging.handlers.RotatingFileHandler(log_file, maxBytes=rotation.max_bytes,
                                                             backupCount=rotation.backups, encoding="utf-8"))
    if not log_file or also_stdout:
        handlers.append(logging.StreamHandler(sys.stdout))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    for handler in handlers:
        handler.setFormatter(logging.Formatter(LOG_FORMAT))
        root.addHandler(handler)
    root.setLevel(level)
