"""Handle calls to a no-op deployment, against the runtime's own actor calls in the same run.

Measures, on an embedded cluster:
- sequential calls from a sync driver (`handle.remote(x).result()`), 1 replica;
- 1,000 concurrent calls from an async driver (asyncio.gather), 1 and 4 replicas;
- the same 1,000-in-flight load issued from inside a deployment (model composition:
  the caller runs on the runtime's own loop, no thread hop);
- baseline: a no-op actor method called the same ways.
Targets (DESIGN.md §5): >= 3,000 sequential calls/s; >= 20,000 calls/s with 1,000 in flight.

    python benchmarks/handle_calls.py [--quick] [--json PATH]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.environ.setdefault("ZEROSERVE_QUIET", "1")

import actors
import serve

SEQ_TARGET, PAR_TARGET = 3_000, 20_000


@serve.deployment(max_ongoing_requests=1000)
class Noop:
    async def __call__(self, x: int) -> int:
        return x


@serve.deployment
class Fanout:
    def __init__(self, target: serve.DeploymentHandle) -> None:
        self.target = target

    async def run(self, total: int, window: int) -> float:
        t0 = time.perf_counter()
        for start in range(0, total, window):
            await asyncio.gather(*[self.target.remote(i) for i in range(start, min(start + window, total))])
        return total / (time.perf_counter() - t0)


@actors.remote
class NoopActor:
    async def noop(self, x: int) -> int:
        return x


def seq_rate(call, n: int) -> float:
    for _ in range(min(200, n)):
        call()
    t0 = time.perf_counter()
    for _ in range(n):
        call()
    return n / (time.perf_counter() - t0)


def par_rate(make, total: int, window: int = 1000) -> float:
    async def main() -> float:
        await asyncio.gather(*[make() for _ in range(min(window, 200))])
        t0 = time.perf_counter()
        for start in range(0, total, window):
            await asyncio.gather(*[make() for _ in range(min(window, total - start))])
        return total / (time.perf_counter() - t0)

    return asyncio.run(main())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer calls (a smoke run)")
    parser.add_argument("--json", help="write the figures here")
    args = parser.parse_args()
    n_seq, n_par = (300, 3000) if args.quick else (3000, 20000)
    actors.init()
    rows: list[tuple[str, float, float | None]] = []
    try:
        base = NoopActor.remote()
        actors.get(base.noop.remote(0))
        rows.append(("actor call, sync driver, sequential", seq_rate(lambda: actors.get(base.noop.remote(1)), n_seq), None))
        rows.append(("actor call, async driver, 1,000 in flight", par_rate(lambda: base.noop.remote(1), n_par), None))
        serve.start(http_options={"location": "NoServer"})  # handles only
        one = serve.run(Noop.bind(), name="one", route_prefix=None)
        rows.append(("handle, sync driver, sequential, 1 replica", seq_rate(lambda: one.remote(1).result(), n_seq),
                     SEQ_TARGET))
        rows.append(("handle, async driver, 1,000 in flight, 1 replica", par_rate(lambda: one.remote(1), n_par),
                     PAR_TARGET))
        four = serve.run(Noop.options(name="Noop4", num_replicas=4).bind(), name="four", route_prefix=None)
        rows.append(("handle, async driver, 1,000 in flight, 4 replicas", par_rate(lambda: four.remote(1), n_par),
                     PAR_TARGET))
        fan = serve.run(Fanout.bind(Noop.options(name="NoopInner").bind()), name="fan", route_prefix=None)
        fan.run.remote(1000, 1000).result()
        rows.append(("handle, inside a deployment, 1,000 in flight", fan.run.remote(n_par, 1000).result(), PAR_TARGET))
    finally:
        serve.shutdown()
        actors.shutdown()
    print(f"\n{'measurement':<52} {'calls/s':>10}  {'target':>8}  verdict")
    for label, rate, target in rows:
        verdict = "" if target is None else ("PASS" if rate >= target else "MISS")
        print(f"{label:<52} {rate:>10,.0f}  {target or '':>8}  {verdict}")
    base_seq, base_par = rows[0][1], rows[1][1]
    print(f"\nhandle / actor-call ratio: sequential {rows[2][1] / base_seq:.2f}, 1,000 in flight {rows[3][1] / base_par:.2f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump([{"measurement": r[0], "calls_per_s": round(r[1]), "target": r[2]} for r in rows], f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
