"""Worker output: a file per actor under the session directory, echoed to the driver
with the actor's class and pid as prefix; `zeroserve logs` against the embedded cluster
of a `serve.run` driver on this machine."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

from ..conftest import ROOT, driver_env, lines_of, read_json_line, read_until, start_driver, wait_until, zeroserve

ZEROSERVE = [sys.executable, "-c", "import sys; from cluster.cli import main; sys.exit(main())"]

_DRIVER = """
    import json, os, sys, actors
    from actors.system import local_cluster

    actors.init()

    @actors.remote
    class Printer:
        def speak(self, text):
            print("out:", text)
            print("err:", text, file=sys.stderr)
            return os.getpid()

    p = Printer.remote()
    pid = actors.get(p.speak.remote("hello from the worker"))
    print(json.dumps({"pid": pid, "session": str(local_cluster().session.path)}), flush=True)
    sys.stdin.readline()
"""


def test_worker_output_goes_to_a_file_and_is_echoed_with_class_and_pid() -> None:
    driver = start_driver(_DRIVER)
    try:
        info = read_json_line(driver)
        prefix = f"(Printer pid={info['pid']})"
        out = read_until(driver, "out: hello", timeout=15)  # the echo may come before the JSON line
        assert f"{prefix} out: hello from the worker" in out
        assert f"{prefix} err: hello from the worker" in read_until(driver, "err: hello", "stderr", timeout=15)
        logs = Path(info["session"]) / "logs"
        out_files = list(logs.glob("Printer-*.out"))
        err_files = list(logs.glob("Printer-*.err"))
        assert len(out_files) == 1 and len(err_files) == 1
        assert "out: hello from the worker" in out_files[0].read_text()
        assert "err: hello from the worker" in err_files[0].read_text()
        assert (logs / "head.log").exists() and list(logs.glob("agent-*.log"))
    finally:
        driver.kill()
        driver.wait()


_SERVE_DRIVER = """
    import json, logging, sys, actors, serve

    @serve.deployment
    class Talker:
        def say(self, text):
            logging.getLogger("talker").warning("talker says %s", text)
            return text

    actors.init()
    serve.start(http_options={"location": "NoServer"})
    handle = serve.run(Talker.bind(), name="talk", route_prefix=None)
    handle.say.remote("first-line-7f3a").result(timeout_s=30)
    print(json.dumps({"ready": True}), flush=True)
    for line in sys.stdin:  # each line: one more thing to say; EOF: done
        handle.say.remote(line.strip()).result(timeout_s=30)
    serve.shutdown()
    actors.shutdown()
"""


def test_zeroserve_logs_reads_and_follows_an_embedded_clusters_files() -> None:
    """`zeroserve logs` against the embedded cluster of a `serve.run` driver on this machine
    (no `zeroserve start`): it finds the cluster, lists, prints and follows its files."""
    driver = start_driver(_SERVE_DRIVER)
    follow = None
    try:
        assert read_json_line(driver) == {"ready": True}
        listed = zeroserve("logs").stdout
        assert "head.log" in listed and "replica_talk_Talker_" in listed
        shown = wait_until(lambda: (out := zeroserve("logs", "Talker").stdout) and "talker says first-line-7f3a" in out
                           and out, 15, "the replica's line in `zeroserve logs Talker`")
        assert "replica_talk_Talker_" in shown
        assert zeroserve("logs", "head").stdout.strip()
        follow = subprocess.Popen([*ZEROSERVE, "logs", "talk", "-f", "--tail", "0"], env=driver_env(),
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=str(ROOT))
        said = []

        def followed() -> bool:  # said again until the follower (which starts at the end) has caught one
            said.append(f"followed-line-{len(said)}")
            driver.stdin.write(said[-1] + "\n")
            driver.stdin.flush()
            lines, deadline = lines_of(follow), time.monotonic() + 1.0
            while lines.next(deadline) is not None:
                pass
            return any(f"talker says {s}" in line for s in said for line in lines.seen)

        wait_until(followed, 30, "a new line followed by `zeroserve logs talk -f`", interval=0.2)
    finally:
        if follow is not None:
            follow.kill()
            follow.wait()
        driver.stdin.close()
        try:
            driver.wait(60)
        finally:
            driver.kill()
