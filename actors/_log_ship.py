"""Log batches a worker ships to its agent, which renders and writes them for it.

A worker that an agent launched holds the write end of a pipe to it (`--log-fd`, given to
`install`). A serving process's log flush hands each batch of its files to
`ship(path, spec, items)` instead of rendering and writing it: one marshal and one write.
The agent reads the pipe (`ShippedLogReader`) in a thread of its own at the lowest CPU
priority (`_pipe_thread`), renders the requests' records with `render_text` and appends the
lines to the file named, rotated by its node's rotation.

Why: rendering and writing the access lines was the largest part of what observability
costs a serving process (about 1 us of its CPU per request in a loop, several in place);
marshalling a batch costs a fifth of that, and the agent renders on whatever core is free,
yielding it to the serving processes when they want it (the thread's nice is 19). The CPU
is moved, not saved, but it is taken from the cores' slack first.

A frame is a 4-byte little-endian length, then the marshal of (path, spec, items): items are
text lines and RECORD tuples of str, int, float, bool and None (a record's `extra` that
marshal cannot write is dropped: it is its owner's, for counting, never in a line).

Invariants: frames enter the pipe whole and in order, under one lock (a process may flush
from more than one thread: serve's loop, its backstop thread, a thread logging a warning);
the reader renders them in that order. Shipping never blocks: the pipe is non-blocking, and
what it cannot take now (an agent that is behind, or stopped) waits in the process's
backlog, sent first by the next `ship` or `push` (serve's flush pushes every time; `drain`,
before a process stops, waits for the pipe to take it all). `ship` returns False when there
is no agent to ship to (none installed, or the pipe broke: the agent is gone), or when the
backlog holds MAX_BACKLOG bytes already (an agent stopped for long); the caller then writes
the batch itself.
"""

from __future__ import annotations

import logging
import marshal
import os
import select
import threading
import time
from collections.abc import Callable
from pathlib import Path

from ._logfiles import LogRotation, RotatingWriter
from ._pipe_thread import PipeThread, background
from ._request_lines import LineSpec, render_text

__all__ = ["LOG_FD_FLAG", "MAX_BACKLOG", "ShippedLogReader", "drain", "install", "push", "ship", "shipping"]

log = logging.getLogger(__name__)
LOG_FD_FLAG = "--log-fd"
_HEADER = 4
_MAX_FRAME = 1 << 30  # a length past this is not a frame: the pipe is dropped
_READ_BYTES = 1 << 20
_EXTRA = 8  # RECORD.index("extra")
_PLAIN = (str, int, float, bool, type(None))
MAX_BACKLOG = 64 << 20

_fd = -1
_backlog = bytearray()  # frames (the first maybe in part) the pipe has not taken yet
_lock = threading.Lock()


def install(fd: int) -> None:
    """Ship this process's log batches to the pipe `fd` (a worker, at its start); -1: write
    them in this process."""
    global _fd
    if fd >= 0:
        os.set_inheritable(fd, False)  # the worker's own children must not hold the agent's pipe open
        os.set_blocking(fd, False)
    with _lock:
        _fd = fd
        _backlog.clear()


def shipping() -> bool:
    """Whether batches go to an agent (else the process writes its files itself)."""
    return _fd >= 0


def ship(path: Path, spec: LineSpec, items: list) -> bool:
    """Send a batch for the agent to render and append to `path`; False if there is no
    agent to send it to (nothing was sent)."""
    if _fd < 0:
        return False
    where = os.path.abspath(path)  # the agent's working directory is not this process's
    try:
        body = marshal.dumps((where, spec, items))
    except ValueError:  # a field of a type marshal cannot write (an owner's `extra`, a str subclass...)
        body = marshal.dumps((where, spec, [_plain(item) for item in items]))
    with _lock:
        if _fd < 0 or len(_backlog) >= MAX_BACKLOG:
            return False
        _backlog.extend(len(body).to_bytes(_HEADER, "little"))
        _backlog.extend(body)
        return _push()


def push() -> None:
    """Send what the pipe could not take before (serve's flush, every time)."""
    with _lock:
        if _backlog and _fd >= 0:
            _push()


def drain(timeout_s: float) -> bool:
    """Push until the pipe has taken the whole backlog (True), waiting up to `timeout_s` for
    the agent to read (a process about to stop: its last lines are not lost)."""
    deadline = time.monotonic() + timeout_s
    while True:
        with _lock:
            if _fd < 0 or not _backlog:
                return not _backlog
            _push()
            fd, done = _fd, not _backlog
        left = deadline - time.monotonic()
        if done or left <= 0 or fd < 0:
            return done
        select.select([], [fd], [], left)


