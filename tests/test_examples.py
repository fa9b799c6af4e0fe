"""The examples run as users run them (`make run` runs examples/serve_app.py)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from .conftest import ROOT, driver_env, free_port

pytestmark = pytest.mark.timeout(120)


def _run(path: str, *args: str) -> str:
    proc = subprocess.run([sys.executable, path, *args], cwd=str(ROOT), env=driver_env(), capture_output=True, text=True,
                          timeout=100)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout


def test_serve_app_example() -> None:
    port = free_port()
    out = _run("examples/serve_app.py", "--once", "--port", str(port))
    assert "'I love this, it is great'" in out and "'label': 'positive'" in out
    assert "'label': 'negative'" in out and "'label': 'neutral'" in out
    assert "200 concurrent requests" in out and "Sentiment: HEALTHY, replicas {'RUNNING': 2}" in out
    assert f"GET http://127.0.0.1:{port}/sentiment?text=what+a+great+day -> {{'label': 'positive'" in out
    assert f"curl 'http://127.0.0.1:{port}/sentiment?text=I+love+it'" in out


def test_counter_example() -> None:
    out = _run("examples/counter.py")
    assert "incr -> 15" in out and "named actor lookup -> 2015" in out
    assert "remote error arrived as ValueError: counters do not go backwards" in out
