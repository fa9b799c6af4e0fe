"""The examples run as users run them (`make run` runs examples/serve_app.py)."""

from __future__ import annotations

import re
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


def test_classifier_example() -> None:
    port = free_port()
    out = _run("examples/classifier.py", "--once", "--port", str(port))
    assert float(re.search(r"training accuracy (\d\.\d+)", out)[1]) >= 0.93, out
    m = re.search(r"all 150 rows through the handle at once: accuracy (\d\.\d+) .* (\d+) requests in \d+ batches "
                  r"\(largest (\d+)\)", out)
    assert m and float(m[1]) >= 0.93 and int(m[2]) == 150 and int(m[3]) > 1, out  # batches formed
    url = f"http://127.0.0.1:{port}/iris"
    assert f"POST {url} {{\"features\": [6.7, 3.0, 5.2, 2.3]}} -> 200 {{'class': 'virginica', 'probability': 0.9" in out
    assert f"POST {url} {{\"features\": [1, 2]}} -> 400 {{'error': 'features must be 4 finite numbers" in out


def test_pipeline_example() -> None:
    port = free_port()
    out = _run("examples/pipeline.py", "--once", "--port", str(port))
    assert "deployed DAGDriver, IrisClassifier, NoveltyScorer" in out, out
    assert "[5.1, 3.5, 1.4, 0.2] -> {'class': 'setosa', 'probability': 0.99" in out and "'typical': True}" in out
    assert re.search(r"\[5\.0, 3\.4, 4\.5, 0\.2\] -> \{'class': '\w+', .*'typical': False\}", out), out
    url = f"http://127.0.0.1:{port}/pipeline"
    assert re.search(rf"POST {url} .*\"35mm\".* -> 200 {{'class': 'setosa', .*'typical': True}}", out), out
    assert f"POST {url} {{\"features\": [6.7, \"3 ft\", 5.2, 2.3]}} -> 400 {{'error': \"a measurement is" in out
    assert f"POST {url} {{\"features\": [1, 2]}} -> 400 {{'error': 'features must be 4 finite numbers" in out
