"""What several benchmarks share: a free loopback port, wrk (installed with apt if
missing), and the `zeroserve` CLI run from this checkout. Benchmarks run as scripts, so
`benchmarks/` is on sys.path and they import this as `_common`."""

from __future__ import annotations

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
