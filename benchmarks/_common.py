"""What several benchmarks share: a free loopback port, wrk (installed with apt if
missing), the `zeroserve` CLI run from this checkout, and a child process that runs its own
cluster with the observability defaults or with them off (`ModeChild`). Benchmarks run as
scripts, so `benchmarks/` is on sys.path and they import this as `_common`."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def free_port(ip: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((ip, 0))
        return s.getsockname()[1]


def ensure_wrk() -> str:
    path = shutil.which("wrk")
    if path is None:
        subprocess.run(["apt-get", "update", "-qq"], check=False)
        subprocess.run(["apt-get", "install", "-y", "-qq", "wrk"], check=True)
        path = shutil.which("wrk")
    if path is None:
        raise SystemExit("wrk is needed (apt-get install wrk)")
    return path


def zeroserve(*args: str, root: str = ROOT) -> str:
    """Run `zeroserve ARGS` from the checkout at `root`; its stdout (exit with its output
    if it fails)."""
    proc = subprocess.run([sys.executable, "-c", "import sys; from cluster.cli import main; sys.exit(main())", *args],
                          capture_output=True, text=True, timeout=120, cwd=root)
    if proc.returncode != 0:
        raise SystemExit(f"zeroserve {' '.join(args)} failed:\n{proc.stdout}{proc.stderr}")
    return proc.stdout


class ModeChild:
    """`script --child MODE [args]` in a process of its own, with serve metrics on ("defaults")
    or off ("off"): it answers one JSON line per line it is sent (its first unasked). Closing
    its stdin stops it."""

    def __init__(self, script: str, mode: str, *args: str) -> None:
        env = dict(os.environ, ZEROSERVE_SERVE_METRICS="0" if mode == "off" else "1")
        self.mode = mode
        self.proc = subprocess.Popen([sys.executable, script, "--child", mode, *args], env=env,
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)

    def read(self) -> object:
        """Its next JSON line (exits if the child did)."""
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            raise SystemExit(f"the {self.mode} child exited (code {self.proc.wait()})")
        return json.loads(line)

    def ask(self, line: str) -> object:
        assert self.proc.stdin is not None
        self.proc.stdin.write(f"{line}\n")
        self.proc.stdin.flush()
        return self.read()

    def close(self) -> None:
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        self.proc.wait(timeout=60)
