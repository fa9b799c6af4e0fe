"""The embedded local cluster: a head and one agent as children of the driver.

Started by `actors.init()` with no address. Both children hold a lifeline pipe to the
driver, so they (and, through the agent's lifelines, every worker) exit when the driver
exits for any reason, SIGKILL included. `stop()` closes the lifelines and waits.

While it runs it leaves a record (`<base>/embedded/<driver pid>.json`: head address,
token file, pids) so `zeroserve status` and `zeroserve logs` on this machine find it.
Its node serves metrics on `$ZEROSERVE_METRICS_PORT` (default 8080, 0 for none; a free
port if that one is taken), its head the dashboard on `$ZEROSERVE_DASHBOARD_PORT` (8265,
likewise); log rotation follows `$ZEROSERVE_LOG_MAX_BYTES` and
`$ZEROSERVE_LOG_BACKUPS`.

The other way round: a watcher thread waits (on pidfds, no polling) for the head or the
agent to exit. If one does and `stop()` does not follow (at once for a crash or a kill,
within 10 s for a clean exit, and within 60 s when this driver got a Ctrl-C too: Ctrl-C
reaches the whole process group, and the driver's own shutdown may take a while), the
cluster is gone for good (an embedded head is not restarted), and a driver that went on
would serve nothing and print nothing: the watcher says so on stderr, stops what is
left, and ends the process with status 1 (`CLUSTER_LOST_EXIT`).
"""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ._logfiles import LogRotation
from ._process import Child, spawn
from ._session import Session, secure_base, secure_dir
from .exceptions import InsecureSessionDirError

__all__ = ["LocalCluster", "CLUSTER_LOST_EXIT"]

_START_TIMEOUT_S = 60.0
METRICS_PORT_ENV = "ZEROSERVE_METRICS_PORT"
DEFAULT_METRICS_PORT = 8080


def metrics_port_from_env() -> int:
    text = os.environ.get(METRICS_PORT_ENV, "").strip()
    if not text:
        return DEFAULT_METRICS_PORT
    if not text.isdigit() or int(text) > 65535:
        raise ValueError(f"${METRICS_PORT_ENV} must be a port number (0 for no metrics endpoint), got {text!r}")
    return int(text)


DASHBOARD_PORT_ENV = "ZEROSERVE_DASHBOARD_PORT"
DEFAULT_DASHBOARD_PORT = 8265


def dashboard_port_from_env() -> int:
    text = os.environ.get(DASHBOARD_PORT_ENV, "").strip()
    if not text:
        return DEFAULT_DASHBOARD_PORT
    if not text.isdigit() or int(text) > 65535:
        raise ValueError(f"${DASHBOARD_PORT_ENV} must be a port number (0 for no dashboard), got {text!r}")
    return int(text)


CLUSTER_LOST_EXIT = 1
_CLEAN_EXIT_GRACE_S = 10.0  # a child that exited 0 was told to stop; the driver likely is stopping too
_CRASH_GRACE_S = 0.5
_INTERRUPTED_GRACE_S = 60.0  # this driver got SIGINT as well: it is shutting down by itself
_interrupted_at: float | None = None


def _note_sigint(signum: int, frame: Any) -> None:
    """SIGINT in a driver with an embedded cluster: remember it, then Python's default."""
    global _interrupted_at
    _interrupted_at = time.monotonic()
    signal.default_int_handler(signum, frame)


def _watch_sigint() -> None:
    """Chain onto the default SIGINT handler (only that one, and only from the main thread),
    so the watcher knows a clean exit of the children came with the driver's own Ctrl-C."""
    if threading.current_thread() is threading.main_thread() and \
            signal.getsignal(signal.SIGINT) is signal.default_int_handler:
        signal.signal(signal.SIGINT, _note_sigint)


def _say(text: str) -> None:
    if os.environ.get("ZEROSERVE_QUIET") != "1":
        print(f"zeroserve: {text}", file=sys.stderr, flush=True)


