"""Cold start over HTTP: a deployment scaled to zero (autoscaling min_replicas=0) gets a
request; how long until it is answered (the controller starts a replica meanwhile), against a
request to the same deployment once warm.

Each round: wait until the deployment has no replica, send one GET and time it (cold), then
time a few GETs while the replica runs (warm). Prints each round and the median; `--json`
writes them. Runs in an embedded cluster.

    python benchmarks/scale_to_zero.py [--rounds 5] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
os.environ.setdefault("ZEROSERVE_QUIET", "1")

import httpx
from _common import free_port

import actors
import serve


@actors.remote
class Replicas:
    """Counts the replicas started and stopped (told by the replicas themselves)."""

    def __init__(self) -> None:
        self.started = 0
        self.stopped = 0

    def up(self) -> None:
        self.started += 1

    def down(self) -> None:
        self.stopped += 1

    def running(self) -> int:
        return self.started - self.stopped


@serve.deployment(
    autoscaling_config={"min_replicas": 0, "max_replicas": 1, "target_ongoing_requests": 1,
                        "metrics_interval_s": 0.2, "look_back_period_s": 1.0, "downscale_delay_s": 1.0},
    graceful_shutdown_wait_loop_s=0.0,
)
class Noop:
    def __init__(self, counter) -> None:
        self.counter = counter
        counter.up.remote()

    def __call__(self) -> str:
        return "ok"

    def __del__(self) -> None:
        self.counter.down.remote()


def wait_for(cond, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out waiting for {what}")
        time.sleep(0.05)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--warm", type=int, default=20, help="warm requests timed per round")
    parser.add_argument("--json", help="write the results here")
    args = parser.parse_args()

    port = free_port()
    actors.init(num_cpus=4)
    try:
        serve.start(http_options={"port": port})
        counter = Replicas.remote()
        serve.run(Noop.bind(counter), name="cold", route_prefix="/cold")
        cold_ms: list[float] = []
        warm_ms: list[float] = []
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=120) as client:
            wait_for(lambda: "/cold" in client.get("/-/routes").json(), 30, "the route")
            for i in range(args.rounds):
                wait_for(lambda: actors.get(counter.running.remote()) == 0, 120, "no replica running")
                t0 = time.perf_counter()
                r = client.get("/cold")
                cold = (time.perf_counter() - t0) * 1000
                assert r.status_code == 200, r.text
                warm = []
                for _ in range(args.warm):
                    t0 = time.perf_counter()
                    client.get("/cold").raise_for_status()
                    warm.append((time.perf_counter() - t0) * 1000)
                cold_ms.append(cold)
                warm_ms.append(statistics.median(warm))
                print(f"round {i + 1}: cold {cold:.0f} ms, warm p50 {warm_ms[-1]:.2f} ms", flush=True)
        result = {"cold_start_ms_median": statistics.median(cold_ms), "cold_start_ms": cold_ms,
                  "warm_ms_median": statistics.median(warm_ms), "rounds": args.rounds}
        print(f"cold start (request to a deployment at zero replicas, answered): median "
              f"{result['cold_start_ms_median']:.0f} ms (min {min(cold_ms):.0f}, max {max(cold_ms):.0f}); "
              f"warm p50 {result['warm_ms_median']:.2f} ms")
        if args.json:
            with open(args.json, "w") as f:
                json.dump(result, f, indent=2)
    finally:
        serve.shutdown()
        actors.shutdown()


if __name__ == "__main__":
    main()
