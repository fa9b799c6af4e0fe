"""The head node's agent runs the head as its child and restarts it when it dies.

The head restarts on the same address with the same token and restores its state (kept
in `state_dir`, the session directory unless given), so drivers, agents and workers
reconnect to it without being told anything. A head that keeps dying at start is retried
with back-off, not in a tight loop. Its log records go to `logs/head.log` in the session
(rotated; its raw output to `logs/head.out`), or, in the foreground (`zeroserve start
--block`), to this process's stdout (and `log_file`).
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
from pathlib import Path

from actors.system import Child, spawn

__all__ = ["HeadSupervisor"]

log = logging.getLogger(__name__)
_READY_TIMEOUT_S = 60.0


class HeadSupervisor:
    def __init__(self, *, node_ip: str, port: int, session_dir: str, token_file: str, state_dir: str | None = None,
                 advertise: str | None = None, foreground: bool = False, log_file: str | None = None,
                 dashboard_port: int = 0, dashboard_strict: bool = False) -> None:
        self.node_ip = node_ip
        self.dashboard_port = dashboard_port
        self.dashboard_strict = dashboard_strict
        self.dashboard_url = ""
        self.port = port
        self.session_dir = Path(session_dir)
        self.token_file = token_file
        self.state_dir = Path(state_dir) if state_dir else self.session_dir
        self.advertise = advertise
        self.foreground = foreground
        self.log_file = log_file
        self.address: str | None = None
        self.restarts = 0
        self._child: Child | None = None
        self._stopping = False

    @property
    def pid(self) -> int | None:
        return self._child.proc.pid if self._child is not None else None

    def _spawn(self) -> str:
        logs = self.session_dir / "logs"
        args = ["-m", "cluster", "head", "--node-ip", self.node_ip, "--port", str(self.port),
                "--session-dir", str(self.session_dir), "--token-file", self.token_file,
                "--state-dir", str(self.state_dir), "--dashboard-port", str(self.dashboard_port),
                *(["--dashboard-port-strict"] if self.dashboard_strict else [])]
        if self.advertise:
            args += ["--advertise-address", self.advertise]
        if self.foreground:
            args.append("--foreground")
            child = spawn(args + (["--log-file", self.log_file] if self.log_file else []),
                          stdout=sys.stdout.fileno(), stderr=sys.stderr.fileno())
        else:
            head_log = self.log_file or str(logs / "head.log")
            child = spawn([*args, "--log-file", head_log], log_path=str(logs / "head.out"), also_tail=(head_log,))
        self._child = child
        ready = child.wait_ready(_READY_TIMEOUT_S, "the head")
        address = ready["address"]
        self.port = int(address.rsplit(":", 1)[1])
        self.dashboard_url = ready.get("dashboard_url") or ""
        if self.dashboard_url:  # a restarted head serves it on the same port
            self.dashboard_port = int(self.dashboard_url.rstrip("/").rsplit(":", 1)[1])
        return address

    async def start(self) -> str:
        self.address = await asyncio.get_running_loop().run_in_executor(None, self._spawn)
        return self.address

    async def supervise(self) -> None:
        """Restart the head whenever it exits, until `stop()`."""
        loop = asyncio.get_running_loop()
        backoff = 0.1
        while not self._stopping:
            child = self._child
            assert child is not None
            exited: asyncio.Future[None] = loop.create_future()
            pidfd = os.pidfd_open(child.proc.pid)
            loop.add_reader(pidfd, _set_done, exited)
            try:
                await exited
            finally:
                loop.remove_reader(pidfd)
                os.close(pidfd)
            code = child.proc.wait()
            child.stop(timeout=0)
            if self._stopping:
                return
            log.warning("the head (pid %s) exited with code %s; restarting it on port %s", child.proc.pid, code,
                        self.port)
            while not self._stopping:
                try:
                    await self.start()
                    self.restarts += 1
                    backoff = 0.1
                    log.info("the head is back at %s (pid %s)", self.address, self.pid)
                    break
                except RuntimeError as e:
                    log.error("restarting the head failed: %s", e)
                    await asyncio.sleep(backoff)
                    backoff = min(backoff * 2, 5.0)

    def stop(self) -> None:
        self._stopping = True
        if self._child is not None:
            self._child.stop()


def _set_done(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)
