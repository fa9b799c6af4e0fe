"""A worker's output, as its agent reads it: stdout and stderr to rotated files, and echoed;
the log batches it ships (`ShippedLogReader`: a serving process's log files) rendered and
written, in the agent's background thread at the lowest CPU priority.

The agent reads each worker's two pipes on its loop. Every chunk is appended to the
worker's log file (`<log name>.out` / `.err`, rotated by size, see `actors.system`'s log
files); every complete line is echoed, with the worker's prefix (`(<log name or Class>
pid=N)`), to the actor's owner (the driver that created it) and to the processes that
subscribed to this worker (`subscribe`: a `serve.run` driver following the replicas the
controller created). A subscriber first gets the worker's recent lines (up to
`BACKLOG_LINES`), so what a constructor printed before anyone could subscribe is not
lost. Echoes are one-way messages: a subscriber or owner that is gone costs nothing but
the send.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import os
from collections.abc import Callable
from pathlib import Path

from actors.system import LogRotation, RotatingWriter, ShippedLogReader

__all__ = ["BACKLOG_LINES", "WorkerOutput"]

log = logging.getLogger(__name__)
BACKLOG_LINES = 500
_READ_BYTES = 65536
_STREAMS = ("out", "err")
# (address, route, args): the agent's `Runtime.send_oneway`
Send = Callable[[str, bytes, tuple], None]


class WorkerOutput:
    """The output of one worker process (loop thread only)."""

    def __init__(self, *, logs_dir: Path, log_name: str, prefix: str, owner: str | None, rotation: LogRotation,
                 send: Send, on_write: Callable[[str], None] | None = None) -> None:
        self.log_name = log_name
        self.prefix = prefix
        self.owner = owner
        self.subscribers: set[str] = set()
        self._send = send
        self._on_write = on_write
        self._files = {s: RotatingWriter.open(logs_dir / f"{log_name}.{s}", rotation) for s in _STREAMS}
        self._partial: dict[str, bytes] = {}
        self._backlog: collections.deque[tuple[str, str]] = collections.deque(maxlen=BACKLOG_LINES)
        self._fds: dict[str, int] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._logs_dir = logs_dir
        self._shipped: ShippedLogReader | None = None
        self._rotation = rotation

    def file_names(self) -> list[str]:
        return [f"{self.log_name}.{s}" for s in _STREAMS]

    def read_pipes(self, out_fd: int, err_fd: int, logs_fd: int) -> None:
        """Start reading the worker's stdout, stderr and log pipes (the agent's read ends)."""
        self._loop = asyncio.get_running_loop()
        self._shipped = ShippedLogReader(logs_fd, self._rotation, self._shipped_write)
        self._shipped.start()
        for stream, fd in (("out", out_fd), ("err", err_fd)):
            os.set_blocking(fd, False)
            self._fds[stream] = fd
            self._loop.add_reader(fd, self._readable, stream, fd)

    def _shipped_write(self, path: Path) -> None:
        """A shipped batch was appended to `path` (in the reader's background thread): wake
        the file's followers, on the loop."""
        if self._on_write is not None and path.parent == self._logs_dir and self._loop is not None:
            try:
                self._loop.call_soon_threadsafe(self._on_write, path.name)
            except RuntimeError:  # the loop is closed: the agent stops
                pass

    def _readable(self, stream: str, fd: int) -> None:
        try:
            data = os.read(fd, _READ_BYTES)  # b"" is EOF; nothing ready raises
        except (BlockingIOError, InterruptedError):
            return
        if not data:
            self._close_stream(stream)
            return
        self.write(stream, data)

    def write(self, stream: str, data: bytes) -> None:
        """Output of the worker on `stream`: to its file, and its complete lines echoed."""
        f = self._files.get(stream)
        if f is not None:
            f.write(data)
            if self._on_write is not None:
                self._on_write(f.path.name)
        data = self._partial.pop(stream, b"") + data
        *raw, rest = data.split(b"\n")
        if rest:
            self._partial[stream] = rest
        if raw:
            lines = [ln.decode(errors="replace") for ln in raw]
            self._backlog.extend((stream, ln) for ln in lines)
            for address in self._targets():
                self._echo(address, stream, lines)

    def _targets(self) -> list[str]:
        targets = [self.owner] if self.owner else []
        targets.extend(a for a in self.subscribers if a != self.owner)
        return targets

    def _echo(self, address: str, stream: str, lines: list[str]) -> None:
        try:
            self._send(address, b"rt/log", (self.prefix, stream, lines))
        except Exception as e:  # the receiver may be gone; the lines stay in the file
            log.debug("could not echo output to %s: %s", address, e)

    def subscribe(self, address: str) -> None:
        """Echo this worker's lines to `address` too, starting with its recent ones."""
        if address in self.subscribers or address == self.owner:
            return
        self.subscribers.add(address)
        group: list[str] = []
        current = ""
        for stream, line in self._backlog:
            if stream != current and group:
                self._echo(address, current, group)
                group = []
            current = stream
            group.append(line)
        if group:
            self._echo(address, current, group)

    def unsubscribe(self, address: str) -> None:
        self.subscribers.discard(address)

    def _close_stream(self, stream: str) -> None:
        fd = self._fds.pop(stream, None)
        if fd is not None:
            if self._loop is not None:
                self._loop.remove_reader(fd)
            os.close(fd)
        rest = self._partial.pop(stream, b"")
        if rest:  # a last line without its newline
            lines = [rest.decode(errors="replace")]
            self._backlog.extend((stream, ln) for ln in lines)
            for address in self._targets():
                self._echo(address, stream, lines)
        f = self._files.pop(stream, None)
        if f is not None:
            f.close()

    def close(self) -> None:
        """Stop reading (the agent is shutting down): pipes and files closed."""
        if self._shipped is not None:
            self._shipped.close()
        for stream in list(self._fds):
            self._close_stream(stream)
        for stream in list(self._files):
            self._files.pop(stream).close()
