"""Roll-out progress with reasons, seen by a driver: `serve.run` prints each deployment's
progress at least every few seconds while it waits (a slow constructor: "constructor running
for N s"; busy resources: "waiting for resources {...} on any node"), and the deploy deadline
(`timeout_s=`) ends the wait with an error naming the deployment and why."""

from __future__ import annotations

import itertools
import time

import pytest

from ..conftest import lines_of, read_json_line, start_driver

pytestmark = [pytest.mark.timeout(180)]

_DRIVER = """
    import json, time, actors, serve

    @serve.deployment
    class Slow:
        def __init__(self):
            time.sleep(9)  # the slow constructor under test

        def __call__(self):
            return "ok"

    @serve.deployment(actor_options={"resources": {"widget": 1}})
    class Needy:
        def __call__(self):
            return "ok"

    @actors.remote(resources={"widget": 1})
    class Blocker:
        def ping(self):
            return 1

    actors.init(num_cpus=4, resources={"widget": 1})
    serve.start(http_options={"location": "NoServer"})
    serve.run(Slow.bind(), name="slow", route_prefix=None)
    print(json.dumps({"slow": "ready"}), flush=True)
    blocker = Blocker.remote()
    actors.get(blocker.ping.remote())
    try:
        serve.run(Needy.bind(), name="needy", route_prefix=None, timeout_s=4)
        print(json.dumps({"error": None}), flush=True)
    except serve.DeployTimeoutError as e:
        print(json.dumps({"error": str(e)}), flush=True)
    actors.kill(blocker)
    serve.run(Needy.bind(), name="needy", route_prefix=None)
    print(json.dumps({"needy": "ready"}), flush=True)
    serve.shutdown()
"""


def test_progress_lines_say_why_and_the_deadline_error_names_the_deployment() -> None:
    driver = start_driver(_DRIVER, ZEROSERVE_QUIET="0")
    stderr = lines_of(driver, "stderr")
    arrivals: list[tuple[float, str]] = []

    def read_progress_until(word: str, timeout: float = 90.0) -> None:
        deadline = time.monotonic() + timeout
        while not any(word in line for _, line in arrivals):
            line = stderr.next(deadline)
            if line is None:
                pytest.fail(f"no {word!r} in the driver's progress:\n" + "".join(line for _, line in arrivals))
            arrivals.append((time.monotonic(), line))

    try:
        read_progress_until("Slow 1/1 running (HEALTHY)")
        assert read_json_line(driver) == {"slow": "ready"}
        slow = [(t, line) for t, line in arrivals if "serve: Slow " in line]
        constructing = [line for _, line in slow if "constructor running for" in line]
        assert len(constructing) >= 2, "".join(line for _, line in slow)
        assert any(" 0/1 running (UPDATING): slow#Slow#" in line for line in constructing)
        gaps = [b - a for (a, _), (b, _) in itertools.pairwise(slow)]
        assert max(gaps) < 6.5, (gaps, [line for _, line in slow])  # at least every ~4 s while it waits

        error = read_json_line(driver)["error"]
        assert error is not None and "not ready after 4 s" in error
        assert "Needy 0/1 running (UPDATING): needy#Needy#" in error
        assert "waiting for resources {widget: 1} on any node" in error
        read_progress_until("Needy 1/1 running (HEALTHY)")
        assert any("waiting for resources {widget: 1} on any node" in line for _, line in arrivals)
        assert read_json_line(driver) == {"needy": "ready"}
        assert driver.wait(60) == 0
    finally:
        if driver.poll() is None:
            driver.kill()
            driver.wait()
