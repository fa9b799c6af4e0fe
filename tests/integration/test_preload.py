"""The fork server imports the modules of `$ZEROSERVE_PRELOAD` (default: the serving layer)
while idle, and the workers it forks afterwards inherit them instead of importing them.

Each driver starts its own embedded cluster (the fork server reads the variable when it
starts) and starts actors until one was forked after the preload: the fork server imports
while it has nothing else to do, so the first actors may come before it.
"""

from __future__ import annotations

import json
from pathlib import Path

from tests.conftest import read_json_line, start_driver

MARKER = "tests.integration._preload_marker"

_DRIVER = """
    import json, os, sys, time, actors

    info = actors.init(num_cpus=2)

    @actors.remote
    class Probe:
        def modules(self):
            marker = sys.modules.get(%(marker)r)
            return {"marker_imported_by": marker.IMPORTED_BY if marker else None, "parent": os.getppid(),
                    "serve": "serve" in sys.modules}

    deadline = time.monotonic() + 60
    while True:
        probe = Probe.remote()
        seen = actors.get(probe.modules.remote())
        actors.kill(probe)
        if seen[%(wait_for)r] or time.monotonic() > deadline:
            break
    print(json.dumps(dict(seen, session_dir=info["session_dir"])), flush=True)
    actors.shutdown()
"""


def _run(wait_for: str, **env: str) -> dict:
    driver = start_driver(_DRIVER % {"marker": MARKER, "wait_for": wait_for}, **env)
    try:
        seen = read_json_line(driver, timeout=90)
        assert driver.wait(timeout=60) == 0, driver.stderr.read() if driver.stderr else ""
        return seen
    finally:
        driver.kill()
        driver.wait()


def test_workers_inherit_the_preloaded_modules_and_a_bad_name_is_reported_and_skipped() -> None:
    seen = _run("marker_imported_by", ZEROSERVE_PRELOAD=f"no_such_module_zs, {MARKER}")
    # imported once, by the fork server (the worker's parent), not by the worker
    assert seen["marker_imported_by"] == seen["parent"], seen
    assert not seen["serve"], "an explicit list replaces the default"
    logs = "".join(p.read_text() for p in Path(seen["session_dir"], "logs").glob("zygote-*.log"))
    assert "could not preload 'no_such_module_zs'" in logs and "ModuleNotFoundError" in logs, logs


def test_the_serving_layer_is_preloaded_by_default() -> None:
    seen = _run("serve")
    assert seen["serve"] and seen["marker_imported_by"] is None, json.dumps(seen)
