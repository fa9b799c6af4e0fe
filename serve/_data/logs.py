"""Serve's logs in its own processes (replicas, proxies, the controller): one log file per
component, its records and its access log, as `LoggingConfig` says.

`configure(who, config)` points the process's root logger at `<logs_dir>/<who.file>.log`:
every record at or above `log_level`, from any logger, is written there with time, level,
the component (deployment and replica id, or proxy and node ip, or controller), the request
id and route of the request being handled (from `context.current_request`, or `fallback()`,
the proxy's own), as TEXT or one JSON object per line. The same records, as text, also go to
stderr (the worker's output, which its agent keeps and echoes to the driver). It returns an
`AccessLog` (or None when `enable_access_log` is off or the level is above INFO): one line
per request, written to the file only.

Costs, on the request path: a request's record is one tuple of its fields (no LogRecord,
no formatting, no counting) queued for the file; the process's event loop takes the queue
every FLUSH_S (a thread does where no loop runs: see `_Flusher`), at once after a WARNING
or worse, before each metrics scrape, and at exit: it hands the batch to the owner's
`tally` (its `serve_*` metrics, counted in one loop) and ships it to the node's agent,
which renders the access lines and writes the file (`actors.system.ship`:
rendering and writing was most of the serving process's share; marshalling a batch costs a
fifth of that). With the access log off nothing is queued. (Code run once per request costs
several times what it costs in a tight loop, its data being cold in the caches: formatting
the line in the request cost 10-15 us of CPU per request per process under load, and
counting it 4-6 us.)
Files rotate by size: `$ZEROSERVE_LOG_MAX_BYTES` (100 MiB) and `$ZEROSERVE_LOG_BACKUPS` (5)
old files kept (`name.log.1` is the newest), as the runtime's own log files; the agent
rotates them by its node's sizes, which its processes inherit.

Serve's own components (the proxies, the controller) write to stderr only from WARNING up (it
is echoed to the driver); a replica writes its records there at its level, so the user's
logging shows in the driver as in Ray.
"""

from __future__ import annotations

import asyncio
import atexit
import collections
import json
import logging
import operator
import os
import sys
import threading
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from actors.system import RECORD, LineSpec, asctime, drain_shipped, push, render_text, rotate_files, safe_log_name, ship

from .._obs_config import LoggingConfig
from . import counting
from .context import APP, NO_REQUEST, RID, ROUTE, current_request

__all__ = ["AccessLog", "FLUSH_S", "LAST_LINES_S", "LogFile", "RECORD", "Tally", "Who", "configure", "flush", "latencies_by",
           "log_path"]

FLUSH_S = 0.2
STALE_S = 1.0  # a loop that has not flushed for this long is flushed for by the thread
LAST_LINES_S = 2.0  # how long a stopping process waits for its agent to take its last lines
ACCESS_LOGGER = "serve.access"
_DASH = "-"


@dataclass(frozen=True, slots=True)
class Who:
    """A component writing logs: `name` and `id` appear in each record (a replica: its
    deployment and replica id; a proxy: "proxy" and its node ip); `file` names its file."""

    name: str
    id: str
    file: str
    kind: str = "replica"  # replica | proxy | controller
    app: str = ""

    @classmethod
    def replica(cls, app: str, deployment: str, tag: str) -> Who:
        return cls(deployment, f"{app}#{deployment}#{tag}", f"replica_{app}_{deployment}_{tag}", "replica", app)  # the id as str(ReplicaId)

    @classmethod
    def proxy(cls, node_ip: str, worker: int = 0) -> Who:
        """A proxy; a node's proxy workers after the first write files of their own."""
        return cls("proxy", node_ip, f"proxy_{node_ip}" + (f"_{worker}" if worker else ""), "proxy")

    @classmethod
    def controller(cls) -> Who:
        return cls("controller", _DASH, "controller", "controller")


def _env_int(name: str, default: int) -> int:
    try:
        return int(os.environ.get(name, default))
    except ValueError:
        return default


def log_path(who: Who, config: LoggingConfig, default_dir: Path | None) -> Path:
    """Where `who` writes with `config`: its `logs_dir`, else the node's log directory."""
    if config.logs_dir:
        base = Path(config.logs_dir)
    elif default_dir is not None:
        base = default_dir
    else:
        from actors.system import base_dir

        base = base_dir() / "logs"
    return base / f"{safe_log_name(who.file)}.log"  # as the runtime names worker log files


# -- files -----------------------------------------------------------------------------------
def _text_only(queued: list[str | tuple]) -> list[str | tuple]:
    for line in queued:
        if type(line) is not str:
            raise TypeError("a request's record queued to a file without an AccessLog")
    return queued


