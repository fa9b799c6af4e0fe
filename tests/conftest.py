"""Shared fixtures: a run-unique session directory, one embedded cluster for the tests
that only need *a* cluster, helpers to run driver scripts in their own processes, and the
suite-wide check that no process of the run outlives it.

Every process zeroserve starts carries the session directory on its command line
(`--session-dir`/`--token-file`), and every session directory of this run lives under
`ZEROSERVE_TMPDIR`, set here before anything starts. So "a process whose command line
names RUN_DIR" is exactly "a process this test run started".
"""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import psutil
import pytest

# A shell starts a background job (`cmd &`, as a CI script may) with SIGINT ignored, and
# every process it starts inherits that: the drivers the tests Ctrl-C would not hear it.
# A handler (not SIG_IGN) here means the test processes' children start with the default.
if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)

RUN_DIR = tempfile.mkdtemp(prefix="zs-tests-")
os.environ["ZEROSERVE_TMPDIR"] = RUN_DIR
os.environ["ZEROSERVE_QUIET"] = "1"
os.environ["ZEROSERVE_PROXY_WORKERS"] = "1"  # one proxy per node on any machine (tests count them)
ROOT = Path(__file__).resolve().parent.parent


def _http_port_for_this_run() -> int:
    """Serve's default HTTP port for this run: a free one below the ephemeral range, so
    test runs side by side (and a server on 8000) do not collide."""
    import random
    import socket

    for port in random.sample(range(20000, 30000), 200):
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        return port
    raise RuntimeError("no free port in 20000-29999 for Serve's HTTP proxy")


os.environ["ZEROSERVE_HTTP_PORT"] = str(_http_port_for_this_run())

import actors  # noqa: E402  (after ZEROSERVE_TMPDIR is set)


def wait_until(cond: Callable[[], Any], timeout: float = 10.0, what: str = "condition", interval: float = 0.02) -> Any:
    """Poll `cond` until it returns a truthy value; fail the test after `timeout` s."""
    deadline = time.monotonic() + timeout
    while True:
        value = cond()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


def run_processes(root: str = RUN_DIR) -> list[psutil.Process]:
    """Processes whose command line names this run's directory (cluster and workers)."""
    found = []
    for p in psutil.process_iter(["pid", "cmdline"]):
        try:
            if p.pid != os.getpid() and any(root in part for part in (p.info["cmdline"] or [])):
                found.append(p)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return found


def still_running(pids: Iterable[int]) -> list[str]:
    """Those of `pids` still running (zombies are not), each as "pid: command line"."""
    alive = []
    for pid in sorted(pids):
        try:
            proc = psutil.Process(pid)
            if proc.status() != psutil.STATUS_ZOMBIE:
                alive.append(f"{pid}: {' '.join(proc.cmdline())[:160]}")
        except psutil.NoSuchProcess:
            continue
    return alive


def pid_alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def driver_env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env.update(extra)
    return env


