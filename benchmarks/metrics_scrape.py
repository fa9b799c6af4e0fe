"""The node metrics endpoint's scrape time, and what the runtime's counting costs a call.

Run it with `python benchmarks/metrics_scrape.py` (`--actors N`, `--scrapes N`).

1. Scrape: an embedded cluster with N actors (default 17: with the head, the agent and
   this driver, 20 processes), each with a counter of its own in its registry; the node's
   endpoint is scraped `--scrapes` times in a row (each scrape pulls every process's
   families over the runtime and merges them). Prints median / p90 / max and the size.
   Target: a 20-process scrape well under a second.
2. Counting: the statements the runtime's metrics add to one call's round trip when
   nothing is batched (the worst case: the caller counts the call and the bytes of its
   send and of the reply it receives; the callee counts the call and the bytes of the
   request it receives and of its reply), timed in this process against an empty
   function. Target: well under 1 us per call.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
import timeit
import urllib.request

import actors
from actors._metrics_runtime import COUNTERS
from actors.system import local_cluster, metrics_registry, sample_value


@actors.remote
class Metered:
    def __init__(self, i: int) -> None:
        from prometheus_client import Counter

        self.c = Counter(f"bench_counter_{i}", "a counter of this actor", ["kind"], registry=metrics_registry())
        self.c.labels("x").inc()

    def pid(self) -> int:
        return os.getpid()


def scrape_times(n_actors: int, n_scrapes: int) -> dict[str, float]:
    actors.init()
    try:
        lc = local_cluster()
        assert lc is not None and lc.metrics_url, "the embedded cluster serves no metrics ($ZEROSERVE_METRICS_PORT=0?)"
        many = [Metered.remote(i) for i in range(n_actors)]
        pids = actors.get([m.pid.remote() for m in many])
        deadline = time.monotonic() + 60
        while True:
            with urllib.request.urlopen(lc.metrics_url, timeout=10) as r:
                text = r.read().decode()
            if all(f'pid="{p}"' in text for p in pids) or time.monotonic() > deadline:
                break
        times = []
        for _ in range(n_scrapes):
            t0 = time.perf_counter()
            with urllib.request.urlopen(lc.metrics_url, timeout=10) as r:
                text = r.read().decode()
            times.append(time.perf_counter() - t0)
        times.sort()
        return {"processes": sample_value(text, "actors_scrape_processes", result="answered"),
                "skipped": sample_value(text, "actors_scrape_processes", result="skipped"),
                "median_ms": statistics.median(times) * 1e3, "p90_ms": times[int(len(times) * 0.9)] * 1e3,
                "max_ms": times[-1] * 1e3, "bytes": len(text)}
    finally:
        actors.shutdown()


_HEADER, _INLINE = b"h" * 20, b"p" * 40  # a small call's two frames


def _one_round_trip_counted(name: bytes = b"a", n1: int = 20, n2: int = 40) -> None:
    """The statements the metrics added to one unbatched call, as they are in the code
    (the frame lengths `_send` uses were computed before metrics too)."""
    c = COUNTERS
    c.actor_calls_sent += 1  # ActorDirectory.submit
    sent = 0  # Transport._send of the request
    sent += n1
    sent += n2
    c.bytes_sent += sent
    received = len(_HEADER) + len(_INLINE)  # _recv_batch of the request, in the callee
    c.bytes_received += received
    if name == b"a":  # Runtime._on_request
        c.actor_calls_received += 1
    else:
        c.system_calls_received += 1
    sent = 0  # Transport._send of the reply
    sent += n1
    sent += n2
    c.bytes_sent += sent
    received = len(_HEADER) + len(_INLINE)  # _recv_batch of the reply, in the caller
    c.bytes_received += received


def _one_round_trip_bare(name: bytes = b"a", n1: int = 20, n2: int = 40) -> None:
    c = COUNTERS  # noqa: F841


def counting_cost_ns(number: int = 1_000_000, repeat: int = 9) -> dict[str, float]:
    counted = min(timeit.repeat(_one_round_trip_counted, number=number, repeat=repeat)) / number
    bare = min(timeit.repeat(_one_round_trip_bare, number=number, repeat=repeat)) / number
    return {"counted_ns": counted * 1e9, "bare_ns": bare * 1e9, "added_ns": (counted - bare) * 1e9}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--actors", type=int, default=17, help="actors besides head, agent and driver (default 17)")
    ap.add_argument("--scrapes", type=int, default=20, help="scrapes timed (default 20)")
    args = ap.parse_args()
    os.environ.setdefault("ZEROSERVE_QUIET", "1")
    cost = counting_cost_ns()
    print(f"counting per call round trip (worst case, nothing batched): {cost['added_ns']:.0f} ns "
          f"({cost['counted_ns']:.0f} ns with it, {cost['bare_ns']:.0f} ns without); target < 1000 ns: "
          f"{'PASS' if cost['added_ns'] < 1000 else 'MISS'}")
    fig = scrape_times(args.actors, args.scrapes)
    print(f"scrape of {fig['processes']:.0f} processes ({fig['skipped']:.0f} skipped, {fig['bytes'] / 1024:.0f} KiB): "
          f"median {fig['median_ms']:.1f} ms, p90 {fig['p90_ms']:.1f} ms, max {fig['max_ms']:.1f} ms; "
          f"target well under 1 s: {'PASS' if fig['median_ms'] < 250 else 'MISS'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