class LogFile:
    """A log file of this process. `write` only queues the line (a deque append: the request
    path never waits for the file); the queue is taken every FLUSH_S (by the process's loop:
    see `_Flusher`), at once for an urgent record, and at exit. A queued item is a line's
    text, or the record of a request (a RECORD tuple). A batch goes first to `prepare` (set
    by the file's AccessLog: it tallies the records, and renders them itself in JSON), then
    to the node's agent, which renders the records' text lines with `spec` and appends them
    to the file, rotated by the node's rotation (`actors.system.ship`). A process without an
    agent renders and writes the batch itself, rotated by size between lines: a file holds
    at most `max_bytes` (unless one line is longer), and `backups` older files are kept."""

    def __init__(self, path: Path, max_bytes: int | None = None, backups: int | None = None) -> None:
        self.path = path
        self.max_bytes = max_bytes if max_bytes is not None else _env_int("ZEROSERVE_LOG_MAX_BYTES", 100 << 20)
        self.backups = backups if backups is not None else _env_int("ZEROSERVE_LOG_BACKUPS", 5)
        self._pending: collections.deque[str | tuple] = collections.deque()
        self.prepare: Callable[[list[str | tuple]], list[str | tuple]] = _text_only
        self.spec: LineSpec = ("", "")
        self._lock = threading.Lock()  # the file: writes and rotation
        self._f: TextIO | None = None  # written here only when there is no agent to ship to
        self._size = 0
        self._closed = False
        path.parent.mkdir(parents=True, exist_ok=True)
        open(path, "a").close()  # the file exists from now on; a logs_dir this process cannot write fails here
        _flusher.add(self)

    def write(self, text: str, urgent: bool = False) -> None:
        self._pending.append(text)
        if urgent:
            self.flush()

    def flush(self) -> None:
        pending = self._pending
        if not pending:
            return
        with self._lock:
            if self._closed:
                return
            popleft = pending.popleft
            queued = [popleft() for _ in range(len(pending))]  # what is queued now (others may append meanwhile)
            items = self.prepare(queued)
            if not ship(self.path, self.spec, items):
                self._write(render_text(items, self.spec))

    def _open(self) -> TextIO:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        f = self._f = open(self.path, "a", encoding="utf-8", errors="replace")
        self._size = f.tell()
        return f

    def _write(self, lines: list[str]) -> None:
        text = "".join(lines)
        limit = self.max_bytes
        try:
            f = self._f or self._open()
            if limit <= 0 or self._size + len(text) <= limit:
                f.write(text)  # the common case: one write for the whole batch
                self._size += len(text)
            else:  # the file fills up in this batch: rotate between lines
                for line in lines:
                    if self._size and self._size + len(line) > limit:
                        f = self._rotate(f)
                    f.write(line)
                    self._size += len(line)
            f.flush()
        except OSError:
            pass

    def _rotate(self, f: TextIO) -> TextIO:
        f.close()
        if self.backups > 0:
            rotate_files(self.path, self.backups)
        else:
            self.path.unlink(missing_ok=True)
        return self._open()

    def close(self) -> None:
        self.flush()
        with self._lock:
            self._closed = True
            if self._f is not None:
                self._f.close()


class _Flusher:
    """Flushes every open LogFile each FLUSH_S: on the process's event loop once one is given
    (`drive_from`), else in a daemon thread (started with the first file). The thread stays as
    the backstop of a loop: it flushes when the loop has not for STALE_S (a loop blocked by
    user code, or gone).

    Why the loop: a flushing thread contends with the loop for the GIL; the same batches
    flushed on the loop took a replica 0.6-1.2 us less CPU per handle call, all its threads
    counted, and the agent 0.4-0.6 less (1,000 in flight, per-thread CPU of two clusters,
    rounds interleaved); over HTTP, 5.6% less CPU per request (proxy, replica and agent). A
    flush holds the loop for the batch's tally and marshal, about 1 us a request: some 2 ms
    every FLUSH_S at 10,000 requests/s."""

    def __init__(self) -> None:
        self._files: weakref.WeakSet[LogFile] = weakref.WeakSet()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_flushed = 0.0  # time.monotonic() of the loop's last flush

    def add(self, f: LogFile) -> None:
        with self._lock:
            self._files.add(f)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="serve-log-flush", daemon=True)
                self._thread.start()

    def drive_from(self, loop: asyncio.AbstractEventLoop) -> None:
        """Flush on `loop` from now on (called on it); again for the same loop: no change."""
        if loop is self._loop:
            return
        self._loop = loop
        self._loop_flushed = time.monotonic()
        loop.call_later(FLUSH_S, self._tick, loop)

    def _tick(self, loop: asyncio.AbstractEventLoop) -> None:
        if loop is not self._loop:  # another loop drives it now
            return
        self._loop_flushed = time.monotonic()
        loop.call_later(FLUSH_S, self._tick, loop)
        self.flush_all()

    def _run(self) -> None:
        atexit.register(self.flush_all)
        while True:
            time.sleep(FLUSH_S)
            if self._loop is None or time.monotonic() - self._loop_flushed > STALE_S:
                self.flush_all()

    def flush_all(self) -> None:
        for f in list(self._files):
            try:
                f.flush()
            except Exception as e:  # a line that cannot be formatted must not stop the flushing
                sys.stderr.write(f"serve: writing {f.path} failed: {type(e).__name__}: {e}\n")
        push()  # what the agent's pipe could not take before


