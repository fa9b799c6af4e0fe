"""Worker log files and output, from driver scripts run as users run them:
- files named by `log_name`, rotated by size within their bound ($ZEROSERVE_LOG_*);
- a traceback of code defined in a script run as `__main__` names the script's file and
  line, in an actor and in a Serve replica;
- replica output reaches the driver of `serve.run` and of `zeroserve serve run`, with the
  replica's prefix;
- the embedded cluster's metrics port: taken -> a free one, printed; 0 -> none.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import textwrap
import urllib.request
from pathlib import Path

import pytest

from ..conftest import RUN_DIR, driver_env, free_port, read_json_line, read_until, run_processes, wait_until

pytestmark = pytest.mark.timeout(180)


def _script(tmp_path: Path, name: str, code: str) -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(code))
    return path


def _run(path: Path, **env: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, str(path)], env=driver_env(**env), stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=str(path.parent))


def _text_now(path: Path) -> str:
    """The file's text, or "" while it does not exist: not written yet, or between a
    rotation's rename of it and its new file."""
    try:
        return path.read_text()
    except FileNotFoundError:
        return ""


def _finish(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.stdin.close()
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


_CHATTY = """
    import json, sys, actors
    from actors.system import local_cluster

    actors.init()

    @actors.remote
    class Chatty:
        def talk(self, lines):
            for i in range(lines):
                print(f"line {i:05d} " + "x" * 90, flush=True)
            print("the last line", flush=True)
            return True

    c = Chatty.options(log_name="chatty_one").remote()
    actors.get(c.talk.remote(1000))
    print(json.dumps({"logs": str(local_cluster().session.logs)}), flush=True)
    sys.stdin.readline()
"""


def test_worker_files_are_named_by_log_name_and_rotated_within_their_bound(tmp_path: Path) -> None:
    max_bytes, backups = 8192, 2
    proc = _run(_script(tmp_path, "chatty.py", _CHATTY), ZEROSERVE_LOG_MAX_BYTES=str(max_bytes),
                ZEROSERVE_LOG_BACKUPS=str(backups))
    try:
        logs = Path(read_json_line(proc)["logs"])
        current = logs / "chatty_one.out"
        wait_until(lambda: "the last line" in _text_now(current), timeout=15, what="the last line in the current file")
        files = sorted(logs.glob("chatty_one.out*"))
        assert [f.name for f in files] == ["chatty_one.out", "chatty_one.out.1", "chatty_one.out.2"]
        assert all(0 < f.stat().st_size <= max_bytes for f in files), [(f.name, f.stat().st_size) for f in files]
        for f in files:  # whole lines only
            assert all(re.fullmatch(r"line \d{5} x{90}|the last line", ln) for ln in f.read_text().splitlines())
        numbers = [int(ln.split()[1]) for f in reversed(files) for ln in f.read_text().splitlines()
                   if ln.startswith("line ")]
        assert numbers == sorted(numbers) and numbers[-1] == 999  # .2, .1, then the current file: in order
        assert (logs / "chatty_one.err").exists()
    finally:
        _finish(proc)


_MAIN_ERRORS = """
    import json, sys
    import actors, serve

    @actors.remote
    class Faulty:
        def fail(self):
            raise ValueError("actor failed here")  # line 8

    @serve.deployment
    class Broken:
        def __call__(self, x):
            raise KeyError("replica failed here")  # line 13

    actors.init()
    out = {}
    try:
        actors.get(Faulty.remote().fail.remote())
    except ValueError as e:
        out["actor"] = str(e)
    serve.start(http_options={"location": "NoServer"})
    handle = serve.run(Broken.bind())
    try:
        handle.remote(1).result()
    except KeyError as e:
        out["replica"] = str(e)
    print(json.dumps(out), flush=True)
    sys.stdin.readline()
"""


def test_tracebacks_of_main_code_name_the_scripts_file_and_line(tmp_path: Path) -> None:
    script = _script(tmp_path, "faulty_main.py", _MAIN_ERRORS)
    proc = _run(script)
    try:
        out = read_json_line(proc, timeout=90)
    finally:
        _finish(proc)
    assert f'File "{script}", line 8, in fail' in out["actor"], out["actor"]
    assert 'raise ValueError("actor failed here")' in out["actor"]
    assert f'File "{script}", line 13, in __call__' in out["replica"], out["replica"]
    assert "<dynamic-code>" not in out["actor"] + out["replica"]


_LOUD = """
    import json, sys
    import serve

    @serve.deployment
    class Loud:
        def __init__(self):
            print("loud replica constructed", flush=True)

        def __call__(self, word):
            print(f"loud replica says {word}", flush=True)
            print(f"loud replica warns {word}", file=sys.stderr, flush=True)
            return word

    serve.start(http_options={"location": "NoServer"})
    handle = serve.run(Loud.bind())
    print(json.dumps({"answer": handle.remote("hello").result()}), flush=True)
    sys.stdin.readline()
"""


def test_replica_output_reaches_the_serve_run_driver_with_its_prefix(tmp_path: Path) -> None:
    proc = _run(_script(tmp_path, "loud.py", _LOUD))
    try:
        assert read_json_line(proc, timeout=90) == {"answer": "hello"}
        out = read_until(proc, "says hello", timeout=30)
        prefix = re.search(r"\(replica_default_Loud_\w+ pid=\d+\)", out)
        assert prefix, out
        assert f"{prefix.group(0)} loud replica constructed" in out
        assert f"{prefix.group(0)} loud replica says hello" in out
        assert f"{prefix.group(0)} loud replica warns hello" in read_until(proc, "warns hello", "stderr", timeout=30)
    finally:
        _finish(proc)


_LOUD_APP = """
    import serve

    @serve.deployment
    class Loud:
        def __init__(self):
            print("loud app replica constructed", flush=True)

        def __call__(self, request):
            return "ok"

    app = Loud.bind()
"""


def test_replica_output_reaches_zeroserve_serve_run(tmp_path: Path) -> None:
    _script(tmp_path, "loudapp.py", _LOUD_APP)
    tmpdir = os.path.join(RUN_DIR, "serve-run-loud")
    env = driver_env(ZEROSERVE_TMPDIR=tmpdir)
    env["PYTHONPATH"] = os.pathsep.join([str(tmp_path), env["PYTHONPATH"]])
    proc = subprocess.Popen([sys.executable, "-c", "import sys; from cluster.cli import main; sys.exit(main())",
                             "serve", "run", "loudapp:app", "--port", str(free_port())], env=env, cwd=str(tmp_path),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        out = read_until(proc, "loud app replica constructed", timeout=90)
        assert re.search(r"\(replica_default_Loud_\w+ pid=\d+\) loud app replica constructed", out), out
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        wait_until(lambda: not run_processes(tmpdir), timeout=15, what="serve run's cluster to exit")


_METRICS_PORT = """
    import json, sys, actors
    from actors.system import local_cluster

    actors.init()
    print(json.dumps({"url": local_cluster().metrics_url}), flush=True)
    sys.stdin.readline()
"""


def test_embedded_metrics_port_taken_moves_and_zero_turns_it_off(tmp_path: Path) -> None:
    script = _script(tmp_path, "metrics_port.py", _METRICS_PORT)
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        taken = squatter.getsockname()[1]
        proc = _run(script, ZEROSERVE_METRICS_PORT=str(taken), ZEROSERVE_QUIET="0")
        try:
            url = read_json_line(proc)["url"]
            assert url.startswith("http://127.0.0.1:") and url != f"http://127.0.0.1:{taken}/metrics"
            assert f"metrics at {url}" in read_until(proc, "metrics at", "stderr")
            with urllib.request.urlopen(url, timeout=10) as r:
                assert b"actors_calls_total" in r.read()
        finally:
            _finish(proc)
    proc = _run(script, ZEROSERVE_METRICS_PORT="0")
    try:
        assert read_json_line(proc)["url"] == ""
    finally:
        _finish(proc)
    bad = _run(script, ZEROSERVE_METRICS_PORT="eighty")
    _, err = bad.communicate(timeout=60)
    assert bad.returncode != 0 and "$ZEROSERVE_METRICS_PORT must be a port number" in err
