"""Model multiplexing: model-aware routing against a plain random router, one run.

20 models over 4 replicas holding 6 each (`@serve.multiplexed(max_num_models_per_replica=6)`),
loads that take 50 ms (an `asyncio.sleep`: what matters is the wait, not CPU). Callers keep
`--concurrency` requests in flight (closed loop) through handles from an async driver, each
for a model drawn uniformly at random. After `--warmup` seconds, for `--seconds`: the fraction
of requests that triggered a load (loads counted by the replicas' own
`serve_multiplexed_model_load_total`, read from the node's metrics endpoint, over requests
answered) and requests/s. First with the model ids ignored by the router (power of two
choices by load alone: a replica is a random one as far as models go), then model-aware, each
on a fresh application.

    python benchmarks/multiplexing.py [--seconds 10] [--warmup 3] [--concurrency 16] [--json PATH]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import sys
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path[:0] = [ROOT]
os.environ.setdefault("ZEROSERVE_QUIET", "1")

import actors  # noqa: E402
import serve  # noqa: E402
from serve._data import model_routing  # noqa: E402  (internal: the baseline switch)

MODELS, REPLICAS, SLOTS, LOAD_S = 20, 4, 6, 0.05


@serve.deployment(num_replicas=REPLICAS, actor_options={"num_cpus": 0.25})
class Multiplexed:
    @serve.multiplexed(max_num_models_per_replica=SLOTS)
    async def get_model(self, model_id: str) -> str:
        await asyncio.sleep(LOAD_S)
        return model_id

    async def __call__(self) -> str:
        return await self.get_model(serve.get_multiplexed_model_id())


def loads_of(app: str) -> float:
    """serve_multiplexed_model_load_total of `app`'s replicas, summed over the nodes."""
    total = 0.0
    for node in actors.nodes():
        if not node.get("alive") or not node.get("metrics_url"):
            continue
        with urllib.request.urlopen(node["metrics_url"], timeout=10) as r:
            for line in r.read().decode().splitlines():
                if line.startswith("serve_multiplexed_model_load_total{") and f'application="{app}"' in line:
                    total += float(line.rsplit(" ", 1)[1])
    return total


async def closed_loop(handles: list, concurrency: int, seconds: float, seed: int) -> int:
    """Requests answered in `seconds` with `concurrency` callers, each asking for a random model."""
    loop = asyncio.get_running_loop()
    rng = random.Random(seed)
    until = loop.time() + seconds
    count = 0

    async def caller() -> None:
        nonlocal count
        while loop.time() < until:
            i = rng.randrange(MODELS)
            assert await handles[i].remote() == f"model-{i}"
            count += 1

    await asyncio.gather(*(caller() for _ in range(concurrency)))
    return count


def measure(app: str, aware: bool, args: argparse.Namespace) -> dict:
    model_routing.ENABLED = aware  # read by the driver's router of this application when it is made
    handle = serve.run(Multiplexed.bind(), name=app, route_prefix=None)
    handles = [handle.options(multiplexed_model_id=f"model-{i}") for i in range(MODELS)]
    asyncio.run(closed_loop(handles, args.concurrency, args.warmup, 1))
    before = loads_of(app)
    t0 = time.perf_counter()
    n = asyncio.run(closed_loop(handles, args.concurrency, args.seconds, 2))
    elapsed = time.perf_counter() - t0
    loads = loads_of(app) - before
    serve.delete(app)
    return {"requests": n, "loads": loads, "load_fraction": loads / max(1, n), "rps": n / elapsed}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seconds", type=float, default=10.0)
    p.add_argument("--warmup", type=float, default=3.0)
    p.add_argument("--concurrency", type=int, default=16)
    p.add_argument("--json", default=None)
    args = p.parse_args()
    actors.init(num_cpus=4)
    serve.start(http_options={"location": "NoServer"})
    try:
        results = {"random": measure("mux_random", False, args), "model_aware": measure("mux_aware", True, args)}
    finally:
        serve.shutdown()
        actors.shutdown()
    print(f"multiplexing: {MODELS} models over {REPLICAS} replicas x {SLOTS} slots, {LOAD_S * 1000:.0f} ms loads, "
          f"{args.concurrency} callers, {args.seconds:g} s after {args.warmup:g} s warm-up")
    for name, r in results.items():
        print(f"  {name:12s} {r['requests']:7d} requests  {r['loads']:6.0f} loads  "
              f"load fraction {r['load_fraction']:.3f}  {r['rps']:8.0f} req/s")
    base, aware = results["random"], results["model_aware"]
    print(f"  model-aware / random: {aware['rps'] / max(1e-9, base['rps']):.1f}x throughput, load fraction "
          f"{aware['load_fraction']:.3f} vs {base['load_fraction']:.3f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