_flusher = _Flusher()


# -- records ----------------------------------------------------------------------------------
class _Format:
    """Lines of one component in one encoding."""

    def __init__(self, who: Who, json_lines: bool, fallback: Callable[[], str] | None) -> None:
        self.who = who
        self.json = json_lines
        self.fallback = fallback
        # The fixed part of every JSON object, encoded once.
        self._json_who = json.dumps({"component_name": who.kind, "component_id": who.id,
                                     **({"deployment": who.name, "replica": who.id} if who.kind == "replica" else {})
                                     })[1:-1]

    def request(self) -> tuple[str, str, str]:
        """(request id, route, application) of the request being handled here."""
        ctx = current_request.get()
        if ctx is NO_REQUEST and self.fallback is not None:
            return self.fallback(), "", ""
        return ctx[RID], ctx[ROUTE], ctx[APP]

    def text(self, t: float, level: str, logger: str, request_id: str, message: str) -> str:
        who = self.who
        return f"{asctime(t)} {level} {who.name} {who.id} {request_id or _DASH} {logger}: {message}\n"

    def json_line(self, t: float, level: str, logger: str, request_id: str, route: str, app: str, message: str,
                  extra: dict | None = None) -> str:
        fields = {"asctime": asctime(t), "levelname": level, "logger": logger, "message": message,
                  "request_id": request_id, "route": route, "application": app or self.who.app}
        if extra:
            fields.update(extra)
        body = json.dumps(fields, default=str)
        return f"{body[:-1]}, {self._json_who}}}\n"


class _FileHandler(logging.Handler):
    """Records of any logger into the component's file, with its context."""

    def __init__(self, out: LogFile, fmt: _Format, level: int) -> None:
        super().__init__(level)
        self.out = out
        self.fmt = fmt
        self._exc = logging.Formatter()

    def emit(self, record: logging.LogRecord) -> None:
        try:
            message = record.getMessage()
            if record.exc_info and not record.exc_text:
                record.exc_text = self._exc.formatException(record.exc_info)
            rid, route, app = self.fmt.request()
            if self.fmt.json:
                extra = {"filename": record.filename, "lineno": record.lineno}
                if record.exc_text:
                    extra["exc_text"] = record.exc_text
                line = self.fmt.json_line(record.created, record.levelname, record.name, rid, route, app, message,
                                          extra)
            else:
                if record.exc_text:
                    message = f"{message}\n{record.exc_text}"
                line = self.fmt.text(record.created, record.levelname, record.name, rid, message)
            self.out.write(line, urgent=record.levelno >= logging.WARNING)
        except Exception:
            self.handleError(record)


class _StderrHandler(logging.Handler):
    """The same records as text on stderr (echoed to the driver); never access lines."""

    def __init__(self, fmt: _Format, level: int) -> None:
        super().__init__(level)
        self.fmt = fmt
        self._exc = logging.Formatter()

    def emit(self, record: logging.LogRecord) -> None:
        try:
            message = record.getMessage()
            if record.exc_info:
                message = f"{message}\n{self._exc.formatException(record.exc_info)}"
            rid = self.fmt.request()[0]
            sys.stderr.write(self.fmt.text(record.created, record.levelname, record.name, rid, message))
            sys.stderr.flush()
        except Exception:
            self.handleError(record)


# Counts a batch of queued items: the requests' records (tuples, as `AccessLog.write`
# queues them; see RECORD) among text lines (str, to skip).
Tally = Callable[[list], None]
_LATENCY = RECORD.index("latency_ms")


def latencies_by(queued: list, *fields: str) -> dict[tuple, list[float]]:
    """The latencies of a batch's records (for a `Tally`), grouped by the RECORD `fields`
    named (two or more: each group's key is the tuple of their values)."""
    key_of = operator.itemgetter(*[RECORD.index(f) for f in fields])
    groups: dict[tuple, list[float]] = {}
    last: tuple | None = None
    latencies: list[float] = []
    for item in queued:
        if type(item) is tuple:
            key = key_of(item)
            if key != last:  # records come in runs of one key: a dict lookup per run, not per record
                last = key
                latencies = groups.setdefault(key, [])
            latencies.append(item[_LATENCY])
    return groups