class LocalCluster:
    def __init__(self, *, node_ip: str = "127.0.0.1", num_cpus: float | None = None,
                 resources: dict[str, float] | None = None, token: str | None = None,
                 num_gpus: int | None = None) -> None:
        self.node_ip = node_ip
        self.num_cpus = num_cpus
        self.num_gpus = num_gpus
        self.resources = resources or {}
        self.session = Session.create(token)
        self.head_address: str | None = None
        self.metrics_url = ""
        self.dashboard_url = ""
        self._children: list[Child] = []
        self._record: Path | None = None
        self._stopping = False
        self._stopped = threading.Event()
        # Told (from the watcher's thread) as soon as the head or the agent exits while we
        # are not stopping: the driver's runtime then fails its calls at once.
        self.on_gone: Callable[[str], None] | None = None
        self._wake_r, self._wake_w = os.pipe()

    @property
    def token_file(self) -> str:
        return str(self.session.token_file)

    def start(self) -> "LocalCluster":
        t0 = time.monotonic()
        metrics_port = metrics_port_from_env()  # wrong settings fail before anything starts
        dashboard_port = dashboard_port_from_env()
        LogRotation.from_env()
        _say(f"starting a local cluster (head + agent on {self.node_ip}); session {self.session.path}")
        logs = self.session.logs
        common = ["--node-ip", self.node_ip, "--session-dir", str(self.session.path), "--token-file", self.token_file]
        head_log, agent_log = str(logs / "head.log"), str(logs / f"agent-{self.node_ip}.log")
        head = spawn(["-m", "cluster", "head", "--port", "0", *common, "--log-file", head_log,
                      "--dashboard-port", str(dashboard_port)],
                     log_path=str(logs / "head.out"), also_tail=(head_log,))
        self._children.append(head)
        agent_args = ["-m", "cluster", "agent", "--head", "-", "--is-head-node", *common,
                      "--resources", json.dumps(self.resources), "--log-file", agent_log,
                      "--metrics-port", str(metrics_port)]
        if self.num_cpus is not None:
            agent_args += ["--num-cpus", str(self.num_cpus)]
        if self.num_gpus is not None:
            agent_args += ["--num-gpus", str(self.num_gpus)]
        # The agent imports its modules while the head starts; it reads the head's
        # address from stdin once the head is up.
        agent = spawn(agent_args, log_path=str(logs / f"agent-{self.node_ip}.out"), stdin=subprocess.PIPE,
                      also_tail=(agent_log,))
        self._children.append(agent)
        try:
            head_info = head.wait_ready(_START_TIMEOUT_S, "the head")
            self.head_address = head_info["address"]
            assert agent.proc.stdin is not None
            agent.proc.stdin.write((self.head_address + "\n").encode())
            agent.proc.stdin.close()
            node = agent.wait_ready(_START_TIMEOUT_S, "the agent")
        except BaseException:
            self.stop()
            raise
        self.metrics_url = node.get("metrics_url") or ""
        self.dashboard_url = head_info.get("dashboard_url") or ""
        self._write_record(head_info.get("pid"), node.get("node_id", ""))
        metrics = f"; metrics at {self.metrics_url}" if self.metrics_url else ""
        metrics += f"; dashboard at {self.dashboard_url}" if self.dashboard_url else ""
        _say(f"local cluster up in {time.monotonic() - t0:.1f}s: head {self.head_address}, "
             f"node {node.get('node_id')} with {node.get('resources')}; logs in {logs}{metrics}")
        _watch_sigint()
        threading.Thread(target=self._watch, args=(list(zip(("head", "agent"), self._children, strict=True)),),
                         name="zeroserve-cluster-watch", daemon=True).start()
        return self

    def _write_record(self, head_pid: int | None, node_id: str) -> None:
        """Leave a record for `zeroserve status` / `logs` (best effort: the cluster works without)."""
        try:
            folder = secure_dir(secure_base() / "embedded", "the embedded cluster records directory")
            path = folder / f"{os.getpid()}.json"
            pids = {"driver": os.getpid(), "head": head_pid, **{k: v for k, v in self.pids().items() if k != "head"}}
            record = {"node_ip": self.node_ip, "head_address": self.head_address, "is_head": True, "embedded": True,
                      "session": str(self.session.path), "token_file": self.token_file, "pids": pids,
                      "node_id": node_id, "metrics_url": self.metrics_url, "dashboard_url": self.dashboard_url,
                      "started_at": time.time()}
            tmp = path.with_suffix(".tmp")
            tmp.write_text(json.dumps(record, indent=2))
            os.replace(tmp, path)
            self._record = path
        except (OSError, InsecureSessionDirError) as e:
            _say(f"could not write the local cluster's record ({e}); `zeroserve status` will not find it")

    def _watch(self, children: list[tuple[str, Child]]) -> None:
        """Wait for the head or the agent to exit; unless we are stopping, end the driver."""
        fds = {os.pidfd_open(c.proc.pid): (name, c) for name, c in children}
        try:
            ready, _, _ = select.select([*fds, self._wake_r], [], [])
        finally:
            for fd in fds:
                os.close(fd)
        if self._stopping or self._wake_r in ready:
            os.close(self._wake_r)
            return
        name, child = fds[next(fd for fd in ready if fd in fds)]
        code = child.proc.wait()
        how = (f"was killed by {signal.Signals(-code).name}" if code is not None and code < 0
               else f"exited with code {code}")
        if self.on_gone is not None and not self._stopping:
            # Whatever follows (this driver's own shutdown after Ctrl-C, or its exit below),
            # nothing it calls in the cluster can answer: let it fail at once, not time out.
            self.on_gone(f"the embedded cluster is gone: its {name} (pid {child.proc.pid}) {how}")
        # A clean exit (0) means it was told to stop: most often with this driver (Ctrl-C
        # reaches the whole process group), which is then shutting down: give it time to.
        if self._stopped.wait(_CLEAN_EXIT_GRACE_S if code == 0 else _CRASH_GRACE_S) or (
                code == 0 and _interrupted_at is not None and self._stopped.wait(_INTERRUPTED_GRACE_S)):
            os.close(self._wake_r)
            return
        print(f"zeroserve: the embedded cluster is gone: its {name} (pid {child.proc.pid}) {how}. This driver "
              f"cannot go on without it; exiting with status {CLUSTER_LOST_EXIT}. Logs: {self.session.logs}",
              file=sys.stderr, flush=True)
        try:
            self.stop(timeout=3.0)
        finally:
            try:
                sys.stdout.flush()
            finally:
                os._exit(CLUSTER_LOST_EXIT)

    def pids(self) -> dict[str, int]:
        names = ("head", "agent")
        return {n: c.proc.pid for n, c in zip(names, self._children, strict=False)}

    def stop(self, timeout: float = 5.0) -> None:
        self._stopping = True
        if self._record is not None:
            self._record.unlink(missing_ok=True)
            self._record = None
        self._stopped.set()
        if self._wake_w >= 0:  # wakes the watcher, which closes the read end
            try:
                os.write(self._wake_w, b"x")
            except BrokenPipeError:
                pass  # the watcher has closed it already (a child exited first, and it saw `_stopped`)
            finally:
                os.close(self._wake_w)
                self._wake_w = -1
        for child in reversed(self._children):
            child.stop(timeout)
        self._children.clear()

    def info(self) -> dict[str, Any]:
        return {"head_address": self.head_address, "session": str(self.session.path), "pids": self.pids(),
                "metrics_url": self.metrics_url, "dashboard_url": self.dashboard_url}
