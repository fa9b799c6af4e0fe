"""Starting child processes that cannot outlive their parent, and their ready handshake.

A child gets two inherited pipe ends:
- `--parent-fd`: the read end of a pipe whose write end only the parent holds. When the
  parent dies for any reason, SIGKILL included, the kernel closes it and the child sees
  EOF and exits. No orphans, without polling and on any thread layout.
- `--ready-fd`: the write end of a pipe on which the child writes one JSON line when it
  is up (its address), so the parent waits on a fact, not a sleep.
"""

from __future__ import annotations

import asyncio
import json
import os
import select
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

__all__ = ["Child", "spawn", "watch_parent", "signal_ready"]


@dataclass
class Child:
    proc: subprocess.Popen
    lifeline_fd: int  # write end: keep open while the child may live
    ready_fd: int  # read end of the ready pipe
    log_path: str | None = None
    also_tail: tuple[str, ...] = ()  # other logs of the child worth showing when it fails to start

    def wait_ready(self, timeout: float, what: str) -> dict[str, Any]:
        """Wait for the child's ready line; raise with its log if it dies or stalls."""
        deadline = time.monotonic() + timeout
        buf = b""
        while b"\n" not in buf:
            left = deadline - time.monotonic()
            if left <= 0:
                raise RuntimeError(f"{what} did not become ready within {timeout:.0f}s{self._log_tail()}")
            r, _, _ = select.select([self.ready_fd], [], [], min(left, 0.2))
            if r:
                chunk = os.read(self.ready_fd, 4096)
                if not chunk:
                    break
                buf += chunk
            elif self.proc.poll() is not None:
                break
        if b"\n" not in buf:
            self.proc.wait(timeout=5)
            raise RuntimeError(f"{what} exited with code {self.proc.returncode} before it was ready{self._log_tail()}")
        os.close(self.ready_fd)
        self.ready_fd = -1
        return json.loads(buf.split(b"\n", 1)[0])

    def _log_tail(self) -> str:
        out = ""
        for path in (self.log_path, *self.also_tail):
            if not path or not os.path.exists(path):
                continue
            with open(path, "rb") as f:
                f.seek(max(0, os.fstat(f.fileno()).st_size - 3000))
                tail = f.read().decode(errors="replace")
            if tail.strip():
                out += f"; its log {path} ends with:\n{tail}"
        return out

    def stop(self, timeout: float = 5.0) -> None:
        """Close the lifeline (the child exits by itself), then make sure it is gone."""
        if self.lifeline_fd >= 0:
            os.close(self.lifeline_fd)
            self.lifeline_fd = -1
        if self.ready_fd >= 0:
            os.close(self.ready_fd)
            self.ready_fd = -1
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def spawn(args: list[str], *, log_path: str | None = None, env: dict[str, str] | None = None,
          extra_fds: tuple[int, ...] = (), new_session: bool = False, stdin: Any = subprocess.DEVNULL,
          stdout: Any = None, stderr: Any = None, lifeline: bool = True, also_tail: tuple[str, ...] = ()) -> Child:
    """Start `python <args> --parent-fd R --ready-fd W` tied to this process's life.

    Output goes to `log_path` (appended, stderr merged), or to `stdout`/`stderr` as given;
    `also_tail` names other logs it writes, shown with `log_path` if it fails to start.
    With `lifeline=False` (daemons of `zeroserve start`) the child outlives this process.
    """
    life_r, life_w = os.pipe() if lifeline else (-1, -1)
    ready_r, ready_w = os.pipe()
    if lifeline:
        os.set_inheritable(life_r, True)
    os.set_inheritable(ready_w, True)
    out: Any = subprocess.DEVNULL
    if log_path is not None:
        out = open(log_path, "ab")
    try:
        fds = ["--parent-fd", str(life_r)] if lifeline else []
        proc = subprocess.Popen(
            [sys.executable, *args, *fds, "--ready-fd", str(ready_w)],
            pass_fds=tuple(fd for fd in (life_r, ready_w, *extra_fds) if fd >= 0),
            stdin=stdin,
            stdout=stdout if stdout is not None else out,
            stderr=stderr if stderr is not None else (subprocess.STDOUT if log_path is not None else subprocess.DEVNULL),
            env=env,
            start_new_session=new_session,
        )
    finally:
        if lifeline:
            os.close(life_r)
        os.close(ready_w)
        if log_path is not None:
            out.close()
    if lifeline:
        os.set_inheritable(life_w, False)
    os.set_inheritable(ready_r, False)
    return Child(proc, life_w, ready_r, log_path, also_tail)


def watch_parent(loop: asyncio.AbstractEventLoop, fd: int, on_parent_death: Callable[[], None]) -> None:
    """Call `on_parent_death` when the lifeline pipe closes (the parent is gone)."""

    def readable() -> None:
        try:
            data = os.read(fd, 1)
        except OSError:
            data = b""
        if not data:
            loop.remove_reader(fd)
            on_parent_death()

    os.set_blocking(fd, False)
    loop.add_reader(fd, readable)


def signal_ready(fd: int | None, info: dict[str, Any]) -> None:
    if fd is None or fd < 0:
        return
    os.write(fd, (json.dumps(info) + "\n").encode())
    os.close(fd)

