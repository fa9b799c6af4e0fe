"""The fork server: starts worker processes in milliseconds by forking a process that has
already imported the runtime.

The zygote (`python -m actors zygote --fd N`) imports the worker's modules and then only
waits on a SOCK_SEQPACKET socket. While it has nothing else to do, it also imports the
modules named in `$ZEROSERVE_PRELOAD` (comma-separated; the agent names the serving layer),
one at a time between launches, so a worker forked after that does not pay for them (the
serving layer's imports are ~0.5 s of CPU per replica on a small machine). Everything it
imported is moved to the garbage collector's permanent generation (`gc.freeze`): the
workers' collector never scans it (nor, by scanning, copies its pages). The zygote owns no
threads, event loop or ZeroMQ context, so fork is safe. A launch request carries the
worker's arguments and, by SCM_RIGHTS, its lifeline read end, its stdout/stderr pipe ends
and the write end of its log pipe (see `_log_ship`); the reply is the pid. The zygote
reaps its children and reports every exit status. It exits when its client goes away;
workers exit on their own lifeline, not the zygote's.

`ForkServer` is the client side, for an asyncio loop (used by agents).
"""

from __future__ import annotations

import asyncio
import collections
import gc
import importlib
import json
import os
import select
import signal
import socket
import subprocess
import sys
from collections.abc import Callable
from typing import IO

from ._log_ship import LOG_FD_FLAG

__all__ = ["PRELOAD_ENV", "ForkServer", "zygote_main"]

_MAX_MSG = 65536
PRELOAD_ENV = "ZEROSERVE_PRELOAD"


def zygote_main(fd: int) -> int:
    from . import _worker  # the point of the zygote: import once, fork many

    gc.freeze()
    preload = collections.deque(m.strip() for m in os.environ.get(PRELOAD_ENV, "").split(",") if m.strip())
    sock = socket.socket(fileno=fd)
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_w, False)
    signal.set_wakeup_fd(wake_w)
    signal.signal(signal.SIGCHLD, lambda *_: None)
    while True:
        ready, _, _ = select.select([sock.fileno(), wake_r], [], [], 0 if preload else None)
        if not ready and preload:
            _preload(preload.popleft())  # idle: a launch waits at most for one module's import
            continue
        if wake_r in ready:
            os.read(wake_r, 4096)
            _reap(sock)
        if sock.fileno() in ready:
            try:
                data, fds, _, _ = socket.recv_fds(sock, _MAX_MSG, 4)
            except OSError:
                return 0
            if not data:
                return 0  # the agent is gone
            request = json.loads(data)
            pid = os.fork()
            if pid == 0:
                _become_worker(sock, (wake_r, wake_w), fds, request["argv"], _worker)
            for f in fds:
                os.close(f)
            sock.send(json.dumps({"pid": pid}).encode())
            _reap(sock)


def _preload(module: str) -> None:
    """Import one module for the workers to inherit; a module that fails to import is
    reported in the zygote's log and skipped (the worker imports it itself if it needs it)."""
    try:
        importlib.import_module(module)
    except Exception as e:  # any import failure: report it, fork without the module
        print(f"zygote: could not preload {module!r} (${PRELOAD_ENV}): {type(e).__name__}: {e}", file=sys.stderr,
              flush=True)
    gc.freeze()


def _become_worker(sock: socket.socket, wake: tuple[int, int], fds: list[int], argv: list[str], worker) -> None:
    code = 1
    try:
        signal.set_wakeup_fd(-1)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        sock.close()
        for f in wake:
            os.close(f)
        lifeline, out, err, logs = fds
        os.dup2(out, 1)
        os.dup2(err, 2)
        os.close(out)
        os.close(err)
        sys.stdout = os.fdopen(1, "w", buffering=1, closefd=False)
        sys.stderr = os.fdopen(2, "w", buffering=1, closefd=False)
        code = worker.main([*argv, "--parent-fd", str(lifeline), LOG_FD_FLAG, str(logs)])
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else 1
    except BaseException:
        import traceback

        traceback.print_exc()
    finally:
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        finally:
            os._exit(code or 0)


def _reap(sock: socket.socket) -> None:
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        sock.send(json.dumps({"exit": pid, "code": os.waitstatus_to_exitcode(status)}).encode())


class ForkServer:
    """Client of one zygote. `launch()` returns the new worker's pid; `on_exit(pid, code)`
    is called on the loop for every worker that exits."""

    def __init__(self, on_exit: Callable[[int, int], None], env: dict[str, str] | None = None,
                 log_path: str | None = None) -> None:
        self._on_exit = on_exit
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        out: IO[bytes] | int = open(log_path, "ab") if log_path else subprocess.DEVNULL
        try:
            self._proc = subprocess.Popen(
                [sys.executable, "-m", "actors", "zygote", "--fd", str(theirs.fileno())],
                pass_fds=(theirs.fileno(),), env=env, stdin=subprocess.DEVNULL, stdout=out,
                stderr=subprocess.STDOUT,
            )
        finally:
            theirs.close()
            if not isinstance(out, int):
                out.close()
        self._sock = ours
        self._sock.setblocking(False)
        self._waiting: collections.deque[asyncio.Future] = collections.deque()
        self._loop = asyncio.get_running_loop()
        self._loop.add_reader(self._sock.fileno(), self._readable)

    @property
    def pid(self) -> int:
        return self._proc.pid

    def alive(self) -> bool:
        return self._proc.poll() is None

    async def launch(self, argv: list[str], lifeline_r: int, stdout_w: int, stderr_w: int, logs_w: int) -> int:
        fut = self._loop.create_future()
        self._waiting.append(fut)
        socket.send_fds(self._sock, [json.dumps({"argv": argv}).encode()], [lifeline_r, stdout_w, stderr_w, logs_w])
        return await fut

    def _readable(self) -> None:
        while True:
            try:
                data = self._sock.recv(_MAX_MSG)
            except BlockingIOError:
                return
            if not data:
                self._loop.remove_reader(self._sock.fileno())
                while self._waiting:
                    fut = self._waiting.popleft()
                    if not fut.done():
                        fut.set_exception(RuntimeError(f"the fork server (pid {self.pid}) exited"))
                return
            msg = json.loads(data)
            if "pid" in msg:
                fut = self._waiting.popleft()
                if not fut.done():
                    fut.set_result(msg["pid"])
            else:
                self._on_exit(msg["exit"], msg["code"])

    def close(self) -> None:
        if self._sock.fileno() >= 0:
            self._loop.remove_reader(self._sock.fileno())
            self._sock.close()
        try:
            self._proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()