def zeroserve(*args: str, check: bool = True, timeout: float = 90) -> subprocess.CompletedProcess:
    """Run the `zeroserve` command (from this interpreter's environment)."""
    proc = subprocess.run([sys.executable, "-c", "import sys; from cluster.cli import main; sys.exit(main())", *args],
                          env=driver_env(), capture_output=True, text=True, timeout=timeout, cwd=str(ROOT))
    if check and proc.returncode != 0:
        pytest.fail(f"zeroserve {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc


def free_port(ip: str = "127.0.0.1") -> int:
    import socket

    with socket.socket() as s:
        s.bind((ip, 0))
        return s.getsockname()[1]


def start_driver(code: str, **env: str) -> subprocess.Popen:
    """Run a driver script in its own process; its stdout is a pipe of lines."""
    return subprocess.Popen([sys.executable, "-c", textwrap.dedent(code)], env=driver_env(**env),
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            cwd=str(ROOT))


class _Lines:
    """A pipe read line by line on a thread. (A selector on a buffered text pipe misses
    lines that arrived in the same read as the one before: they sit in the buffer while
    the descriptor has nothing more to say.)"""

    def __init__(self, stream: Any) -> None:
        self.queue: queue.Queue[str | None] = queue.Queue()
        self.seen: list[str] = []
        threading.Thread(target=self._pump, args=(stream,), daemon=True).start()

    def _pump(self, stream: Any) -> None:
        for line in iter(stream.readline, ""):
            self.queue.put(line)
        self.queue.put(None)  # EOF

    def next(self, deadline: float) -> str | None:
        """The next line; None at EOF or past the deadline."""
        try:
            line = self.queue.get(timeout=max(0.0, deadline - time.monotonic()))
        except queue.Empty:
            return None
        if line is not None:
            self.seen.append(line)
        return line


def lines_of(proc: subprocess.Popen, name: str = "stdout") -> _Lines:
    """The line reader of `proc`'s stdout or stderr (one per stream, made on first use)."""
    key = f"_lines_{name}"
    if not hasattr(proc, key):
        setattr(proc, key, _Lines(getattr(proc, name)))
    return getattr(proc, key)


def read_until(proc: subprocess.Popen, needle: str, name: str = "stdout", timeout: float = 60.0) -> str:
    """The lines of `proc`'s stdout (or stderr) read so far, once one contains `needle`."""
    lines = lines_of(proc, name)
    deadline = time.monotonic() + timeout
    while not any(needle in line for line in lines.seen):
        if lines.next(deadline) is None:
            pytest.fail(f"no {needle!r} in the {name} of the driver within {timeout}s "
                        f"(exit {proc.poll()}):\n{''.join(lines.seen)[-3000:]}")
    return "".join(lines.seen)


def read_json_line(proc: subprocess.Popen, timeout: float = 60.0) -> dict:
    """The JSON object at the start of the next stdout line of a driver that starts with
    '{'. Echoed worker output may come between the lines, or even between a `print`'s
    text and its newline (two writes): what follows the object on its line is left, with
    the other lines, in `lines_of(proc).seen`."""
    lines = lines_of(proc)
    deadline = time.monotonic() + timeout
    while True:
        line = lines.next(deadline)
        if line is None:
            break
        if line.startswith("{"):
            return json.JSONDecoder().raw_decode(line)[0]
    if hasattr(proc, "_lines_stderr"):
        err = "".join(lines_of(proc, "stderr").seen)
    else:
        err = proc.stderr.read() if proc.poll() is not None and proc.stderr else ""
    pytest.fail(f"driver gave no JSON line within {timeout}s (exit {proc.poll()}): {err[-3000:]}")


def scrape_node_metrics() -> str:
    """The Prometheus text of every live node's metrics endpoint (this cluster's), joined."""
    import urllib.request

    urls = [n["metrics_url"] for n in actors.nodes() if n.get("alive") and n.get("metrics_url")]
    assert urls, "no node of this cluster serves a metrics endpoint"
    text = ""
    for url in urls:
        with urllib.request.urlopen(url, timeout=10) as r:
            text += r.read().decode()
    return text


@pytest.fixture(scope="module")
def cluster() -> Any:
    """An embedded cluster (4 logical CPUs) per test module that just needs one."""
    info = actors.init(num_cpus=4, resources={"widget": 2})
    yield info
    actors.shutdown()


@pytest.fixture
def fresh_serve() -> Any:
    """Each test starts with no Serve applications: shut Serve down after it."""
    yield
    from serve import shutdown

    shutdown()


@pytest.fixture(scope="session", autouse=True)
def no_leaked_processes() -> Any:
    yield
    actors.shutdown()
    leftovers: list[psutil.Process] = []

    def gone() -> bool:
        leftovers[:] = run_processes()
        return not leftovers

    deadline = time.monotonic() + 15
    while not gone() and time.monotonic() < deadline:
        time.sleep(0.05)
    if leftovers:
        desc = [f"{p.pid}: {' '.join(p.cmdline())[:200]}" for p in leftovers if p.is_running()]
        for p in leftovers:
            try:
                p.kill()
            except psutil.NoSuchProcess:
                pass
        if desc:
            pytest.fail("processes outlived the test run:\n" + "\n".join(desc))
