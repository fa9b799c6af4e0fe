"""`@serve.batch` throughput: the example's Iris classifier with and without batching, one run.

Both deployments are examples/classifier.py's IrisClassifier — the same trained numpy
model and the same request handling; the unbatched one runs the model on each request's
single row instead of going through `@serve.batch`. For each concurrency level, callers
keep that many requests in flight (closed loop) through handles from an async driver, then
over HTTP with wrk (POST of a JSON flower), for unbatched and batched in turn, `--rounds`
times alternating (the machine is shared: a noisy moment hits both). Prints the median
requests/s of each, the mean batch size that formed and the batched / unbatched ratio.

    python benchmarks/batching.py [--seconds 3] [--rounds 3] [--concurrency 64,256] [--no-http] [--json PATH]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXAMPLES = os.path.join(ROOT, "examples")
sys.path[:0] = [ROOT, EXAMPLES]
# replicas import the example module too: the cluster's processes inherit this path
os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (ROOT, EXAMPLES, os.environ.get("PYTHONPATH")) if p)
os.environ.setdefault("ZEROSERVE_QUIET", "1")

from classifier import IrisClassifier, load_iris  # noqa: E402
from http_noop import ensure_wrk, free_port, routes, run_wrk, wait_http  # noqa: E402

import serve  # noqa: E402


class UnbatchedIrisClassifier(IrisClassifier.func_or_class):
    """The same deployment, without `@serve.batch`: the model runs on one row per request."""

    async def _classify(self, features: list[float]) -> dict:
        return self.predict([features])[0]


Unbatched = serve.deployment(UnbatchedIrisClassifier)
BODY = '{"features": [6.7, 3.0, 5.2, 2.3]}'


async def closed_loop(handle: serve.DeploymentHandle, rows: list[list[float]], concurrency: int,
                      seconds: float) -> float:
    """Requests/s with `concurrency` callers, each sending its next request when answered."""
    loop = asyncio.get_running_loop()
    count = 0

    async def caller(i: int, until: float) -> None:
        nonlocal count
        row = rows[i % len(rows)]
        while loop.time() < until:
            answer = await handle.remote(row)
            assert "class" in answer, answer
            count += 1

    await asyncio.gather(*(caller(i, loop.time() + min(1.0, seconds / 4)) for i in range(concurrency)))  # warm-up
    count = 0
    t0 = loop.time()
    await asyncio.gather(*(caller(i, t0 + seconds) for i in range(concurrency)))
    return count / (loop.time() - t0)


def measure(name: str, handle: serve.DeploymentHandle, via: str, c: int, port: int, wrk: str | None, rows: list,
            seconds: float) -> tuple[float, float, int]:
    """(requests/s, mean batch size, non-2xx responses) of one measurement."""
    before = handle.stats.remote().result()
    if via == "handle":
        rps, errors = asyncio.run(closed_loop(handle, rows, c, seconds)), 0
    else:
        assert wrk is not None
        figures = run_wrk(wrk, f"http://127.0.0.1:{port}/{name}", c, seconds, body=BODY, warmup=True)
        rps, errors = figures["rps"], figures["non_2xx"]
    after = handle.stats.remote().result()
    return rps, (after["items"] - before["items"]) / max(1, after["batches"] - before["batches"]), errors


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=3.0, help="per measurement")
    parser.add_argument("--concurrency", default="64,256", help="requests in flight, comma-separated")
    parser.add_argument("--rounds", type=int, default=3, help="alternating runs per figure; the median counts")
    parser.add_argument("--no-http", action="store_true", help="handles only (no wrk)")
    parser.add_argument("--json", help="write the figures here")
    args = parser.parse_args()
    levels = [int(c) for c in args.concurrency.split(",")]
    wrk = None if args.no_http else ensure_wrk()
    x, _, _ = load_iris()
    rows = x.tolist()
    port = free_port()
    serve.start(http_options={"port": port})
    results: list[dict] = []
    try:
        max_ongoing = max(levels)
        handles = {
            "unbatched": serve.run(Unbatched.options(name="unbatched", max_ongoing_requests=max_ongoing).bind(),
                                   name="unbatched", route_prefix="/unbatched"),
            "batched": serve.run(IrisClassifier.options(name="batched", max_ongoing_requests=max_ongoing).bind(),
                                 name="batched", route_prefix="/batched"),
        }
        wait_http(f"http://127.0.0.1:{port}/-/routes")
        deadline = time.monotonic() + 30
        while not {"/unbatched", "/batched"} <= set(routes(port)):  # the proxy learns the routes
            if time.monotonic() > deadline:
                raise SystemExit(f"the proxy has not learned both routes: {routes(port)}")
            time.sleep(0.1)
        for via in ("handle", "http"):
            if via == "http" and wrk is None:
                continue
            for c in levels:
                runs: dict[str, list[tuple[float, float, int]]] = {name: [] for name in handles}
                for _ in range(args.rounds):  # alternate, so a noisy moment hits both
                    for name, handle in handles.items():
                        runs[name].append(measure(name, handle, via, c, port, wrk, rows, args.seconds))
                for name, measured in runs.items():
                    rps, mean_batch, errors = sorted(measured)[len(measured) // 2]  # the median run
                    results.append({"via": via, "in_flight": c, "deployment": name, "rps": rps,
                                    "mean_batch": mean_batch, "non_2xx": errors,
                                    "all_rps": [round(m[0]) for m in measured]})
                    print(f"  {via:<6} {c:>4} in flight  {name:<9} {rps:>9,.0f} req/s (median of "
                          f"{', '.join(f'{m[0]:,.0f}' for m in measured)})  mean batch {mean_batch:5.1f}", flush=True)
    finally:
        serve.shutdown()
    print(f"\n{'via':<7}{'in flight':>10}  {'unbatched req/s':>16}  {'batched req/s':>14}  {'mean batch':>10}  ratio")
    for i in range(0, len(results), 2):
        plain, batched = results[i], results[i + 1]
        print(f"{plain['via']:<7}{plain['in_flight']:>10}  {plain['rps']:>16,.0f}  {batched['rps']:>14,.0f}  "
              f"{batched['mean_batch']:>10.1f}  {batched['rps'] / plain['rps']:.2f}x")
    if any(r["non_2xx"] for r in results):
        print("non-2xx responses: " + ", ".join(f"{r['via']} {r['in_flight']} {r['deployment']}: {r['non_2xx']}"
                                                for r in results if r["non_2xx"]))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
