"""Worker output: a file per actor under the session directory, echoed to the driver
with the actor's class and pid as prefix."""

from __future__ import annotations

from pathlib import Path

from ..conftest import read_json_line, read_until, start_driver

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