def _push() -> bool:
    """Write the backlog into the pipe, as much as it takes now (under `_lock`); False if the
    agent is gone (this process then writes its files itself; the backlog is dropped with it)."""
    global _fd
    try:
        while _backlog:
            del _backlog[:os.write(_fd, _backlog)]
    except BlockingIOError:  # the agent is behind: the rest goes with the next push
        pass
    except OSError:
        _fd = -1
        _backlog.clear()
        return False
    return True


def _plain(item: object) -> object:
    """`item` in types marshal writes, reading as it would in a line (a record's `extra` dropped)."""
    if type(item) is str:
        return item
    if not isinstance(item, tuple):
        return f"{item}"
    return tuple(None if i == _EXTRA else x if type(x) in _PLAIN else
                 int(x) if isinstance(x, int) else float(x) if isinstance(x, float) else f"{x}"
                 for i, x in enumerate(item))


class ShippedLogReader:
    """The agent's end of one worker's pipe: frames in, lines appended to their files
    (`RotatingWriter`s, shared per path, held until the pipe closes). Once started it is
    read in the process's background thread, at the lowest CPU priority (`_pipe_thread`):
    `on_write(path)` is called there, after each append. `items` counts the items written.
    (`receive` may also be given bytes directly, by a caller that never starts it.) Its
    `RotatingWriter`s are only ever used in that thread: the loop thread's writers (the
    workers' `.out`/`.err`) are other files."""

    def __init__(self, fd: int, rotation: LogRotation, on_write: Callable[[Path], None] | None = None) -> None:
        self._fd = fd
        self._rotation = rotation
        self._on_write = on_write
        self._buffer = bytearray()
        self.items = 0
        self._writers: dict[str, RotatingWriter] = {}
        self._pipes: PipeThread | None = None

    def start(self) -> None:
        """Read the pipe in the background thread until it closes (the worker is gone)."""
        os.set_blocking(self._fd, False)
        self._pipes = background()
        self._pipes.watch(self._fd, self._readable)

    def _readable(self) -> None:
        if self._fd < 0:  # closed by a call that ran in the same turn of its thread
            return
        try:
            data = os.read(self._fd, _READ_BYTES)  # b"" is EOF
        except (BlockingIOError, InterruptedError):
            return
        if not data:
            self._close()
            return
        self.receive(data)

    def receive(self, data: bytes) -> None:
        """Bytes read from the pipe: every whole frame in them written."""
        buffer = self._buffer
        buffer += data
        start = 0
        while len(buffer) - start >= _HEADER:
            size = int.from_bytes(buffer[start:start + _HEADER], "little")
            if size > _MAX_FRAME:
                log.error("dropping a worker's log pipe: a frame of %d bytes is not one", size)
                self._close()
                return
            end = start + _HEADER + size
            if len(buffer) < end:
                break
            self._write(bytes(buffer[start + _HEADER:end]))
            start = end
        del buffer[:start]

    def _write(self, body: bytes) -> None:
        try:
            path, spec, items = marshal.loads(body)
            text = "".join(render_text(items, (str(spec[0]), str(spec[1]))))
            writer = self._writers.get(path)
            if writer is None:
                file = Path(path)
                file.parent.mkdir(parents=True, exist_ok=True)
                writer = self._writers[path] = RotatingWriter.open(file, self._rotation)
            if text:
                writer.write(text.encode("utf-8", "replace"))
            self.items += len(items)
        except Exception as e:  # a bad batch costs only itself, never the agent
            log.warning("could not write a worker's log batch: %s: %s", type(e).__name__, e)
            return
        if self._on_write is not None:
            self._on_write(writer.path)

    def close(self, wait_s: float = 0.0) -> bool:
        """Stop reading (the agent stops); files closed. A started reader is closed by its
        thread, soon: this waits up to `wait_s` for that; True once it is closed."""
        pipes = self._pipes
        if pipes is None or pipes.in_thread():
            self._close()
            return True
        closed = threading.Event()

        def close_there() -> None:
            self._close()
            closed.set()

        pipes.call(close_there)
        return closed.wait(wait_s) if wait_s > 0 else False

    def _close(self) -> None:
        if self._fd >= 0:
            if self._pipes is not None:
                self._pipes.forget(self._fd)
            os.close(self._fd)
            self._fd = -1
        for writer in self._writers.values():
            writer.close()
        self._writers.clear()
