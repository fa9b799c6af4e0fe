"""The examples run as users run them (`make run` runs examples/serve_app.py)."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import urllib.error
import urllib.request

import pytest

from ..conftest import ROOT, RUN_DIR, driver_env, free_port, wait_until
from .test_serve_cli import _env, _read_until, _serve_run, _stops_cleanly

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


def test_the_main_job_stops_cleanly_on_ctrl_c() -> None:
    """`make run` in a terminal: Ctrl-C reaches the whole process group, the embedded
    cluster's processes too, so the example's serve.shutdown() finds the cluster gone."""
    tmpdir = os.path.join(RUN_DIR, "serve-app-ctrl-c")
    port = free_port()
    proc = subprocess.Popen([sys.executable, "examples/serve_app.py", "--port", str(port)], cwd=str(ROOT),
                            env=_env(tmpdir), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        _read_until(proc, "Ctrl-C to stop")
    finally:
        if proc.poll() is None:
            _stops_cleanly(proc, signal.SIGINT, tmpdir, port)  # exit 0: no traceback


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


def test_gpu_model_example_places_replicas_on_devices() -> None:
    """Four replicas at half a GPU on a local cluster pretending 2 devices: two per
    device, each seeing its own in CUDA_VISIBLE_DEVICES; the model runs on the CPU here."""
    port = free_port()
    out = _run("examples/gpu_model.py", "--once", "--num-gpus", "2", "--port", str(port))
    assert "cluster GPUs: 2; each replica asks for 0.5 of one" in out, out
    seen = re.findall(r"gpu_ids=\[(\d)\] CUDA_VISIBLE_DEVICES=(\d) device=(cpu|cpu \(numpy\)|cuda:0) "
                      r"training accuracy (\d\.\d+)", out)
    assert sorted((ids, env) for ids, env, _, _ in seen) == [("0", "0"), ("0", "0"), ("1", "1"), ("1", "1")], out
    assert all(float(acc) >= 0.9 for *_, acc in seen), out
    assert float(re.search(r"all 150 rows through the handle: accuracy (\d\.\d+)", out)[1]) >= 0.9, out
    assert f"POST http://127.0.0.1:{port}/iris-gpu {{\"features\": [6.7, 3.0, 5.2, 2.3]}} -> 200 " \
           "{'class': 'virginica'" in out, out


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


def test_fastapi_app_example() -> None:
    port = free_port()
    out = _run("examples/fastapi_app.py", "--once", "--port", str(port))
    base = f"http://127.0.0.1:{port}/tools"
    assert f"GET {base} -> 200 {{'service': 'zeroserve tools'" in out, out
    assert (f"GET {base}/convert/length/26.2?from_unit=mi&to_unit=km&digits=3 -> 200 {{'quantity': 'length', "
            "'value': 26.2, 'from_unit': 'mi', 'to_unit': 'km', 'result': 42.165}") in out, out
    assert "from_unit=F&to_unit=C&digits=2 -> 200 {'quantity': 'temperature', 'value': 98.6" in out
    assert "'result': 37.0}" in out
    assert "to_unit=K -> 400 {'detail': '-500.0 C is below absolute zero'}" in out
    assert "to_unit=parsec -> 400 {'detail': \"unknown length unit 'parsec'; use one of" in out
    assert "/convert/volume/1?from_unit=l&to_unit=ml -> 422 [(['path', 'quantity']" in out
    assert ("-> 200 {'label': 'latencies', 'count': 4, 'mean': 5.0, 'median': 3.75, 'stdev': 3.44, 'min': 2.5, "
            "'max': 10.0}") in out
    assert "{\"values\": []} -> 422 [(['body', 'values'], 'List should have at least 1 item" in out
    assert (f"GET {base}/docs -> 200 (Swagger UI; its schema at /tools/openapi.json lists /, "
            "/convert/{quantity}/{value}, /stats)") in out
    assert f"curl '{base}/convert/length/26.2?from_unit=mi&to_unit=km'" in out


def test_pipeline_graph_under_zeroserve_serve_run() -> None:
    """The graph as an import path for `zeroserve serve run`, queried over HTTP, then Ctrl-C."""
    tmpdir = os.path.join(RUN_DIR, "serve-run-pipeline")
    port = free_port()
    proc = _serve_run(tmpdir, "examples.pipeline:app", "--port", str(port))
    try:
        out = _read_until(proc, "Ctrl-C to stop")
        assert f"application 'default' is serving at http://127.0.0.1:{port}/pipeline" in out, out

        def answer() -> dict | None:
            req = urllib.request.Request(f"http://127.0.0.1:{port}/pipeline", data=b'{"features": [6.7, 3.0, 5.2, 2.3]}')
            try:
                with urllib.request.urlopen(req, timeout=10) as r:
                    return json.loads(r.read())
            except urllib.error.HTTPError as e:
                if e.code == 404:  # the proxy does not route it yet
                    return None
                raise

        assert wait_until(answer, timeout=20, what="the pipeline over HTTP")["class"] == "virginica"
    finally:
        if proc.poll() is None:
            _stops_cleanly(proc, signal.SIGINT, tmpdir, port)