class AccessLog:
    """One line per request into the component's file (no LogRecord). The request path queues
    the request's record (its fields, as RECORD names them); the file's flush hands each
    batch to `tally` (the owner's metrics), then ships the records for the node's agent
    to render as text lines (see `LogFile`), or renders them as JSON itself. (A call of
    `tally` per record cost a third more than the counting in it.)"""

    __slots__ = ("_app_of", "_fmt", "_out", "_tally", "append")

    def __init__(self, out: LogFile, fmt: _Format, tally: Tally | None = None,
                 app_of: Callable[[Any], str] | None = None) -> None:
        self._out = out
        self._fmt = fmt
        self._tally = tally
        self._app_of = app_of
        # `append(record)` queues a RECORD tuple as `write` does, without a call of its own
        # (the owner's hook on the request path).
        self.append: Callable[[tuple], None] = out._pending.append
        out.flush()  # records queued earlier are written (and counted) as they were queued
        out.prepare = self._json_lines if fmt.json else self._records
        out.spec = (f" INFO {fmt.who.name} {fmt.who.id} ", f" {ACCESS_LOGGER}: ")

    def write(self, method: str, what: str, status: int | str, latency_ms: float, request_id: str,
              route: str = "", app: str = "", extra: Any = None, line: bool = True) -> None:
        """`method what status latency`: an HTTP request's method and route (or path), or
        "CALL" and the method of a handle call; `route` and `app` are the request's; `extra`
        is the owner's, for its tally (and for `app_of`, which finds the application of a
        record whose `app` is "": a JSON line has it). `line=False`: counted, but no line."""
        self.append((time.time(), method, what, status, latency_ms, request_id, route, app, extra, line))

    # A flush tallies a batch in one loop (a call per record cost more than its line).
    def _records(self, queued: list[str | tuple]) -> list[str | tuple]:
        if self._tally is not None:
            self._tally(queued)
        return queued

    def _json_lines(self, queued: list[str | tuple]) -> list[str | tuple]:
        if self._tally is not None:
            self._tally(queued)
        json_line, app_of = self._fmt.json_line, self._app_of
        lines: list[str | tuple] = []
        for item in queued:
            if isinstance(item, str):
                lines.append(item)
                continue
            t, method, what, status, latency_ms, request_id, route, app, extra, line = item
            if line:
                if not app and app_of is not None:
                    app = app_of(extra)
                lines.append(json_line(t, "INFO", ACCESS_LOGGER, request_id, route, app,
                                       f"{method} {what} {status} {latency_ms:.1f}ms",
                                       {"method": method, "status": status, "latency_ms": round(latency_ms, 3)}))
        return lines


_installed: list[logging.Handler] = []
_files: dict[Path, LogFile] = {}


def configure(who: Who, config: LoggingConfig | None, *, default_dir: Path | None = None,
              fallback: Callable[[], str] | None = None, tally: Tally | None = None,
              app_of: Callable[[Any], str] | None = None) -> AccessLog | None:
    """Route this process's logging to `who`'s file as `config` says (again on a change);
    returns the access log to write requests to (which hands each to `tally` in the writer
    thread; see `AccessLog.write` for `app_of`), or None if it is off: the caller then
    tallies its requests itself. Every record
    queued before is written and tallied first, so a tally never runs in two threads at once."""
    flush()
    try:
        _flusher.drive_from(asyncio.get_running_loop())  # a serving process: configured on its loop
    except RuntimeError:  # no loop running in this thread: the thread flushes
        pass
    config = config or LoggingConfig()
    level = config.level_number
    path = log_path(who, config, default_dir)
    out = _files.get(path)
    if out is None:
        out = _files[path] = LogFile(path)
    fmt = _Format(who, config.encoding == "JSON", fallback)
    root = logging.getLogger()
    for handler in _installed:
        root.removeHandler(handler)
    stderr_level = level if who.kind == "replica" else max(level, logging.WARNING)
    _installed[:] = [_FileHandler(out, fmt, level), _StderrHandler(fmt, stderr_level)]
    for handler in _installed:
        root.addHandler(handler)
    root.setLevel(level)
    if not config.enable_access_log or level > logging.INFO:
        return None
    return AccessLog(out, fmt, tally, app_of)


def flush(wait_s: float = 0.0) -> None:
    """Write every queued line now, tallying the requests' records (before a metrics scrape:
    its counts are exact); `wait_s` > 0 (this process stops next): wait up to that long for
    the agent to take every line shipped."""
    _flusher.flush_all()
    if wait_s > 0:
        drain_shipped(wait_s)


counting.before_collect(flush)
