"""One thread of a process that reads pipes at the lowest CPU priority: background work
that must yield the CPU to the serving processes (the agent's writing of its workers' log
files: `_log_ship.ShippedLogReader`).

`background()` is the process's `PipeThread`, started at its first use. A reader is
registered with `watch(fd, on_readable)`; `on_readable()` then runs in that thread whenever
the pipe can be read (it reads, and calls `forget(fd)` at EOF). Every change to the set of
pipes runs in the thread itself (`call`), woken through a pipe of its own, so the selector
is only ever used by one thread.

Why a thread at nice 19: rendering and writing a node's log lines costs about 1 us per
request, and on a machine whose cores are busy serving, CPU that the agent takes is taken
from the serving processes. At nice 19 (Linux: a thread's own nice value) the scheduler
runs it in the cores' slack, and gives the serving processes the CPU first when both want
it. If it falls behind (no slack for long) its pipes fill and the workers keep their
batches (bounded: see `_log_ship`), so nothing waits for it on a request's path. The agent's
loop shares the GIL with it: the thread needs it only while it reads and renders a batch.
A reader that raises is forgotten (its owner still closes its pipe); the others read on.
"""

from __future__ import annotations

import collections
import logging
import os
import selectors
import threading
from collections.abc import Callable

__all__ = ["LOWEST_NICE", "PipeThread", "background", "lower_priority"]

log = logging.getLogger(__name__)
LOWEST_NICE = 19


def lower_priority(nice: int = LOWEST_NICE) -> bool:
    """Give the calling thread `nice` (Linux; elsewhere, or when refused, nothing): False
    if it could not."""
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), nice)
    except (AttributeError, OSError):
        return False
    return True


class PipeThread:
    """A daemon thread waiting on registered pipes; see the module docstring."""

    def __init__(self, name: str = "background-pipes", nice: int = LOWEST_NICE) -> None:
        self._selector = selectors.DefaultSelector()
        self._wake_r, self._wake_w = os.pipe()
        for fd in (self._wake_r, self._wake_w):
            os.set_blocking(fd, False)
        self._selector.register(self._wake_r, selectors.EVENT_READ, None)
        self._calls: collections.deque[Callable[[], None]] = collections.deque()
        self._nice = nice
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def in_thread(self) -> bool:
        return threading.current_thread() is self._thread

    def call(self, fn: Callable[[], None]) -> None:
        """Run `fn()` in the thread, soon (in the order called)."""
        self._calls.append(fn)
        try:
            os.write(self._wake_w, b"\0")
        except BlockingIOError:  # the wake pipe is full: the thread is awake already
            pass

    def watch(self, fd: int, on_readable: Callable[[], None]) -> None:
        """Call `on_readable()` in the thread whenever `fd` can be read (from the thread's next turn)."""
        def register() -> None:
            self._selector.register(fd, selectors.EVENT_READ, on_readable)

        self.call(register)

    def forget(self, fd: int) -> None:
        """Stop watching `fd` (in the thread only: from an `on_readable`, or a `call`)."""
        assert self.in_thread()
        try:
            self._selector.unregister(fd)
        except (KeyError, ValueError):
            pass

    def _run(self) -> None:
        lower_priority(self._nice)
        while True:
            for key, _ in self._selector.select():
                if key.data is None:
                    self._run_calls()
                    continue
                try:
                    key.data()
                except Exception:  # one reader's fault must not stop the others'
                    log.exception("a background pipe reader failed")
                    self.forget(key.fd)

    def _run_calls(self) -> None:
        try:
            while os.read(self._wake_r, 4096):
                pass
        except BlockingIOError:
            pass
        calls = self._calls
        while calls:
            try:
                calls.popleft()()
            except Exception:
                log.exception("a call in the background pipe thread failed")


_background: PipeThread | None = None
_lock = threading.Lock()


def background() -> PipeThread:
    """This process's background pipe thread (started at the first call)."""
    global _background
    with _lock:
        if _background is None:
            _background = PipeThread()
        return _background
